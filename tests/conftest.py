"""Shared fixtures: the real tokenizer from ../shared, and synthetic models made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # a failed GGML_ASSERT must not start gdb

from _reference import shared_path  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_path() -> Path:
    return shared_path("assets", "tokenizer.model")


@pytest.fixture(scope="session")
def voice_wav() -> Path:
    return shared_path("assets", "voices", "speaker-48k.wav")


@pytest.fixture(scope="session", autouse=True)
def _parity_workdir(tmp_path_factory):
    """Where synthetic models and reference dumps are made, once per test run (its pytest-xdist workers
    share one folder), or kept across runs in POCKET_PARITY_DIR (scripts/check-aarch64.sh makes the dumps
    on x86 and reuses them on aarch64, where the reference is not installed)."""
    from _parity_runs import set_root

    kept = os.environ.get("POCKET_PARITY_DIR")
    if kept:
        root = Path(kept)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "parity"  # each worker's basetemp is in the run's
    else:
        root = tmp_path_factory.mktemp("parity")
    root.mkdir(parents=True, exist_ok=True)
    set_root(root)
