"""`pocket-bench --feed-wps N`: first audio of text that arrives word by word, and of a whole text.

Streaming: the words of the text are handed to `generate_audio_for_text_stream` at N words/s (each
with the space after it, as a typist or a flushed writer sends them), and each sentence's latency
is the time from the moment its last word was due to its first audio chunk. One-shot: text
submitted at once to `generate_audio_stream` -> first chunk, with the reference's chunking and with
`first_chunk_tokens`. In this process, after one warm-up sentence, the voice state cached. A
sentence that ends while the one before is still being generated (the FlowLM has one cache) waits
for it: those are reported apart.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pocket_ggml.runtime.text import SentenceStream


def _sentence_ending_words(tts, words: list[str]) -> set[int]:
    """Indices of the words whose arrival ends a sentence (as the streaming API will see it)."""
    stream = SentenceStream(tts._rt.tokenizer, tts.config.text)  # type: ignore[attr-defined]
    return {i for i, w in enumerate(words) if stream.feed(w)}


def streamed_latencies(tts, voice, text: str, wps: float) -> list[tuple[float, bool]]:
    """For each sentence: seconds from its last word being due to its first chunk (feeding at
    `wps`), and whether the engine was still busy with the sentence before at that moment (its
    last chunk came later): then the latency includes the rest of that sentence's generation."""
    words = [w + " " for w in text.split()]
    ends = _sentence_ending_words(tts, words)
    due: list[tuple[float, bool]] = []
    waiting: list[float] = []  # due times of sentence ends whose first chunk has not come yet
    last_chunk = 0.0

    def pieces() -> Iterator[str]:
        start = time.perf_counter()
        for i, word in enumerate(words):
            at = start + i / wps
            time.sleep(max(0.0, at - time.perf_counter()))
            if i in ends:
                waiting.append(at)
            yield word

    for _ in tts.generate_audio_for_text_stream(voice, pieces()):
        now = time.perf_counter()
        if waiting:  # the first chunk after a sentence's last word is that sentence's
            at = waiting.pop(0)
            due.append((now - at, last_chunk > at))
        last_chunk = now
    return due


def first_chunk_s(stream: Callable[[], Iterator]) -> float:
    t0 = time.perf_counter()
    for _ in stream():
        return time.perf_counter() - t0
    return float("nan")


def run_feed(
    gguf: Path,
    wav: Path,
    text: str,
    *,
    wps: float,
    threads: int,
    mimi_threads: int,
    runs: int,
    first_chunk_tokens: int,
    progress: Callable[[str], None],
) -> dict[str, object]:
    from pocket_ggml import TTSModel

    tts = TTSModel.load_model(gguf, threads=threads, mimi_threads=mimi_threads, seed=0)
    voice = tts.get_state_for_audio_prompt(str(wav))
    for _ in tts.generate_audio_stream(voice, "A warm-up sentence, before timing."):
        pass
    streamed: list[tuple[float, bool]] = []
    one_shot: dict[str, list[float]] = {"reference chunking": [], f"first_chunk_tokens={first_chunk_tokens}": []}
    for i in range(runs):
        progress(f"run {i + 1}/{runs}: {len(text.split())} words at {wps:g} words/s")
        streamed += streamed_latencies(tts, voice, text, wps)
        one_shot["reference chunking"].append(first_chunk_s(lambda: tts.generate_audio_stream(voice, text)))
        one_shot[f"first_chunk_tokens={first_chunk_tokens}"].append(
            first_chunk_s(lambda: tts.generate_audio_stream(voice, text, first_chunk_tokens=first_chunk_tokens))
        )
    rt = tts._rt  # type: ignore[attr-defined]
    ggml_threads = [rt.threads, rt.mimi_threads, rt.prompt_threads]
    tts.close()
    return {
        "model": str(gguf),
        "words_per_second": wps,
        "runs": runs,
        "ggml_threads": ggml_threads,
        "text": text,
        "streamed_first_audio_ms": [x * 1e3 for x, busy in streamed if not busy],
        "streamed_first_audio_after_busy_ms": [x * 1e3 for x, busy in streamed if busy],
        "one_shot_first_audio_ms": {k: [x * 1e3 for x in v] for k, v in one_shot.items()},
    }


def markdown(doc: dict) -> str:
    def row(name: str, ms: list[float]) -> str:
        return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |"

    flow_lm, mimi, prompt = doc["ggml_threads"]
    title = f"First audio, {Path(doc['model']).name}, ggml threads FlowLM/Mimi/prompt {flow_lm}/{mimi}/{prompt}"
    lines = [
        f"{title}, {doc['runs']} run(s)",
        "",
        "| path | samples | median ms | min ms | max ms |",
        "|---|---|---|---|---|",
    ]
    streamed = f"streamed at {doc['words_per_second']:g} words/s: sentence's last word -> its first chunk"
    if doc["streamed_first_audio_ms"]:
        lines.append(row(streamed, doc["streamed_first_audio_ms"]))
    if doc["streamed_first_audio_after_busy_ms"]:
        lines.append(
            row(f"{streamed}, the sentence before still generating", doc["streamed_first_audio_after_busy_ms"])
        )
    for name, ms in doc["one_shot_first_audio_ms"].items():
        lines.append(row(f"whole text at once -> first chunk, {name}", ms))
    return "\n".join(lines)
