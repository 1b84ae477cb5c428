"""Issue #6: any file given as a model gives a valid model or a ModelFileError -- never another
exception, an abort or a segfault, a hang or a huge allocation.

The corpus (tests/_gguf_corpus.py, >= 200 deterministic cases: not a GGUF at all, wrong magic or
version, header counts, truncations, byte flips and splices in the header, metadata and tensor
infos, metadata pairs out of range or of the wrong type, missing/extra/misshaped/mistyped tensors,
overlapping data, stored voices, the tokenizer, corrupted weight bytes) runs in worker subprocesses,
many cases per worker. A worker that dies (signal or timeout) is restarted after the case it was on,
which is then run alone to attribute the death. Files that load are then used (FlowLM, Mimi decoder
and encoder graphs), where only a PocketError is acceptable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _gguf_corpus import build_cases, layout, make_bases

from pocket_ggml.runtime.model_file import MAX_MESSAGE, UNANTICIPATED

WORKER = Path(__file__).with_name("_gguf_corpus.py")
N_WORKERS = 2
CASE_SECONDS = 20  # a single case may take at most this long (a hang is a failure)
MAX_LOAD_SECONDS = 5.0  # ModelFile on a 3-13 MB file, however damaged (the slowest case takes ~1 s)


def _run_worker(bases_json: Path, cases: list[dict], workdir: Path, tag: str) -> tuple[dict[str, dict], str | None]:
    """Run `cases` in one worker; returns the results it printed and, if it died, how."""
    cases_json = workdir / f"cases-{tag}.json"
    cases_json.write_text(json.dumps(cases))
    env = dict(os.environ, GGML_NO_BACKTRACE="1", PYTHONFAULTHANDLER="0")
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(bases_json), str(cases_json), str(workdir / f"w-{tag}")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=WORKER.parent,
    )
    try:
        out, err = proc.communicate(timeout=15 + CASE_SECONDS * len(cases) / 4)
        death = None if proc.returncode == 0 else _describe(proc.returncode, err)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        death = "timeout"
    results = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            results[r.pop("id")] = r
    return results, death


def _describe(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"


def _run_chunk(bases_json: Path, cases: list[dict], workdir: Path, tag: str) -> dict[str, dict]:
    results: dict[str, dict] = {}
    pending = list(cases)
    round_ = 0
    while pending:
        got, death = _run_worker(bases_json, pending, workdir, f"{tag}-{round_}")
        results.update(got)
        pending = [c for c in pending if c["id"] not in results]
        if not pending:
            break
        # The worker died on pending[0] (or hung there): run it alone to attribute the death.
        first = pending.pop(0)
        solo, solo_death = _run_worker(bases_json, [first], workdir, f"{tag}-{round_}-solo")
        results[first["id"]] = solo.get(first["id"]) or {
            "outcome": "died",
            "message": f"alone: {solo_death}; in the batch: {death}",
        }
        round_ += 1
    return results


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bad_gguf")
    t0 = time.perf_counter()
    bases = make_bases(workdir)
    bases_json = workdir / "bases.json"
    bases_json.write_text(json.dumps(bases))
    cases = build_cases({name: layout(path) for name, path in bases.items()})
    chunks = [cases[i::N_WORKERS] for i in range(N_WORKERS)]
    with ThreadPoolExecutor(N_WORKERS) as pool:
        parts = pool.map(lambda ic: _run_chunk(bases_json, ic[1], workdir, str(ic[0])), enumerate(chunks))
        results = {k: v for part in parts for k, v in part.items()}
    seconds = time.perf_counter() - t0
    loaded = sum(r["outcome"] == "loaded" for r in results.values())
    print(f"\nbad-GGUF corpus: {len(cases)} cases, {loaded} loaded and used, {seconds:.1f} s")
    return cases, results


def _failures(cases, results, predicate) -> list[str]:
    bad = []
    for c in cases:
        r = results.get(c["id"], {"outcome": "no result"})
        problem = predicate(c, r)
        if problem:
            bad.append(f"{c['id']} ({c['op']} {json.dumps(c.get('args', {}))[:200]}): {problem}")
    return bad


def test_corpus_is_large_enough(corpus):
    cases, _ = corpus
    assert len(cases) >= 200
    assert len({c["id"] for c in cases}) == len(cases)
    groups = {c["id"].rsplit("-", 1)[0] for c in cases}
    for needed in ("not-gguf", "magic", "version", "truncate", "flip-header", "flip-meta", "flip-tinfo", "meta",
                   "kv-array-count", "tensor-missing", "tensor-extra", "tensor-shape", "tensor-type", "ti-overlap",
                   "ti-dup-name", "data-fill"):  # fmt: skip
        assert needed in groups, needed


def test_no_case_kills_the_process(corpus):
    cases, results = corpus
    bad = _failures(cases, results, lambda c, r: r.get("message") if r["outcome"] in ("died", "no result") else None)
    assert not bad, "\n".join(bad)


def test_every_case_loads_or_raises_model_file_error(corpus):
    cases, results = corpus

    def check(c, r):
        if r["outcome"] not in ("error", "loaded"):
            return f"{r['outcome']}: {r.get('message')}\n{r.get('trace', '')}"
        if r["outcome"] == "error" and UNANTICIPATED in r["message"]:
            return f"a ModelFileError only from the catch-all: {r['message']}"
        return None

    bad = _failures(cases, results, check)
    assert not bad, "\n".join(bad)


def test_outcomes_are_the_expected_ones(corpus):
    cases, results = corpus

    def check(c, r):
        want = {"error": {"error"}, "ok": {"loaded"}, "any": {"error", "loaded"}}[c["expect"]]
        if r["outcome"] not in want:
            return f"expected {c['expect']}, got {r['outcome']}: {r.get('message', '')}"
        return None

    bad = _failures(cases, results, check)
    assert not bad, "\n".join(bad)


def test_messages_are_one_clear_line(corpus):
    cases, results = corpus

    def check(c, r):
        if r["outcome"] != "error":
            return None
        msg = r["message"]
        if not msg.isprintable() or not msg.strip() or len(msg) > MAX_MESSAGE:
            return f"message not one short line: {msg!r}"
        return None

    bad = _failures(cases, results, check)
    assert not bad, "\n".join(bad)


def test_loading_is_fast_however_damaged(corpus):
    cases, results = corpus
    bad = _failures(
        cases,
        results,
        lambda c, r: f"took {r['seconds']:.2f} s" if r.get("seconds", 0) > MAX_LOAD_SECONDS else None,
    )
    assert not bad, "\n".join(bad)


def test_a_dying_worker_is_restarted_and_the_case_attributed(tmp_path):
    """The harness itself: a case that kills its worker (as a GGML_ASSERT abort or a segfault would)
    is reported with its signal, and the cases after it still run."""
    cases = [
        {"id": "a", "base": None, "op": "not_gguf", "args": {"kind": "empty"}, "expect": "error"},
        {"id": "b", "base": None, "op": "signal", "args": {"signal": "SIGSEGV"}, "expect": "error"},
        {"id": "c", "base": None, "op": "not_gguf", "args": {"kind": "text"}, "expect": "error"},
        {"id": "d", "base": None, "op": "signal", "args": {"signal": "SIGABRT"}, "expect": "error"},
    ]
    bases_json = tmp_path / "bases.json"
    bases_json.write_text("{}")
    results = _run_chunk(bases_json, cases, tmp_path, "harness")
    assert results["a"]["outcome"] == results["c"]["outcome"] == "error"
    assert results["b"]["outcome"] == results["d"]["outcome"] == "died"
    assert "SIGSEGV" in results["b"]["message"] and "SIGABRT" in results["d"]["message"]


# A few representative bad files through the speaking CLI: exit code 2 and one line on stderr.
CLI_CASES = [
    ("empty", {"op": "not_gguf", "args": {"kind": "empty"}}),
    ("magic", {"op": "bytes", "args": {"steps": [["bytes", 0, b"GGML".hex()]]}}),
    ("tensor-count", {"op": "bytes", "args": {"steps": [["set", 8, "<Q", (1 << 64) - 1]]}}),
    (
        "nan-rope",
        {"op": "rewrite", "args": {"kv_set": {"pocket-tts.flow_lm.rope.max_period": [float("nan"), "FLOAT64", None]}}},
    ),
]


def test_the_speaking_cli_rejects_bad_models_with_one_line(tmp_path):
    """pocket-speak --model BAD --list-voices: exit code 2, one `pocket-speak: error: ...` line."""
    import importlib.util

    from _gguf_corpus import materialise

    if importlib.util.find_spec("pocket_ggml.cli.speak") is None:
        pytest.skip("pocket-speak is not there yet")
    bases = make_bases(tmp_path, names=("q4",))
    paths = [materialise({"id": name, "base": "q4", **case}, bases, tmp_path, {}) for name, case in CLI_CASES]

    def run(path: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pocket_ggml.cli.speak", "--model", path, "--list-voices"]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, GGML_NO_BACKTRACE="1")
        )

    with ThreadPoolExecutor(N_WORKERS) as pool:
        procs = list(pool.map(run, paths))
    for (name, _), proc in zip(CLI_CASES, procs):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, f"{name}: exit {proc.returncode}, stderr {proc.stderr!r}"
        assert lines[0].startswith("pocket-speak: error: "), f"{name}: {lines[0]}"


def test_released_configs_pass_the_load_checks():
    """The caps and consistency rules of ModelFile reject nothing a released config holds."""
    from pocket_ggml.format.config import load_released_config, released_config_names
    from pocket_ggml.runtime.model_file import check_config

    for name in released_config_names():
        check_config(load_released_config(name), name)
