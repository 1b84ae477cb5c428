"""The pocket-* commands as a user runs them: `python -m pocket_ggml.cli.NAME ARGS` in a subprocess, this
checkout's code first on the path, output captured as text; and what a refused input must look like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    name: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """`name` is the command's module in pocket_ggml.cli (quantize, speak, bench, serve); `env` adds to this
    process's environment."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", f"pocket_ggml.cli.{name}", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        cwd=cwd,
    )


def assert_refused_in_one_line(r: subprocess.CompletedProcess, case: object) -> None:
    """Exit status 2 and one line on stderr (or click's usage block), no traceback; the note that a model has
    synthetic weights is not part of the refusal."""
    assert r.returncode == 2, (case, r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "synthetic weights" not in ln]
    assert len(lines) == 1 or lines[0].startswith("Usage:"), (case, r.stderr)
    assert "Traceback" not in r.stderr, (case, r.stderr)
