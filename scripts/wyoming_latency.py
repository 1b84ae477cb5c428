"""Latency of the Wyoming TTS service on loopback, measured with the wyoming package's own client.

    python scripts/wyoming_latency.py [--runs 5] [--clients 1,2,4] [--workers K] [--model GGUF]

Starts the service in this process on a free 127.0.0.1 port with a fixed seed, then measures:
- plain: `synthesize` sent -> first `audio-chunk`, and -> `audio-stop`;
- streaming: the piece of text that completes the first sentence sent -> first `audio-chunk`; and, once that
  sentence's audio is in, `synthesize-stop` sent (the last sentence completes only then, as when an LLM's
  answer ends without a trailing space) -> first `audio-chunk` of the last sentence;
- N clients at once (each a plain `synthesize`): per-client first chunk and total.
Prints a markdown table. Bounded: every read gives up after --timeout seconds, and the script then stops.

The embedded synthetic model's end-of-speech is random (it ends most texts within a second); with
`--eos-threshold inf` each text runs to the reference's length cap instead, a stand-in for real speech
lengths when the totals matter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import sys
import tempfile
import time

from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from pocket_ggml.serve.pool import ModelPool
from pocket_ggml.serve.registry import VoiceRegistry
from pocket_ggml.serve.wyoming import serve_wyoming

SEED = 42
TEXT = "Good evening. The living room lights are off, and the front door is locked."
FIRST = "The kettle has boiled. "  # the streamed first sentence, complete once its trailing space arrives
LAST = "Your tea will be ready in three minutes"  # complete only at synthesize-stop
PIECE = 4  # characters per synthesize-chunk, about an LLM token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pieces(text: str) -> list[str]:
    return [text[i : i + PIECE] for i in range(0, len(text), PIECE)]


def client(port: int, timeout: float) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, connect_timeout=timeout, read_timeout=timeout)


async def plain(port: int, timeout: float) -> tuple[float, float, float]:
    """(first chunk ms, total s, audio s) of one synthesize."""
    async with client(port, timeout) as c:
        await c.write_event(Synthesize(text=TEXT).event())
        sent = time.perf_counter()
        first, samples, rate = None, 0, 1
        while (event := await c.read_event()) is not None and event.type != "audio-stop":
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                first = first or time.perf_counter()
                samples, rate = samples + chunk.samples, chunk.rate
        if event is None or first is None:
            raise RuntimeError("the service closed the connection before audio-stop")
        return (first - sent) * 1000, time.perf_counter() - sent, samples / rate


async def first_sentence_ms(port: int, timeout: float) -> float:
    """Milliseconds of audio of FIRST alone: a plain synthesize with the service's seed is the first sentence
    of a stream (sentence k of a stream gets seed + k)."""
    async with client(port, timeout) as c:
        await c.write_event(Synthesize(text=FIRST.strip()).event())
        samples, rate = 0, 1
        while (event := await c.read_event()) is not None and event.type != "audio-stop":
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                samples, rate = samples + chunk.samples, chunk.rate
        return samples * 1000 / rate


async def streamed(port: int, timeout: float, first_ms: float) -> tuple[float, float]:
    """(first chunk ms after the first sentence completed, first chunk of the last sentence ms after stop)."""
    async with client(port, timeout) as c:
        await c.write_event(SynthesizeStart().event())
        for piece in pieces(FIRST):
            await c.write_event(SynthesizeChunk(text=piece).event())
        completed = time.perf_counter()
        first = None
        while True:  # the whole first sentence, so that the last one starts from an idle instance
            event = await c.read_event()
            if event is None:
                raise RuntimeError("the service closed the connection mid-stream")
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                first = first or time.perf_counter()
                if chunk.timestamp + chunk.milliseconds >= first_ms:
                    break
        for piece in pieces(LAST):
            await c.write_event(SynthesizeChunk(text=piece).event())
        await c.write_event(Synthesize(text=FIRST + LAST).event())  # what Home Assistant repeats in a stream
        await c.write_event(SynthesizeStop().event())
        stopped = time.perf_counter()
        last = None
        while (event := await c.read_event()) is not None and event.type != "synthesize-stopped":
            if AudioChunk.is_type(event.type) and last is None:
                last = time.perf_counter()
        if event is None or last is None:
            raise RuntimeError("the last sentence was not spoken")
        return (first - completed) * 1000, (last - stopped) * 1000


def summary(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


async def measure(args) -> None:
    load = {} if args.eos_threshold is None else {"eos_threshold": args.eos_threshold}
    pool = ModelPool(args.model, workers=args.workers, queue=max(16, max(args.clients)), **load)
    with tempfile.TemporaryDirectory(prefix="wyoming-latency-") as voices:
        registry = VoiceRegistry(pool, voices)
        port = free_port()
        stop = asyncio.Event()
        service = asyncio.create_task(serve_wyoming(f"tcp://127.0.0.1:{port}", pool, registry, seed=SEED, stop=stop))
        try:
            await asyncio.sleep(0.2)
            await plain(port, args.timeout)  # warm-up: first use of each thread and page of the model
            runs = [await plain(port, args.timeout) for _ in range(args.runs)]
            first_ms = await first_sentence_ms(port, args.timeout)
            streams = [await streamed(port, args.timeout, first_ms) for _ in range(args.runs)]
            crowds = {}
            for n in args.clients:
                started = time.perf_counter()
                results = await asyncio.gather(*(plain(port, args.timeout) for _ in range(n)))
                crowds[n] = (results, time.perf_counter() - started)
        finally:
            stop.set()
            await asyncio.wait_for(service, args.timeout)
            pool.close()

    print("`" + " ".join(["python", "scripts/wyoming_latency.py", *sys.argv[1:]]) + "`")
    print(
        f"\n{platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"model {pool.model_name}, {pool.workers} instance(s), {args.runs} runs each: median (min-max)\n"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| synthesize -> first audio-chunk | {summary([r[0] for r in runs], '{:.0f}')} ms |")
    print(f"| synthesize -> audio-stop | {summary([r[1] for r in runs], '{:.2f}')} s for {runs[0][2]:.2f} s of audio |")
    print(
        f"| streaming: first sentence complete -> first audio-chunk | {summary([s[0] for s in streams], '{:.0f}')} ms |"
    )
    print(
        f"| streaming: synthesize-stop -> first audio-chunk of the last sentence | "
        f"{summary([s[1] for s in streams], '{:.0f}')} ms |"
    )
    print(
        "\n| clients at once | first audio-chunk per client, ms | total per client, s | all done, s "
        "| audio s per wall s |"
    )
    print("|---|---|---|---|---|")
    for n, (results, wall) in crowds.items():
        print(
            f"| {n} | {summary([r[0] for r in results], '{:.0f}')} | {summary([r[1] for r in results], '{:.2f}')} "
            f"| {wall:.2f} | {sum(r[2] for r in results) / wall:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", default="1,2,4", help="comma-separated numbers of clients at once")
    parser.add_argument("--workers", type=int, default=None, help="model instances (default: the server's)")
    parser.add_argument("--model", default=None, help="a pocket-tts GGUF (default: the embedded model)")
    parser.add_argument("--eos-threshold", type=float, default=None, help="the model's own by default; inf: none")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any read may take")
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    if args.runs < 1 or min(args.clients) < 1:
        parser.error("--runs and --clients must be positive")
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
