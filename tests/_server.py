"""Run the real pocket-serve as a subprocess on 127.0.0.1 and a free port, for tests and scripts.

    with running_server("--workers", "1") as server:
        httpx.get(f"{server.url}/health")

The server runs this checkout's code (its root first on PYTHONPATH) with registered voices in a fresh
temporary folder unless `--voices-dir` is given; its log is kept in `server.log_path` (`server.log()`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServerProcess:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    proc: subprocess.Popen
    port: int
    log_path: Path
    voices_dir: Path | None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_server(*args: str, env: dict | None = None, startup_timeout: float = 180.0) -> Iterator[ServerProcess]:
    """`python -m pocket_ggml.cli.serve --host 127.0.0.1 --port FREE *args`, up once /health answers; stopped
    (SIGINT, then SIGKILL after 20 s) when the block ends."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pocket-serve-")))
        voices_dir = None
        if "--voices-dir" not in args:
            voices_dir = work / "voices"
            args = (*args, "--voices-dir", str(voices_dir))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        environment = dict(os.environ if env is None else env)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
        log_path = work / "server.log"
        log = stack.enter_context(open(log_path, "wb"))
        cmd = [sys.executable, "-m", "pocket_ggml.cli.serve", "--host", "127.0.0.1", "--port", str(port), *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=work)
        stack.callback(_stop, proc)
        deadline = time.monotonic() + startup_timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"pocket-serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pocket-serve did not answer /health in {startup_timeout:g} s")
            time.sleep(0.2)
        yield ServerProcess(url, proc, port, log_path, voices_dir)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
