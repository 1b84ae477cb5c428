"""Access to the official pocket-tts 4.0.1 reference and to ../shared, for parity tests.

In CI (CI=true) a missing reference or ../shared is a failure, not a skip: `require_reference()`
and `shared_path()` call `pytest.fail` there and `pytest.skip` elsewhere.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(what: str):
    if IN_CI:
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} not available")


def shared_path(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        _missing(str(p))
    return p


def require_reference():
    """Import torch + pocket_tts (the reference), failing in CI when absent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import pocket_tts  # noqa: F401
        import torch
    except ImportError as e:
        _missing(f"the reference (torch==2.13.0, pocket-tts==4.0.1): {e}")
    ref_dir = shared_path("reference")
    if str(ref_dir) not in sys.path:
        sys.path.insert(0, str(ref_dir))
    return torch


def require_timestamped_reference():
    """Import pocket-tts-timestamped 1.4.0 (the word-timestamps fork), failing in CI when absent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import pocket_tts_timestamped  # noqa: F401
        import torch
    except ImportError as e:
        _missing(f"the timestamps reference (torch==2.13.0, pocket-tts-timestamped==1.4.0): {e}")
    return torch


@functools.lru_cache(maxsize=8)
def reference_model(config: str, seed: int = 1234):
    """A pocket-tts TTSModel of a released config with seeded random, non-degenerate weights
    (../shared/reference/make_random_weights.py), built offline with no weights file."""
    torch = require_reference()
    from make_random_weights import randomise  # ../shared/reference
    from run_reference import load_reference_model

    torch.manual_seed(seed)
    model = load_reference_model(None, shared_path("assets", "tokenizer.model"), config=config)
    randomise(model, seed + 1)
    model.eval()
    return model
