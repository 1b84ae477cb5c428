"""A loaded pocket-tts GGUF: its tokenizer, FlowLM, Mimi decoder (and encoder on demand), and the
latent frames of one chunk of text. `pipeline.py` turns them into a stream of audio.

Weights are mapped once and shared; the FlowLM and the Mimi decoder each have their own CPU backend
(and thread count), so the two can run on separate threads (as the reference does).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocket_ggml.format.names import Role, from_gguf
from pocket_ggml.ggml_binding import GGML_TYPE_F16, GGML_TYPE_F32, repackable
from pocket_ggml.runtime.build_check import warn_if_slow_build
from pocket_ggml.runtime.flow_lm import FlowLM, FlowLMSnapshot, sample_noise
from pocket_ggml.runtime.generate import (
    Frame,
    NoiseSource,
    estimate_max_frames,
    frames_after_eos_for,
    generate_latents,
)
from pocket_ggml.runtime.ggml_backend import CpuBackend, WeightStore
from pocket_ggml.runtime.mimi import MimiDecoder, MimiEncoder
from pocket_ggml.runtime.model_file import ModelFile
from pocket_ggml.runtime.text import Tokenizer, prepare_text_prompt
from pocket_ggml.runtime.timestamps import TimestampChunk, timestamp_chunks

_MATMUL_ROLES = {  # matrices read only by mul_mat (not the text table: get_rows)
    Role.LM_TEXT_PROJ,
    Role.LM_INPUT,
    Role.LM_SPEAKER_PROJ,
    Role.LM_ATTN_QKV,
    Role.LM_ATTN_OUT,
    Role.LM_FFN_UP,
    Role.LM_FFN_DOWN,
    Role.LM_Z_PROJ,
    Role.LM_EOS,
    Role.FLOW,
}


def prepare_weights(weights: WeightStore, backend: CpuBackend) -> None:
    """Move the FlowLM matrices ggml has interleaved kernels for (`repackable`: Q4_K/Q4_0 on x86, also
    Q8_0/Q5_K/Q6_K on ARM with dotprod or i8mm) to its CPU_REPACK buffer, whose kernels multiply
    several rows at once: faster steps, and more so for prompts. (The Mimi decoder prepares its own:
    `MimiDecoder`.)"""
    repack = []
    for name in weights:
        row = from_gguf(name)
        shape, ggml_type = weights.shape(name), weights.ggml_type(name)
        if row is not None and row.rule.role in _MATMUL_ROLES and repackable(ggml_type, shape):
            repack.append(name)
    weights.repack(backend, repack)


@dataclass(frozen=True)
class GenerationSettings:
    """What one generation runs with: the model file's `GenerationDefaults` (`PocketRuntime.defaults`)
    as the caller overrode them, and the frame caps."""

    temperature: float
    eos_threshold: float
    noise_clamp: float | None = None
    frames_after_eos: int | None = None  # None: the reference's guess from the text
    max_frames: int | None = None  # None: the reference's cap from the token count


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def thread_plan(threads: int, mimi_threads: int, cpus: int) -> tuple[int, int, int]:
    """ggml threads of (the FlowLM; the Mimi decoder; prompts) for the requested `threads` /
    `mimi_threads` on `cpus` usable CPUs.

    A stream computes on two threads at once (the worker: FlowLM step, then the Mimi transformer; the
    consumer: SEANet): more ggml threads than CPUs in all makes every barrier wait on a descheduled
    thread, which costs far more than the extra thread gains, so each gets at most half the
    CPUs. Prompts (text, voice) run while the decoder is idle and get both counts, at most the CPUs."""
    share = max(1, cpus // 2)
    flow_lm, mimi = min(threads, share), min(mimi_threads, share)
    return flow_lm, mimi, max(flow_lm, min(threads + mimi_threads, cpus))


class PocketRuntime:
    def __init__(self, path: str | Path, threads: int = 1, mimi_threads: int = 1, decode_steps: int = 1):
        warn_if_slow_build()
        self.file = ModelFile(path)
        self.config = self.file.config
        self.threads, self.mimi_threads, self.prompt_threads = thread_plan(threads, mimi_threads, usable_cpus())
        self.backend = CpuBackend(self.threads)
        self.mimi_backend = CpuBackend(self.mimi_threads)
        self.weights = self.file.load_weights(self.backend)
        prepare_weights(self.weights, self.backend)
        record = self.file.tokenizer
        self.tokenizer = Tokenizer(record.data, record.kind, record.processor)
        # K and V come from the in_proj matrix: where it is block-quantized, its error is far above
        # F16's rounding, and an F16 cache halves the cache's memory and what each step reads of it.
        qkv_types = {
            self.weights.ggml_type(f"lm.blk.{i}.attn_qkv.weight") for i in range(self.config.flow_lm.num_layers)
        }
        kv_type = GGML_TYPE_F32 if qkv_types & {GGML_TYPE_F32, GGML_TYPE_F16} else GGML_TYPE_F16
        self.flow_lm = FlowLM(self.config, self.weights, self.backend, decode_steps, self.prompt_threads, kv_type)
        self.mimi = MimiDecoder(self.config, self.weights, self.mimi_backend)

    @property
    def sample_rate(self) -> int:
        return self.config.mimi.sample_rate

    def defaults(self) -> GenerationSettings:
        """The settings of the model file's `GenerationDefaults`."""
        g = self.config.generation
        return GenerationSettings(g.temperature, g.eos_threshold, None, g.frames_after_eos)

    def noise_source(self, rng: np.random.Generator, settings: GenerationSettings) -> NoiseSource:
        """The sampling noise of `settings`, one latent frame's worth a call, drawn from `rng`."""
        dim, temperature, clamp = self.config.mimi.latent_dim, settings.temperature, settings.noise_clamp
        return lambda: sample_noise(rng, dim, temperature, clamp)

    def encode_voice(self, prompt: np.ndarray) -> np.ndarray:
        """Mimi encoder latents (T, speaker_dim) of a prepared voice prompt: mono samples at the model's
        rate, a whole number of frames (`pocket_ggml.voices.audio.prepare_voice_prompt`)."""
        # An encoder for each prompt, closed after it: kept, its kernel copies, state and weight pages
        # would stay in every process that ever cloned a voice (making it is a small part of encoding).
        encoder = MimiEncoder(self.config, self.weights, self.backend, str(self.file.path))
        try:
            with self.backend.threads(self.prompt_threads):
                return encoder.encode(prompt)
        finally:
            encoder.close()

    def voice_state(self, latents: np.ndarray) -> FlowLMSnapshot:
        """The FlowLM cache after the voice prompt: what every text chunk starts from."""
        self.flow_lm.voice_prompt(latents)
        return self.flow_lm.snapshot()

    def tokens(self, text: str, nfkc: bool = False) -> tuple[np.ndarray, int]:
        """Token ids of one chunk of text after the model's text rules, and the words-based
        frames-after-EOS guess. `nfkc`: of the NFKC form of the prepared text, which is what
        pocket-tts-timestamped generates from (and maps words onto) when it times words."""
        prepared = prepare_text_prompt(text, self.config.text)
        text = unicodedata.normalize("NFKC", prepared.text) if nfkc else prepared.text
        return np.asarray(self.tokenizer.encode(text), dtype=np.int32), prepared.frames_after_eos_guess

    def timestamp_chunks(self, source: str, chunks: list[str]) -> list[TimestampChunk]:
        """The word units of each chunk of `source` (the text as the caller gave it), as prepared
        for generation, and the share of each of its tokens in them."""
        prepared = [prepare_text_prompt(chunk, self.config.text).text for chunk in chunks]
        return timestamp_chunks(source, prepared, lambda text: self.tokenizer.pieces(text)[1:])

    def frames(
        self,
        voice: FlowLMSnapshot,
        text: str,
        settings: GenerationSettings,
        noise: NoiseSource,
        should_stop: Callable[[], bool] = lambda: False,
        text_heads: tuple[tuple[int, int], ...] = (),
    ) -> Iterator[Frame]:
        """Latent frames of one chunk of text; with `text_heads`, each with those heads' attention
        scores over the chunk's tokens (word timestamps)."""
        tokens, guess = self.tokens(text, nfkc=bool(text_heads))
        max_frames = settings.max_frames
        if max_frames is None:
            max_frames = estimate_max_frames(len(tokens), self.config.mimi.frame_rate)
        return generate_latents(
            self.flow_lm,
            voice,
            tokens,
            noise,
            eos_threshold=settings.eos_threshold,
            frames_after_eos=frames_after_eos_for(guess, settings.frames_after_eos),
            max_frames=max_frames,
            should_stop=should_stop,
            text_heads=text_heads,
        )

    def close(self) -> None:
        self.mimi.close()
        self.weights.close()
        self.backend.close()
        self.mimi_backend.close()
