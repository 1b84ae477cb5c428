"""Running benchmark configurations, each in a fresh subprocess, and the import-time probes.

Every configuration (ours at a thread count, the reference fp32 / int8 at that thread count) runs in a
process of its own (`worker.py`, `reference_worker.py`), so its peak RSS is its own and interpreter
start-up stays outside every speed figure. Our import time is measured in yet other fresh interpreters
(`python -c`), timing the import statement only; the reference's is timed by each of its children,
whose first act is `import torch; from pocket_tts import TTSModel` (torch takes seconds to import, so
this saves as many torch imports). Children inherit the CPU affinity of pocket-bench
(`--cores` pins it first) and get the same list of CPUs in their spec; they share one environment, in
which OMP_WAIT_POLICY=passive is set when any thread count is above 1 and the user did not set it.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pocket_ggml.errors import BenchRunError, ReferenceUnavailable

CHILD_TIMEOUT_S = 3600
IMPORT_OURS = "import pocket_ggml; from pocket_ggml import TTSModel"
PROGRESS_PREFIX = "pocket-bench-progress: "  # as worker.py and reference_worker.py write it
REFERENCE_SCRIPT = Path(__file__).resolve().parent / "reference_worker.py"
_PROBE = (
    "import importlib.util, sys\n"
    "missing = [m for m in ('torch', 'pocket_tts') if importlib.util.find_spec(m) is None]\n"
    "print(' '.join(missing))\n"
    "sys.exit(3 if missing else 0)\n"
)
_VERSION_PROBE = (
    "import importlib.metadata as m\n"
    "for p in ('pocket-tts', 'torch', 'torchao'):\n"
    "    try: print(p, m.version(p))\n"
    "    except m.PackageNotFoundError: print(p, '-')\n"
)


def child_env(threads: list[int], mimi_threads: int | None, pycache: Path) -> dict[str, str]:
    """The environment of every child: the user's, plus OMP_WAIT_POLICY=passive when more than one
    thread is used anywhere and the user did not choose a policy (read by libgomp at load). Bytecode is
    compiled once into the folder `pycache` and used from there, as an installed package has it:
    PYTHONDONTWRITEBYTECODE or an editable install would otherwise make every import compile the
    sources, and nothing is written into the installation."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if max([*threads, mimi_threads or 1]) > 1 and "OMP_WAIT_POLICY" not in os.environ:
        env["OMP_WAIT_POLICY"] = "passive"
    return env


def check_reference(python: str) -> dict[str, str | None]:
    """Versions of pocket-tts / torch / torchao in `python`; ReferenceUnavailable when torch or
    pocket_tts cannot be imported there (found without importing them)."""
    try:
        r = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise ReferenceUnavailable(f"cannot run the reference interpreter {python}: {e}") from None
    if r.returncode != 0:
        missing = r.stdout.strip() or "torch / pocket_tts"
        raise ReferenceUnavailable(
            f"--reference needs the official pocket-tts 4.0.1 and torch in {python}; not importable: {missing}. "
            'Install them with `pip install -e ".[test]"` (torch==2.13.0 CPU, pocket-tts==4.0.1), or point '
            "--reference-python at an interpreter that has them."
        )
    r = subprocess.run([python, "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=120)
    out: dict[str, str | None] = {}
    for line in r.stdout.splitlines():
        name, _, version = line.partition(" ")
        out[name] = None if version == "-" else version
    return out


def measure_import_ms(python: str, statement: str, env: Mapping[str, str], reps: int) -> list[float]:
    """Wall time of `statement` in `reps` fresh interpreters (interpreter start-up excluded), after one
    unmeasured import that compiles the bytecode (see `child_env`)."""
    code = f"import time\nt0 = time.perf_counter()\n{statement}\nprint(repr((time.perf_counter() - t0) * 1e3))\n"
    out = []
    for _ in range(reps + 1):
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=dict(env), timeout=600)
        if r.returncode != 0:
            raise BenchRunError(f"`{statement}` failed in a fresh {python}:\n{r.stderr[-2000:]}")
        out.append(float(r.stdout.strip().splitlines()[-1]))
    return out[1:]


def run_child(
    cmd: list[str],
    spec: Mapping[str, object],
    env: Mapping[str, str],
    progress: Callable[[str], None],
    what: str,
    timeout: float = CHILD_TIMEOUT_S,
) -> dict[str, object]:
    """Run one measuring child: spec in, JSON result out; its stderr lines are passed to `progress`
    as they come, and the last ones are quoted if it fails."""
    with tempfile.TemporaryDirectory(prefix="pocket-bench-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [*cmd, str(spec_path), str(result_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
        )
        tail: collections.deque[str] = collections.deque(maxlen=40)

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                tail.append(line)
                if line.startswith(PROGRESS_PREFIX):  # the workers' progress; the rest is shown on failure
                    progress(line[len(PROGRESS_PREFIX) :])

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchRunError(f"{what}: no result after {timeout:.0f} s") from None
        reader.join(timeout=10)
        if code != 0 or not result_path.exists():
            raise BenchRunError(
                f"{what} failed (exit {code}):\n"
                + "\n".join(line for line in tail if not line.startswith(PROGRESS_PREFIX))
            )
        return json.loads(result_path.read_text())


def run_two_phases(
    cmd: list[str], spec: Mapping[str, object], env: Mapping[str, str], progress: Callable[[str], None], what: str
) -> dict[str, object]:
    """One configuration in two processes: "voice" clones the voice from the wav (timed) and saves its
    state; "generate" loads that state -- the voice cached, as the targets are defined -- and generates.
    So the generation's peak RSS is that of a program that never encoded audio, and the cloning
    process's peak is reported beside it (`peak_rss_voice_clone_mb`)."""
    with tempfile.TemporaryDirectory(prefix="pocket-bench-voice-") as tmp:
        state = str(Path(tmp) / "voice.safetensors")
        voice = run_child(cmd, {**spec, "phase": "voice", "voice_state": state}, env, progress, f"{what}, voice")
        out = run_child(cmd, {**spec, "phase": "generate", "voice_state": state}, env, progress, what)
    out.update(
        voice_encode_s=voice["voice_encode_s"],
        voice_encode_cold_s=voice["voice_encode_cold_s"],
        peak_rss_voice_clone_mb=voice["peak_rss_mb"],
    )
    return out


def run_ours(spec: Mapping[str, object], env: Mapping[str, str], progress: Callable[[str], None]) -> dict:
    cmd = [sys.executable, "-m", "pocket_ggml.bench.worker"]
    return run_two_phases(cmd, spec, env, progress, f"pocket-ggml (threads {spec['threads']})")


def run_reference(
    python: str, spec: Mapping[str, object], env: Mapping[str, str], progress: Callable[[str], None]
) -> dict:
    variant = "int8" if spec["quantize"] else "fp32"
    what = f"pocket-tts {variant} (threads {spec['threads']})"
    # the reference is an installed package with its bytecode: a pycache prefix would recompile torch
    env = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}
    return run_two_phases([python, str(REFERENCE_SCRIPT)], spec, env, progress, what)
