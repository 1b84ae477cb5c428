"""`TTSModel`: the official `pocket_tts.TTSModel` API on the GGML runtime.

Switching from the official package is an import change:

    from pocket_ggml import TTSModel
    model = TTSModel.load_model()                      # or a .gguf, a released .safetensors, a model name
    voice = model.get_state_for_audio_prompt("me.wav")  # or (samples, rate), a stored voice name, a .safetensors state
    audio = model.generate_audio(voice, "Hello world.")  # float32 numpy at model.sample_rate

Long text is split into sentence chunks (<= 50 tokens by default), each generated from a fresh copy
of the voice state. `generate_audio_stream` runs the FlowLM step and the Mimi transformer on a worker
thread, the SEANet decoder in the caller's, and yields each 80 ms chunk as soon as it is decoded.
Pauses written in the text (`[pause:1.5]`, `<break time="300ms"/>`; see `pocket_ggml.runtime.markup`)
split it before chunking and play as exact silences.

Word timestamps (`generate_audio_stream(..., timestamps=True)`, `generate_audio_with_timestamps`)
are computed as pocket-tts-timestamped 1.4.0 does, from the attention of the config's timestamp heads
over the text (pocket_ggml.runtime.timestamps); their times count the samples yielded before them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from pocket_ggml.errors import AudioError, BusyError, ParameterError, VoiceStateError
from pocket_ggml.format.config import DEFAULT_MIX
from pocket_ggml.models import resolve_model
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.runtime.markup import parse_markup, spoken_text
from pocket_ggml.runtime.model import GenerationSettings, PocketRuntime
from pocket_ggml.runtime.pipeline import Silence, speak_chunks, speak_text_stream, text_chunks
from pocket_ggml.runtime.text import MAX_TOKENS_PER_CHUNK, SentencePieces, shorten_first_chunk
from pocket_ggml.runtime.timestamps import WordEnd, WordStart, WordTimestamp, timestamp_heads
from pocket_ggml.voices.audio import read_audio
from pocket_ggml.voices.state import VoiceState, check_fits, clone_voice, load_voice_state
from pocket_ggml.voices.store import stored_voice

logger = logging.getLogger(__name__)
T = TypeVar("T")


_MAX_THREADS = 64
TRUNCATE_SECONDS = 30  # the reference's truncate=True
MAX_PROMPT_SECONDS = 120  # a longer prompt adds nothing to the voice and takes a while to encode


class TimestampedAudio(NamedTuple):
    """`generate_audio_with_timestamps`'s result: the audio and its words, in order."""

    audio: np.ndarray
    words: list[WordTimestamp]


def _check_threads(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_THREADS:
        raise ParameterError(f"{name} must be an integer from 1 to {_MAX_THREADS}, got {n!r}")
    return n


def _check_float(name: str, x: float | None, *, allow_inf: bool = False, minimum: float | None = None) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {x!r}") from None
    if np.isnan(x) or (np.isinf(x) and not allow_inf) or (minimum is not None and x < minimum):
        raise ParameterError(f"{name} must be a {'' if allow_inf else 'finite '}number >= {minimum}, got {x}")
    return x


class TTSModel:
    """A loaded model. Construct it with `TTSModel.load_model(...)`."""

    def __init__(self, runtime: PocketRuntime, settings: GenerationSettings, max_tokens: int, seed: int | None):
        self._rt = runtime
        self._settings = settings
        self._max_tokens = max_tokens
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_model(
        cls,
        model: str | Path | None = None,
        *,
        threads: int = 1,
        mimi_threads: int = 1,
        temp: float | None = None,
        lsd_decode_steps: int = 1,
        noise_clamp: float | None = None,
        eos_threshold: float | None = None,
        frames_after_eos: int | None = None,
        max_tokens: int = MAX_TOKENS_PER_CHUNK,
        seed: int | None = None,
        config: str | None = None,
        tokenizer: str | Path | None = None,
        quantization: str = DEFAULT_MIX,
    ) -> TTSModel:
        """`model`: a pocket-tts GGUF; a released `model.safetensors` (converted on first use to
        `quantization` and cached; give `config` unless the file names it, and `tokenizer`); a
        released model name (downloaded with huggingface_hub when installed and online); or None
        for the embedded default, a synthetic english model (not speech) made on first use.
        `temp` and `eos_threshold` default to the model's own values (0.3 and -4.0 for english)."""
        _check_threads("threads", threads)
        _check_threads("mimi_threads", mimi_threads)
        if (
            isinstance(lsd_decode_steps, bool)
            or not isinstance(lsd_decode_steps, int)
            or not 1 <= lsd_decode_steps <= 64
        ):
            raise ParameterError(f"lsd_decode_steps must be an integer from 1 to 64, got {lsd_decode_steps!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ParameterError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        temp = _check_float("temp", temp, minimum=0.0)
        noise_clamp = _check_float("noise_clamp", noise_clamp, minimum=0.0)
        eos_threshold = _check_float("eos_threshold", eos_threshold, allow_inf=True)
        if frames_after_eos is not None and (not isinstance(frames_after_eos, int) or frames_after_eos < 0):
            raise ParameterError(f"frames_after_eos must be a non-negative integer, got {frames_after_eos!r}")
        if noise_clamp is not None and noise_clamp == 0:
            raise ParameterError("noise_clamp must be positive (or None)")
        get_mix(quantization)  # a typo fails at once, not only when a checkpoint needs converting
        path = resolve_model(model, config=config, tokenizer=tokenizer, quantization=quantization)
        rt = PocketRuntime(path, threads=threads, mimi_threads=mimi_threads, decode_steps=lsd_decode_steps)
        d = rt.defaults()
        settings = GenerationSettings(
            temperature=d.temperature if temp is None else temp,
            eos_threshold=d.eos_threshold if eos_threshold is None else eos_threshold,
            noise_clamp=noise_clamp,
            frames_after_eos=d.frames_after_eos if frames_after_eos is None else frames_after_eos,
        )
        if rt.file.info.weights_kind == "synthetic":
            logger.warning("%s holds synthetic weights: its output is not speech", path)
        return cls(rt, settings, max_tokens, seed)

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self._rt.sample_rate

    @property
    def is_synthetic(self) -> bool:
        """True when the weights are seeded random ones (pocket-quantize --synthetic): not speech."""
        return self._rt.file.info.weights_kind == "synthetic"

    @property
    def has_voice_cloning(self) -> bool:
        return self._rt.file.info.has_encoder

    @property
    def voice_names(self) -> tuple[str, ...]:
        """Voices stored in the model file."""
        return self._rt.file.info.voice_names

    @property
    def model_path(self) -> Path:
        return self._rt.file.path

    @property
    def config(self):
        return self._rt.config

    # ------------------------------------------------------------------ voices
    def get_state_for_audio_prompt(
        self, audio_conditioning: str | Path | np.ndarray, sample_rate: int | None = None, truncate: bool = False
    ) -> VoiceState:
        """A voice state from an audio file (any format soundfile reads, any rate and channels),
        samples + `sample_rate`, a voice stored in the model, or a saved voice-state .safetensors."""
        if isinstance(audio_conditioning, np.ndarray):
            if sample_rate is None:
                raise AudioError("give the sample_rate of the samples")
            wav, rate = _mono(audio_conditioning), int(sample_rate)
            source = "samples"
        else:
            name = str(audio_conditioning)
            if name in self.voice_names:
                return self._checked(stored_voice(self._rt.file, name))
            p = Path(name)
            if p.suffix == ".safetensors":
                return self._checked(load_voice_state(p))
            if not p.is_file():
                raise AudioError(
                    f"{name!r} is neither an audio file nor a voice of this model"
                    + (f" (stored voices: {', '.join(self.voice_names)})" if self.voice_names else "")
                )
            wav, rate = read_audio(p)
            source = str(p)
        if not 1000 <= rate <= 384000:
            raise AudioError(f"sample rate {rate} Hz is out of range")
        if truncate:
            wav = wav[: TRUNCATE_SECONDS * rate]
        if wav.size > MAX_PROMPT_SECONDS * rate:
            raise AudioError(
                f"the voice prompt lasts {wav.size / rate:.0f} s; prompts are limited to {MAX_PROMPT_SECONDS} s "
                f"(truncate=True keeps the first {TRUNCATE_SECONDS} s, as the reference's truncate does)"
            )
        with self._exclusive():
            return clone_voice(self._rt, wav, rate, source=source)

    def _checked(self, state: VoiceState) -> VoiceState:
        return check_fits(state, self._rt.config.flow_lm)

    # ------------------------------------------------------------------ generation
    def generate_audio(self, model_state: VoiceState, text_to_generate: str, **kwargs) -> np.ndarray:
        """The whole audio (float32, `sample_rate`) of `text_to_generate` in the voice of `model_state`;
        takes the keywords of `generate_audio_stream`."""
        chunks = list(self.generate_audio_stream(model_state, text_to_generate, **kwargs))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def generate_audio_with_timestamps(
        self, model_state: VoiceState, text_to_generate: str, **kwargs
    ) -> TimestampedAudio:
        """The whole audio and its words with start and end times in seconds (`WordTimestamp`s, in
        order); the keywords are `generate_audio_stream`'s."""
        audio, words = [], []
        for item in self.generate_audio_stream(model_state, text_to_generate, timestamps=True, **kwargs):
            if isinstance(item, np.ndarray):
                audio.append(item)
            elif isinstance(item, WordEnd):
                words.append(WordTimestamp(item.word, item.word_index, item.start_time, item.end_time))
        return TimestampedAudio(np.concatenate(audio) if audio else np.zeros(0, np.float32), words)

    def generate_audio_stream(
        self,
        model_state: VoiceState,
        text_to_generate: str,
        *,
        max_tokens: int | None = None,
        frames_after_eos: int | None = None,
        stop: threading.Event | None = None,
        seed: int | None = None,
        markup: bool = True,
        timestamps: bool = False,
        first_chunk_tokens: int | None = None,
    ) -> Iterator[np.ndarray | WordStart | WordEnd]:
        """Audio chunks (one latent frame, 80 ms, each) as they are decoded. The FlowLM and the Mimi
        decoder's transformer run on a worker thread ahead of the SEANet decoder, which runs in the
        caller's thread; setting `stop` ends within a frame.

        With `markup`, pauses in the text (`[pause:1.5]`, `[pause:300ms]`, `<break time="1.5s"/>`, optionally
        in `<speak>...</speak>`) split it: each side is chunked and generated as a text of its own would be,
        and each pause is round(seconds * sample_rate) zeros, in pieces of at most a frame. The sampling
        noise is one sequence across chunks and pauses (a pause draws none), so `A [pause:1] B` speaks A and
        B exactly as two calls `generate_audio(A)`, `generate_audio(B)` in a row do. Errors in the markup
        (`MarkupError`, a `ParameterError`) are raised here, before any audio; `markup=False` speaks the text
        as written.

        With `timestamps`, `WordStart` and `WordEnd` events come in the stream too, each before the
        audio chunk of the frame it happened at (a word still open when a text chunk's audio ends,
        or the stream is stopped, ends there). Their times, in seconds, count every sample yielded
        before them. A config without timestamp heads raises `TimestampsUnavailable`.

        `first_chunk_tokens` (off by default: the reference's chunking) trades the reference's
        chunking for first-audio latency: a first chunk prompted with more tokens than this is cut
        short at its last clause end (, ; : or a dash) within the budget, else at a word boundary,
        so that its text prompt is short. This changes where the chunks split: the head is spoken
        as a chunk of its own, ended with a period by the text rules, and the rest of that chunk
        follows as the next one."""
        if not isinstance(model_state, VoiceState):
            raise VoiceStateError("model_state must come from get_state_for_audio_prompt or load_voice_state")
        self._checked(model_state)
        if not isinstance(text_to_generate, str):
            raise ParameterError("the text must be a string")
        if not isinstance(markup, bool):
            raise ParameterError(f"markup must be True or False, got {markup!r}")
        max_tokens = self._max_tokens if max_tokens is None else max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ParameterError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        stop = stop or threading.Event()
        rng = self._rng if seed is None else np.random.default_rng(seed)
        settings = self._settings
        if frames_after_eos is not None:
            settings = dataclasses.replace(settings, frames_after_eos=frames_after_eos)
        if not isinstance(timestamps, bool):
            raise ParameterError(f"timestamps must be True or False, got {timestamps!r}")
        if first_chunk_tokens is not None and (
            isinstance(first_chunk_tokens, bool) or not isinstance(first_chunk_tokens, int) or first_chunk_tokens < 1
        ):
            raise ParameterError(f"first_chunk_tokens must be a positive integer, got {first_chunk_tokens!r}")
        heads = timestamp_heads(self._rt.config.name) if timestamps else ()
        segments = parse_markup(text_to_generate) if markup else [text_to_generate]
        chunks = text_chunks(self._rt, segments, max_tokens)
        if first_chunk_tokens is not None and isinstance(chunks[0], str):
            chunks = shorten_first_chunk(self._rt.tokenizer, chunks, self._rt.config.text, first_chunk_tokens)
        word_chunks = None
        if heads:
            spoken = [chunk for chunk in chunks if not isinstance(chunk, Silence)]
            word_chunks = self._rt.timestamp_chunks(spoken_text(segments), spoken)
        stream = speak_chunks(self._rt, model_state.snapshot, chunks, settings, rng, stop, heads, word_chunks)
        return self._locked(stream)

    def generate_audio_for_text_stream(
        self,
        model_state: VoiceState,
        text_stream: Iterable[str],
        *,
        max_tokens: int | None = None,
        frames_after_eos: int | None = None,
        stop: threading.Event | None = None,
        seed: int | None = None,
        markup: bool = True,
    ) -> Iterator[np.ndarray]:
        """Audio chunks for a text that arrives in pieces (`text_stream`: e.g. an LLM's tokens, or
        words as they are typed), spoken sentence by sentence as each one ends.

        A sentence ends where `generate_audio_stream` would end it (after . ! or ?, never at a
        decimal point) once the whitespace after it has arrived, or when `text_stream` is exhausted;
        each sentence is then spoken as `generate_audio_stream(model_state, sentence)` speaks it
        (same chunks, same tokens, same noise from the same seed), so sentences are not grouped into
        chunks as they are in a whole text. The samples are the same up to float rounding at F32. With
        quantized matrices they differ by about the quantization error: a prompt fed in pieces is
        multiplied in other groups of rows than one fed whole, and a rounding that differs can move
        an activation across a step of ggml's 8-bit activation quantization; the streamed audio is
        as close to F32's as the one-shot audio is (tests/test_text_stream.py).

        While a sentence is being written, the FlowLM is prompted with its complete words (those
        followed by whitespace) as far as the text rules and the tokenizer leave them settled, so
        that when it ends only its last few tokens, one FlowLM step and one Mimi frame stand between
        it and its first audio. Pieces are read in the caller's thread, between sentences: a slow
        `text_stream` only delays what comes after it.

        With `markup`, each sentence's pauses are played as `generate_audio_stream` plays them (a
        `<speak>` wrapper must then open and close within one sentence); a sentence whose markup is
        malformed raises `MarkupError` when it ends, after the audio of the sentences before it."""
        if not isinstance(model_state, VoiceState):
            raise VoiceStateError("model_state must come from get_state_for_audio_prompt or load_voice_state")
        self._checked(model_state)
        if isinstance(text_stream, str):
            text_stream = (text_stream,)
        try:
            pieces = iter(text_stream)
        except TypeError:
            raise ParameterError(
                f"text_stream must be an iterable of strings, got {type(text_stream).__name__}"
            ) from None
        if not isinstance(markup, bool):
            raise ParameterError(f"markup must be True or False, got {markup!r}")
        max_tokens = self._max_tokens if max_tokens is None else max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ParameterError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        settings = self._settings
        if frames_after_eos is not None:
            settings = dataclasses.replace(settings, frames_after_eos=frames_after_eos)
        rng = self._rng if seed is None else np.random.default_rng(seed)
        stop = stop or threading.Event()
        stream = speak_text_stream(self._rt, model_state.snapshot, pieces, settings, rng, stop, max_tokens, markup)
        return self._locked(stream)

    def sentence_pieces(self) -> SentencePieces:
        """A cutter of text arriving in pieces into the sentences `generate_audio_for_text_stream`
        ends (see `SentencePieces`), for a caller that speaks a stream with one call per sentence:
        each call then speaks its sentence as the whole stream would, prompted while it is written."""
        return SentencePieces(self._rt.tokenizer, self.config.text)

    def _locked(self, stream: Iterator[T]) -> Iterator[T]:
        """`stream`, run while this model is held: a second generation meanwhile is a `BusyError`."""
        with self._exclusive():
            yield from stream

    def _exclusive(self):
        model = self

        class _Guard:
            def __enter__(self):
                if not model._lock.acquire(blocking=False):
                    raise BusyError("this TTSModel is already generating; use one instance per thread")

            def __exit__(self, *exc):
                model._lock.release()

        return _Guard()

    def close(self) -> None:
        self._rt.close()


def _mono(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples)
    if a.dtype.kind not in "fiu":
        raise AudioError(f"samples of dtype {a.dtype} are not audio")
    if a.dtype.kind in "iu":  # integer PCM to [-1, 1)
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    a = a.astype(np.float32)
    if a.ndim == 2:  # (samples, channels) as soundfile gives them, or (channels, samples) as torch
        a = a.mean(axis=1 if a.shape[0] >= a.shape[1] else 0)
    if a.ndim != 1:
        raise AudioError(f"samples of shape {a.shape} are not mono or (samples, channels) audio")
    return a
