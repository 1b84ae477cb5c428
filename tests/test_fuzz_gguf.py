"""Issue #6: fuzzing the GGUF loader for a bounded time, each fuzzer in its own subprocess.

- hypothesis (tests/fuzz/hypothesis_gguf.py): a fixed seed, a fixed number of mutated files (flips,
  field overwrites with edge values, insertions, deletions, truncations) of a valid small GGUF;
- atheris (tests/fuzz/atheris_gguf.py), if installed: coverage-guided mutations of the header for a
  fixed time (libFuzzer's -seed fixed too).

Each input must load (and then run) or raise ModelFileError; a crash, a hang or any other exception
fails the test with the fuzzer's output (the hypothesis script leaves the last mutation in last.json).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _gguf_corpus import make_bases

FUZZ = Path(__file__).with_name("fuzz")
HYPOTHESIS_EXAMPLES = 300
HYPOTHESIS_SEED = 0
ATHERIS_SECONDS = 20
ATHERIS_SEED = 1


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    return make_bases(tmp_path_factory.mktemp("fuzz_base"), names=("q4",))["q4"]


def _env() -> dict[str, str]:
    return dict(os.environ, GGML_NO_BACKTRACE="1")


def _report(proc: subprocess.CompletedProcess, extra: str = "") -> str:
    return f"exit {proc.returncode}\n{extra}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def test_hypothesis_fuzz_of_the_loader(base, tmp_path):
    work = tmp_path / "hypothesis"
    cmd = [sys.executable, str(FUZZ / "hypothesis_gguf.py"), base, str(work)]
    cmd += ["--examples", str(HYPOTHESIS_EXAMPLES), "--seed", str(HYPOTHESIS_SEED)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=FUZZ)
    last = (work / "last.json").read_text() if (work / "last.json").exists() else "?"
    assert proc.returncode == 0, _report(proc, f"last mutation: {last}")
    m = re.search(r"FUZZ hypothesis examples=(\d+) loaded=(\d+) rejected=(\d+)", proc.stdout)
    assert m, _report(proc)
    examples, loaded, rejected = map(int, m.groups())
    print(f"\nhypothesis: {examples} mutated files, {loaded} loaded and used, {rejected} rejected")
    assert examples >= HYPOTHESIS_EXAMPLES * 0.9
    assert loaded and rejected


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_fuzz_of_the_loader(base, tmp_path):
    work = tmp_path / "atheris"
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    cmd = [sys.executable, str(FUZZ / "atheris_gguf.py"), f"-max_total_time={ATHERIS_SECONDS}"]
    cmd += [f"-seed={ATHERIS_SEED}", "-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1"]
    cmd += [f"-artifact_prefix={work}/", str(corpus)]
    env = _env() | {"POCKET_FUZZ_BASE": base, "POCKET_FUZZ_WORK": str(work)}
    # libFuzzer's RSS limit reads the peak RSS, which Linux carries across exec from the process that spawned
    # it: a shell forks the fuzzer so that the peak is its own, not this test process's (GBs after torch)
    cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ATHERIS_SECONDS + 120, env=env, cwd=FUZZ)
    crashes = sorted(p.name for p in work.glob("crash-*")) + sorted(p.name for p in work.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, _report(proc, f"artifacts: {crashes}")
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    assert m, _report(proc)
    print(f"\natheris: {int(m.group(1))} inputs in {ATHERIS_SECONDS} s")
    assert int(m.group(1)) > 100
