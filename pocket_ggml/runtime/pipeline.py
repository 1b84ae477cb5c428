"""Text -> audio as a stream plays it: the chunks of a text and its pauses, each text chunk generated
from the voice state, its latent frames decoded as they come.

Per chunk two threads share each frame (`decode_frames`): a worker runs the latent loop
(`generate.py`: one FlowLM step per frame) and the first half of the Mimi decoder (up to the middle of
its transformer); the consumer's thread runs the other half (the remaining transformer layers, the
SEANet). Each is a fixed share of a frame, so on two cores each core does half of a frame's work.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pocket_ggml.errors import ParameterError, TextError
from pocket_ggml.runtime.flow_lm import FlowLMSnapshot
from pocket_ggml.runtime.generate import Frame
from pocket_ggml.runtime.markup import Pause, Segment, parse_markup
from pocket_ggml.runtime.mimi import MimiDecoder
from pocket_ggml.runtime.model import GenerationSettings, PocketRuntime
from pocket_ggml.runtime.prefill import IncrementalPrompt
from pocket_ggml.runtime.text import SentenceStream, split_into_best_sentences
from pocket_ggml.runtime.timestamps import ChunkTimestamps, TimestampChunk, WordEnd, WordStart

FrameSource = Callable[[Callable[[], bool]], Iterator[Frame]]  # (should_stop) -> the frames of one chunk
HIDDEN_QUEUE_FRAMES = 4  # how far the worker may run ahead of the consumer


@dataclass(frozen=True)
class Silence:
    """A pause as the stream plays it: this many zero samples."""

    samples: int


def silence(samples: int, frame_size: int, stop: threading.Event) -> Iterator[np.ndarray]:
    """Zeros in pieces of at most a frame: a consumer gets chunks of the size speech comes in, and `stop`
    ends a long pause at once."""
    for start in range(0, samples, frame_size):
        if stop.is_set():
            return
        yield np.zeros(min(frame_size, samples - start), np.float32)


def decode_frames(
    mimi: MimiDecoder, make_frames: FrameSource, stop: threading.Event
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(audio, the frame's `text_scores`) of each frame of one chunk, from a fresh decoder state.
    `make_frames(should_stop)` gives the chunk's latent frames; it and `mimi.first_half` run on a worker
    thread, `mimi.second_half` in the caller's. The first frame's step and first half are computed
    here, before the worker starts: no thread start or hand-over between the chunk's text and its first
    audio (on a busy machine each wake-up waits for a time slice). Setting `stop` ends within a frame."""
    hidden: queue.Queue = queue.Queue(maxsize=HIDDEN_QUEUE_FRAMES)
    failure: list[BaseException] = []
    halt = threading.Event()  # this chunk is over: the consumer stopped or left
    mimi.reset()
    frames = make_frames(lambda: halt.is_set() or stop.is_set())
    first = next(frames, None)
    if first is None:
        return
    first_half = mimi.first_half(first.latent[None, :]), first.text_scores

    def produce() -> None:
        try:
            for frame in frames:
                hidden.put((mimi.first_half(frame.latent[None, :]), frame.text_scores))
        except BaseException as e:  # handed to the consumer, raised there
            failure.append(e)
        finally:
            hidden.put(None)

    worker = threading.Thread(target=produce, name="pocket-flow-lm", daemon=True)
    worker.start()
    try:
        item = first_half
        while item is not None and not stop.is_set():
            steps, text_scores = item
            yield mimi.second_half(steps), text_scores
            item = hidden.get()
    finally:
        halt.set()
        _drain(hidden, worker)
    if failure:
        raise failure[0]


def _drain(queued: queue.Queue, worker: threading.Thread) -> None:
    """Let the worker finish (it stops before its next frame once halted)."""
    while worker.is_alive():
        try:
            queued.get(timeout=0.05)
        except queue.Empty:
            pass
    worker.join()


def text_chunks(rt: PocketRuntime, segments: list[Segment], max_tokens: int) -> list[str | Silence]:
    """The sentence chunks of each text piece and the silences between them (adjacent pauses joined)."""
    if not segments:
        raise TextError("the text is empty")
    chunks: list[str | Silence] = []
    for segment in segments:
        if isinstance(segment, Pause):
            samples = segment.samples(rt.sample_rate)
            if chunks and isinstance(chunks[-1], Silence):
                samples += chunks.pop().samples
            chunks.append(Silence(samples))
        else:
            chunks += split_into_best_sentences(rt.tokenizer, segment, rt.config.text, max_tokens)
    return chunks


def speak_chunks(
    rt: PocketRuntime,
    voice: FlowLMSnapshot,
    chunks: list[str | Silence],
    settings: GenerationSettings,
    rng: np.random.Generator,
    stop: threading.Event,
    heads: tuple[tuple[int, int], ...] = (),
    word_chunks: list[TimestampChunk] | None = None,
) -> Iterator[np.ndarray | WordStart | WordEnd]:
    """The audio of `chunks` (`text_chunks`), each text chunk generated from `voice`; with `word_chunks`
    (one per text chunk), the word events of `heads` before the audio of the frame each happened at."""
    frame_size = rt.config.mimi.frame_size
    clock = 0  # samples yielded so far: the time base of word events
    text_index = itertools.count()  # which of word_chunks the next text chunk is
    for chunk in chunks:
        if stop.is_set():
            return
        if isinstance(chunk, Silence):
            for zeros in silence(chunk.samples, frame_size, stop):
                clock += len(zeros)
                yield zeros
            continue
        timing = None
        if word_chunks is not None:
            word_chunk = word_chunks[next(text_index)]
            timing = ChunkTimestamps(word_chunk, heads, rt.config.flow_lm.head_dim, rt.sample_rate)

        def frames(halted: Callable[[], bool], text: str = chunk) -> Iterator[Frame]:
            noise = rt.noise_source(rng, settings)
            return rt.frames(voice, text, settings, noise, should_stop=halted, text_heads=heads)

        for audio, text_scores in decode_frames(rt.mimi, frames, stop):
            if timing is not None:
                yield from timing.frame(text_scores, audio, clock)
            clock += len(audio)
            yield audio
        if timing is not None:
            yield from timing.finish(clock)


_END = object()  # the end of a text stream


def speak_text_stream(
    rt: PocketRuntime,
    voice: FlowLMSnapshot,
    pieces: Iterator[str],
    settings: GenerationSettings,
    rng: np.random.Generator,
    stop: threading.Event,
    max_tokens: int,
    markup: bool,
) -> Iterator[np.ndarray]:
    """The audio of a text arriving in `pieces`, sentence by sentence as each ends, with the FlowLM
    prompted ahead with what is settled of the sentence being written (`IncrementalPrompt`)."""
    sentences = SentenceStream(rt.tokenizer, rt.config.text)
    prompt = IncrementalPrompt(rt, voice, max_tokens)
    while not stop.is_set():
        piece = next(pieces, _END)
        if piece is _END:
            rest = sentences.close()
            if rest is not None:
                yield from _speak_sentence(rt, prompt, rest, settings, rng, stop, markup)
            return
        if not isinstance(piece, str):
            raise ParameterError(f"text pieces must be strings, got {type(piece).__name__}")
        for sentence in sentences.feed(piece):
            yield from _speak_sentence(rt, prompt, sentence, settings, rng, stop, markup)
        # A marker in the sentence so far would be prompted as text: wait for its end instead.
        pending = sentences.pending
        if pending.strip() and not stop.is_set() and not (markup and ("[" in pending or "<" in pending)):
            prompt.update(pending)


def _speak_sentence(
    rt: PocketRuntime,
    prompt: IncrementalPrompt,
    sentence: str,
    settings: GenerationSettings,
    rng: np.random.Generator,
    stop: threading.Event,
    markup: bool,
) -> Iterator[np.ndarray]:
    chunks: list[tuple[list[int], int] | Silence] = []
    for segment in parse_markup(sentence) if markup else [sentence]:
        if isinstance(segment, Pause):
            chunks.append(Silence(segment.samples(rt.sample_rate)))
            continue
        try:
            chunks += prompt.chunks(segment)
        except TextError:  # nothing to say (e.g. a lone quote the text rules delete)
            pass
    noise = rt.noise_source(rng, settings)
    for chunk in chunks:
        if stop.is_set():
            return
        if isinstance(chunk, Silence):
            yield from silence(chunk.samples, rt.config.mimi.frame_size, stop)
            continue
        tokens, words_guess = chunk
        frames = decode_frames(
            rt.mimi,
            lambda halted, tokens=tokens, guess=words_guess: prompt.frames(tokens, guess, settings, noise, halted),
            stop,
        )
        for audio, _ in frames:
            yield audio
