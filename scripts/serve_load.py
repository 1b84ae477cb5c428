"""Load and fault figures of pocket-serve, on loopback only; every phase is bounded and the script stops by itself.

    python scripts/serve_load.py                                  # the default run: a few minutes on 2 cores
    python scripts/serve_load.py --requests 40 --kill-waves 1 --crash-trials 2    # a quick look

1. Load: `--requests` pcm speech requests at each concurrency of 1, K and 4K (K: the server's instances), then
   one burst of K + queue + 4K requests at once, which the server must partly refuse with 429 + Retry-After.
   Per level: p50/p95 first-byte and total latency, audio seconds produced per wall second, 429s, errors
   (any other status or a broken stream: must be 0), the server's RSS before and after.
2. Clients killed mid-stream: client processes SIGKILLed once their audio is flowing (and some while queued);
   the busy-instances gauge of /metrics must return to 0 and the next request must succeed.
3. The server SIGKILLed while a voice is being registered, at points spread over a registration; after a
   restart on the same voices folder the listing must work, every listed voice must speak, a registration
   that was answered must have survived, and no listed voice may lack its state file.

Exits with status 1 if any check fails. The server runs this checkout's code (tests/_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _server import running_server  # noqa: E402 - found through the path set just above

SAMPLE_RATE = 24000
TEXT = "The quick brown fox jumps over the lazy dog. Pocket TTS speaks on small computers, as it is written."
# A text whose stream lasts many seconds: clients are killed while it is still being generated.
LONG_TEXT = " ".join(f"Sentence number {i} of a long text that keeps the server busy." for i in range(60))
CLIP = ROOT.parent / "shared" / "assets" / "voices" / "speaker-48k.wav"
WAIT_SECONDS = 120  # bound of every wait for the server


@dataclass
class Reply:
    status: int | None  # None: no response (a transport error)
    first_byte: float | None = None
    total: float = 0.0
    audio_seconds: float = 0.0
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Level:
    name: str
    concurrency: int
    replies: list[Reply]
    wall: float
    rss_before: float | None
    rss_after: float | None

    def count(self, status: int) -> int:
        return sum(r.status == status and r.error is None for r in self.replies)

    @property
    def errors(self) -> list[Reply]:
        return [r for r in self.replies if r.error is not None or r.status not in (200, 429)]


@dataclass
class Checks:
    failures: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            print(f"FAILED: {what}", flush=True)
        return ok


# ---------------------------------------------------------------------- the server's side
def rss_mb(pid: int) -> tuple[float | None, float | None]:
    """Resident and peak resident MB of a process (Linux /proc; None elsewhere)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", status, re.MULTILINE)}
    return kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/metrics has no {name}")
    return float(match.group(1))


def wait_idle(url: str) -> float | None:
    """Seconds until no instance is busy and nothing waits (None: not within WAIT_SECONDS)."""
    start = time.monotonic()
    while time.monotonic() - start < WAIT_SECONDS:
        if metric(url, "pocket_busy_instances") == 0 and metric(url, "pocket_queue_depth") == 0:
            return time.monotonic() - start
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------------- load
async def speak(client: httpx.AsyncClient, url: str, text: str) -> Reply:
    body = {"model": "pocket", "input": text, "response_format": "pcm"}
    start = time.perf_counter()
    first, size = None, 0
    try:
        async with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                error = None if response.status_code == 429 else response.text[:200]
                return Reply(
                    response.status_code,
                    total=time.perf_counter() - start,
                    retry_after=response.headers.get("retry-after"),
                    error=error,
                )
            async for piece in response.aiter_raw():
                if piece and first is None:
                    first = time.perf_counter() - start
                size += len(piece)
    except httpx.HTTPError as e:  # a stream cut off is an error as much as a 5xx
        return Reply(None, first, time.perf_counter() - start, size / 2 / SAMPLE_RATE, error=repr(e))
    error = None if size and size % 2 == 0 else f"a pcm body of {size} bytes"
    return Reply(200, first, time.perf_counter() - start, size / 2 / SAMPLE_RATE, error=error)


async def run_level(url: str, concurrency: int, requests: int, text: str) -> tuple[list[Reply], float]:
    """`requests` requests from `concurrency` clients, each sending its next request when the last one ended."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=WAIT_SECONDS, limits=limits) as client:
        pending = iter(range(requests))
        replies: list[Reply] = []

        async def client_loop() -> None:
            for _ in pending:  # one iterator shared by the clients: each request is sent once
                replies.append(await speak(client, url, text))

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return replies, time.perf_counter() - start


def load_phase(server, workers: int, queue: int, args, checks: Checks) -> list[Level]:
    levels = []
    plan = [(f"{c}", c, args.requests) for c in dict.fromkeys((1, workers, 4 * workers))]
    burst = workers + queue + 4 * workers
    plan.append((f"burst of {burst} at once", burst, burst))
    for name, concurrency, requests in plan:
        before = rss_mb(server.proc.pid)[0]
        replies, wall = asyncio.run(run_level(server.url, concurrency, requests, args.text))
        level = Level(name, concurrency, replies, wall, before, rss_mb(server.proc.pid)[0])
        levels.append(level)
        print(
            f"load {name}: {level.count(200)} ok, {level.count(429)} refused, {len(level.errors)} errors "
            f"in {wall:.1f} s",
            flush=True,
        )
        for r in level.errors[:3]:
            print(f"  error: status {r.status}: {r.error}", flush=True)
        checks.expect(not level.errors, f"load {name}: {len(level.errors)} errors other than 429")
        refused = [r for r in replies if r.status == 429]
        checks.expect(all(r.retry_after for r in refused), f"load {name}: a 429 without Retry-After")
        if concurrency <= workers + queue:
            checks.expect(not refused, f"load {name}: 429s within the queue's capacity")
        else:
            checks.expect(bool(refused), f"load {name}: no 429 beyond the queue's capacity")
        checks.expect(wait_idle(server.url) is not None, f"load {name}: instances still busy afterwards")
    return levels


def percentile_ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "-"


def load_table(levels: list[Level]) -> str:
    rows = [
        (
            "| concurrency | requests | ok | 429 | errors | first byte p50 / p95 ms | total p50 / p95 ms "
            "| audio s per s | server RSS MB before -> after |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        ok = [r for r in level.replies if r.status == 200 and r.error is None]
        first = [r.first_byte for r in ok if r.first_byte is not None]
        total = [r.total for r in ok]
        audio = sum(r.audio_seconds for r in ok)
        rss = "-" if level.rss_before is None else f"{level.rss_before:.0f} -> {level.rss_after:.0f}"
        rows.append(
            f"| {level.name} | {len(level.replies)} | {len(ok)} | {level.count(429)} | {len(level.errors)} "
            f"| {percentile_ms(first, 50)} / {percentile_ms(first, 95)} "
            f"| {percentile_ms(total, 50)} / {percentile_ms(total, 95)} | {audio / level.wall:.2f} | {rss} |"
        )
    return "\n".join(rows)


# ---------------------------------------------------------------------- clients killed mid-stream
_CLIENT = """
import http.client, json, sys
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
body = json.dumps({"input": sys.argv[2], "response_format": "pcm"})
connection.request("POST", "/v1/audio/speech", body=body, headers={"Content-Type": "application/json"})
response = connection.getresponse()
response.read(4 * 1920)  # audio is flowing
print(response.status, flush=True)
while response.read(1920):  # keep reading until killed
    pass
"""


def kill_phase(server, workers: int, args, checks: Checks) -> list[str]:
    """Waves of K streaming clients plus two queued ones, all SIGKILLed once the K streams flow."""
    rows = [
        "| wave | clients streaming / queued when killed | busy gauge back to 0 after ms | next request |",
        "|---:|---:|---:|---|",
    ]
    for wave in range(1, args.kill_waves + 1):
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", _CLIENT, str(server.port), LONG_TEXT], stdout=subprocess.PIPE, text=True
            )
            for _ in range(workers + 2)
        ]
        streaming, deadline = set(), time.monotonic() + WAIT_SECONDS
        try:
            while len(streaming) < workers and time.monotonic() < deadline:
                waiting = [c for c in clients if c not in streaming and c.poll() is None]
                if not waiting:  # every other client ended (refused): no more streams will start
                    break
                ready, _, _ = select.select([c.stdout for c in waiting], [], [], 1.0)
                streaming.update(c for c in waiting if c.stdout in ready and c.stdout.readline().strip() == "200")
        finally:
            for c in clients:
                c.send_signal(signal.SIGKILL)
                c.wait()
                c.stdout.close()
        checks.expect(len(streaming) == workers, f"kill wave {wave}: only {len(streaming)} streams started")
        idle_after = wait_idle(server.url)
        checks.expect(idle_after is not None, f"kill wave {wave}: instances still busy {WAIT_SECONDS} s later")
        reply = asyncio.run(_one_request(server.url))
        checks.expect(reply.status == 200 and reply.error is None, f"kill wave {wave}: the next request failed")
        idle = "-" if idle_after is None else f"{idle_after * 1000:.0f}"
        rows.append(
            f"| {wave} | {len(streaming)} / {len(clients) - len(streaming)} | {idle} "
            f"| {reply.status}, {reply.audio_seconds:.2f} s of audio |"
        )
        print(f"kill wave {wave}: busy back to 0 after {idle} ms; next request {reply.status}", flush=True)
    return rows


async def _one_request(url: str) -> Reply:
    async with httpx.AsyncClient(timeout=WAIT_SECONDS) as client:
        return await speak(client, url, TEXT)


# ---------------------------------------------------------------------- the server killed mid-registration
def register(url: str, clip: bytes, name: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/audio/voices",
        files={"file": ("clip.wav", clip, "audio/wav")},
        data={"name": name},
        timeout=WAIT_SECONDS,
    )


def register_into(outcome: dict, url: str, clip: bytes, name: str) -> None:
    """`register`, its response (or transport error) left in `outcome`: run on a thread while the server dies."""
    try:
        outcome["response"] = register(url, clip, name)
    except httpx.HTTPError as e:
        outcome["error"] = e


def check_registry(server, voices_dir: Path, must_have: set[str], checks: Checks, when: str) -> str:
    """The registry after a restart: listing works, every listed voice speaks, answered registrations
    survived, every listed voice has its state file. Returns a table cell."""
    response = httpx.get(f"{server.url}/v1/audio/voices", timeout=10)
    if not checks.expect(response.status_code == 200, f"{when}: listing voices gave {response.status_code}"):
        return "listing failed"
    listed = {v["id"] for v in response.json()["data"] if v["source"] == "registered"}
    checks.expect(must_have <= listed, f"{when}: answered registrations lost: {sorted(must_have - listed)}")
    without_state = [v for v in listed if not (voices_dir / f"{v}.safetensors").is_file()]
    checks.expect(not without_state, f"{when}: listed voices without a state file: {without_state}")
    silent = []
    for voice in sorted(listed):
        body = {"input": "Still here.", "voice": voice, "response_format": "pcm"}
        spoken = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=WAIT_SECONDS)
        if spoken.status_code != 200 or not spoken.content:
            silent.append(voice)
    checks.expect(not silent, f"{when}: listed voices that do not speak: {silent}")
    broken = incomplete_files(voices_dir)
    checks.expect(not broken, f"{when}: half-written files under a final name: {broken}")
    unlisted = {p.stem for p in voices_dir.glob("voice-*.safetensors")} - listed
    parts = list(voices_dir.glob(".*.part"))
    return (
        f"{len(listed)} listed, all speak: {'yes' if not silent else 'NO'}; half-written files "
        f"{len(broken)}; unlisted complete state files {len(unlisted)}; temp files {len(parts)}"
    )


def incomplete_files(voices_dir: Path) -> list[str]:
    """Files under a registry's final name (not a temp file) that do not read back whole."""
    from pocket_ggml import PocketError, load_voice_state

    broken = []
    for path in voices_dir.glob("voice-*.safetensors"):
        try:
            load_voice_state(path)
        except PocketError:
            broken.append(path.name)
    for path in voices_dir.glob("voice-*.json"):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or not {"name", "created"} <= meta.keys():
                broken.append(path.name)
        except (OSError, ValueError):
            broken.append(path.name)
    return broken


# What a trial waits for before the SIGKILL, beside points in time: the sight of one of the registration's files.
WRITE_STAGES = {
    "state temp file seen": ".voice-*.safetensors.*.part",
    "state file in place, no metadata yet": "voice-*.safetensors",
    "metadata temp file seen": ".voice-*.json.*.part",
}


def kill_at(server, voices_dir: Path, uploader: threading.Thread, when: float | str) -> str:
    """SIGKILL the server `when` seconds into the registration, or as soon as a new file of the `when` stage
    shows in the voices folder; says when it happened."""
    start = time.perf_counter()
    if isinstance(when, str):
        pattern = WRITE_STAGES[when]
        before = set(fnmatch.filter(os.listdir(voices_dir), pattern))
        seen = False
        # a write lasts milliseconds: poll without sleeping, yielding the CPU only
        while uploader.is_alive() and time.perf_counter() - start < WAIT_SECONDS and not seen:
            seen = bool(set(fnmatch.filter(os.listdir(voices_dir), pattern)) - before)
            time.sleep(0)
        said = when if seen else f"{when}: missed, the registration ended first"
    else:
        time.sleep(when)
        said = "timed"
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    return f"{said}, {(time.perf_counter() - start) * 1000:.0f} ms in"


def crash_phase(server_args: list[str], args, checks: Checks) -> list[str]:
    clip = CLIP.read_bytes()
    rows = [
        "| trial | SIGKILL (a registration takes ~T ms) | registration answered | registry after the restart |",
        "|---:|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="pocket-serve-load-") as work:
        voices_dir = Path(work) / "voices"
        run = ("--voices-dir", str(voices_dir), *server_args)
        answered: set[str] = set()
        # two voices that must survive every crash; the second is timed as the trials will run it: on a server
        # just started, after the registry check
        for name in ("kept", "kept too"):
            with running_server(*run) as server:
                check_registry(server, voices_dir, answered, checks, "before the crash trials")
                start = time.perf_counter()
                response = register(server.url, clip, name)
                registration = time.perf_counter() - start
            if not checks.expect(response.status_code == 201, f"registration gave {response.status_code}"):
                return rows
            answered.add(response.json()["id"])
        print(f"a registration takes {registration * 1000:.0f} ms", flush=True)
        # points in time spread over a registration, alternating with the moments its files are written
        points = list(np.linspace(0.2, 1.2, (args.crash_trials + 1) // 2) * registration)
        stages = [list(WRITE_STAGES)[i % len(WRITE_STAGES)] for i in range(args.crash_trials // 2)]
        trials = [x for pair in zip(points, stages + [None], strict=False) for x in pair if x is not None]
        for trial, when in enumerate(trials, 1):
            with running_server(*run) as server:  # also the restart after the previous trial's SIGKILL
                check_registry(server, voices_dir, answered, checks, f"before crash trial {trial}")
                outcome: dict = {}
                uploader = threading.Thread(target=register_into, args=(outcome, server.url, clip, f"trial {trial}"))
                uploader.start()
                killed = kill_at(server, voices_dir, uploader, when)
                uploader.join(WAIT_SECONDS)
            response = outcome.get("response")
            if response is not None and response.status_code == 201:
                answered.add(response.json()["id"])
                said = "yes (201)"
            else:
                said = "no" if response is None else f"no ({response.status_code})"
            with running_server(*run) as server:
                state = check_registry(server, voices_dir, answered, checks, f"after crash trial {trial}")
            rows.append(f"| {trial} | {killed} | {said} | {state} |")
            print(f"crash trial {trial}: killed {killed}; answered {said}; {state}", flush=True)
        rows[0] = rows[0].replace("~T", f"~{registration * 1000:.0f}")
    return rows


# ---------------------------------------------------------------------- main
def at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=at_least(1), default=200, help="requests per concurrency level")
    parser.add_argument("--workers", type=at_least(1), default=None, help="server instances K (default: the server's)")
    parser.add_argument("--queue", type=at_least(0), default=16, help="the server's queue")
    parser.add_argument("--model", default=None, help="a GGUF (default: the embedded synthetic model)")
    parser.add_argument("--text", default=TEXT, help="the text of every load request")
    parser.add_argument("--kill-waves", type=at_least(0), default=3, help="waves of clients killed mid-stream")
    parser.add_argument("--crash-trials", type=at_least(0), default=6, help="server SIGKILLs during a registration")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args()
    if not CLIP.is_file():
        parser.error(f"the voice clip {CLIP} is missing")

    server_args = ["--queue", str(args.queue)]
    if args.workers is not None:
        server_args += ["--workers", str(args.workers)]
    if args.model is not None:
        server_args += ["--model", args.model]
    checks = Checks()
    started = time.perf_counter()
    with running_server(*server_args) as server:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        workers = health["workers"]
        rss_start, _ = rss_mb(server.proc.pid)
        load_before = os.getloadavg()[0]  # other work on the machine shows in every figure
        print(f"{health['model']}: {workers} instance(s), queue {args.queue}, {os.cpu_count()} CPUs", flush=True)
        levels = load_phase(server, workers, args.queue, args, checks)
        load_after = os.getloadavg()[0]
        kills = kill_phase(server, workers, args, checks)
        rss_end, rss_peak = rss_mb(server.proc.pid)
        disconnected = [
            line.rsplit(" ", 1)[1]
            for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines()
            if line.startswith("pocket_requests_total{") and 'outcome="disconnected"' in line
        ]
    crashes = crash_phase(server_args, args, checks)

    rss = "-" if rss_start is None else f"{rss_start:.0f} MB at start, {rss_end:.0f} MB at the end, peak {rss_peak:.0f}"
    report = "\n".join(
        [
            (
                f"{health['model']}, {workers} instance(s) (K), queue {args.queue}, {os.cpu_count()} CPUs "
                f"({platform.machine()}; load average {load_before:.1f} before, {load_after:.1f} after the load "
                f"phase), pcm, {args.requests} requests per level, a text of {len(args.text)} characters."
            ),
            "",
            load_table(levels),
            "",
            f"Server RSS over the load and kill phases: {rss}. Requests the server counted as disconnected: "
            + f"{sum(float(n) for n in disconnected):.0f}.",
            "",
            *kills,
            "",
            *crashes,
            "",
            (
                f"{'all checks passed' if not checks.failures else 'FAILED: ' + '; '.join(checks.failures)} "
                f"({time.perf_counter() - started:.0f} s)"
            ),
        ]
    )
    print("\n" + report)
    if args.markdown is not None:
        args.markdown.write_text(report + "\n", encoding="utf-8")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
