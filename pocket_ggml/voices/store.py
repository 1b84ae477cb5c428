"""Voices stored in a GGUF.

Stored voices are FlowLM caches computed with the very weights of the file they are stored in
(`pocket-quantize --voice NAME=FILE`), so that quantized models get their own exact voice state.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pocket_ggml.errors import VoiceStateError
from pocket_ggml.format.gguf_keys import voice_tensor_name
from pocket_ggml.runtime.flow_lm import FlowLMSnapshot
from pocket_ggml.runtime.model import PocketRuntime
from pocket_ggml.runtime.model_file import ModelFile
from pocket_ggml.voices.audio import read_audio
from pocket_ggml.voices.state import VoiceState, check_fits, clone_voice, load_voice_state


def synthetic_voice_audio(sample_rate: int, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like signal (a gliding harmonic tone under a syllable-rate envelope):
    the voice prompt of the synthetic default model, which has no real voice to clone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tone = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 9))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.2 * tone * envelope + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def voice_states_for(
    gguf: Path, sources: Mapping[str, str | Path | np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """K/V caches of each voice, computed with the model in `gguf`: an audio file, a voice-state
    .safetensors (ours or official), or 24 kHz samples."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rt = PocketRuntime(gguf)
    try:
        for name, src in sources.items():
            if isinstance(src, np.ndarray):
                state = clone_voice(rt, src, rt.sample_rate)
            elif Path(src).suffix == ".safetensors":
                state = check_fits(load_voice_state(src), rt.config.flow_lm)
            else:
                state = clone_voice(rt, *read_audio(src))
            out[name] = (state.snapshot.k, state.snapshot.v)
    finally:
        rt.close()
    return out


def stored_voice(model_file: ModelFile, name: str) -> VoiceState:
    """The voice stored in `model_file` under `name`."""
    k = np.array(model_file.raw(voice_tensor_name(name, "k")), dtype=np.float32)
    v = np.array(model_file.raw(voice_tensor_name(name, "v")), dtype=np.float32)
    if k.ndim != 3 or k.shape != v.shape or not (np.isfinite(k).all() and np.isfinite(v).all()):
        raise VoiceStateError(f"{model_file.path}: stored voice {name!r} is damaged")
    return VoiceState(FlowLMSnapshot(k, v), source=f"{model_file.path}#{name}")


def convert_with_voices(convert_fn, output: Path, voices: Mapping[str, str | Path | np.ndarray]) -> object:
    """`convert_fn(path, voice_states)` writes a GGUF; with voices it runs twice: once to a temporary
    file whose weights compute the voice states, then to `output` with those states stored."""
    if not voices:
        return convert_fn(output, None)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".voices.gguf")
    os.close(fd)
    try:
        convert_fn(Path(tmp), None)
        states = voice_states_for(Path(tmp), voices)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return convert_fn(output, states)
