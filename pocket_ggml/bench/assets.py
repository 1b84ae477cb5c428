"""What a benchmark runs on: the GGUF, the voice wav, the text, and (for --reference) the identical
weights in the released safetensors layout with the model's own tokenizer as a file.

Everything generated is deterministic and cached: synthetic GGUFs at any mix (`models.synthetic_model`:
the embedded default at Q4_K_M, the other mixes made exactly as it is, stored voice included, so file
sizes compare) in the user cache; under its `bench/`, the synthetic checkpoint in the released layout
(`save_synthetic_safetensors`, seed 0 by default: the very weights the GGUF was quantized from), and
the synthetic voice as a 16-bit wav (both sides read the same file; 16-bit goes through the same
`wave` path in the reference).
"""

from __future__ import annotations

import hashlib
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocket_ggml.errors import BenchSetupError, PocketError
from pocket_ggml.format.config import DEFAULT_MIX, PocketConfig
from pocket_ggml.models import CACHE_VERSION, cache_dir, resolve_model, synthetic_model
from pocket_ggml.voices.store import synthetic_voice_audio

SPEECH_WORDS_PER_SECOND = 2.6  # a typical read-speech rate: sizes the default text to the frames
DEFAULT_TEXT_SOURCE = (
    "The morning train was late again, so the small station filled with people who had somewhere "
    "to be. A woman near the window read the same page of her book three times, while two students "
    "argued quietly about a football match that nobody else remembered. When the train finally "
    "arrived, everyone moved at once, and for a moment the platform felt like a river. Later that day "
    "the rain stopped, the streets dried in the low sun, and the city went back to its usual noise. "
    "Somewhere across town a baker pulled the last loaves from the oven, counted them twice, and "
    "smiled at the thought of closing early for once."
)


def bench_cache() -> Path:
    d = cache_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def default_text(frames: int, frame_rate: float = 12.5) -> str:
    """A passage about as long as `frames` frames of read speech (at least five words), ending
    with a period; the source passage repeats when more is needed."""
    n = max(5, math.ceil(frames / frame_rate * SPEECH_WORDS_PER_SECOND))
    words = DEFAULT_TEXT_SOURCE.split()
    out = [words[i % len(words)] for i in range(n)]
    return " ".join(out).rstrip(",.;:") + "."


def resolve_gguf(model: str | None, mix: str | None, config: str | None, tokenizer: str | None) -> Path:
    """The GGUF to benchmark: the synthetic english at `mix` (default Q4_K_M) without `model`; a
    .gguf as is; a released .safetensors (or a released name) converted to `mix` and cached."""
    if model is None:
        return synthetic_model(mix or DEFAULT_MIX)
    p = Path(model)
    if p.suffix == ".gguf" or (p.is_file() and p.suffix != ".safetensors"):
        if mix is not None:
            raise BenchSetupError("--type applies to the synthetic default or a .safetensors checkpoint, not a GGUF")
        if not p.is_file():
            raise BenchSetupError(f"{model}: no such file")
        return p
    return resolve_model(model, config=config, tokenizer=tokenizer, quantization=mix or DEFAULT_MIX)


def write_wav16(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM, as the reference CLI writes it (clip, x32767)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)


def voice_wav(voice: str | None, sample_rate: int = 24000) -> Path:
    """The voice prompt file: `voice` (an audio file) or the synthetic default voice as a wav."""
    if voice is not None:
        p = Path(voice)
        if not p.is_file():
            raise BenchSetupError(f"--voice {voice}: no such audio file (pocket-bench encodes a voice from audio)")
        return p
    path = bench_cache() / f"synthetic-voice-{sample_rate // 1000}k-{CACHE_VERSION}.wav"
    if not path.exists():
        write_wav16(path, synthetic_voice_audio(sample_rate), sample_rate)
    return path


@dataclass(frozen=True)
class ModelFacts:
    """What the benchmark needs to know about a GGUF (read once, in the parent)."""

    path: Path
    config: PocketConfig
    config_name: str
    quant_mix: str
    weights_kind: str  # "synthetic" or "released"
    synthetic_seed: int | None
    tokenizer_kind: str
    tokenizer_bytes: bytes
    file_bytes: int


def model_facts(path: Path) -> ModelFacts:
    from pocket_ggml.runtime.model_file import ModelFile

    mf = ModelFile(path)
    info = mf.info
    return ModelFacts(
        path=Path(path),
        config=mf.config,
        config_name=mf.config.name,
        quant_mix=info.quant_mix,
        weights_kind=info.weights_kind,
        synthetic_seed=info.synthetic_seed,
        tokenizer_kind=info.tokenizer_kind,
        tokenizer_bytes=mf.tokenizer_bytes(),
        file_bytes=Path(path).stat().st_size,
    )


def reference_weights(facts: ModelFacts, model_arg: str | None) -> Path:
    """The same weights in the released layout, for the reference: the synthetic checkpoint the GGUF
    was made from (regenerated from its config and seed, cached), or the released .safetensors the
    user gave."""
    if facts.weights_kind == "synthetic":
        if facts.synthetic_seed is None:
            raise BenchSetupError(f"{facts.path} is synthetic but does not record its seed")
        from pocket_ggml.format.config import load_released_config
        from pocket_ggml.quantize.synthetic import save_synthetic_safetensors

        try:
            cfg = load_released_config(facts.config_name)
        except PocketError:
            raise BenchSetupError(
                f"--reference: config {facts.config_name!r} of {facts.path} is not a released config"
            ) from None
        path = bench_cache() / f"synthetic-{facts.config_name}-seed{facts.synthetic_seed}-{CACHE_VERSION}.safetensors"
        if not path.exists():
            save_synthetic_safetensors(cfg, facts.synthetic_seed, path)
        return path
    if model_arg is not None and Path(model_arg).suffix == ".safetensors" and Path(model_arg).is_file():
        return Path(model_arg)
    raise BenchSetupError(
        "--reference on real weights needs the released checkpoint: give --model model.safetensors (with --tokenizer)"
    )


def write_tokenizer(facts: ModelFacts, folder: Path) -> Path:
    """The model's own tokenizer bytes as a file the reference can load (.model or .json)."""
    suffix = ".json" if facts.tokenizer_kind == "tokenizers" else ".model"
    digest = hashlib.sha256(facts.tokenizer_bytes).hexdigest()[:12]
    path = folder / f"tokenizer-{digest}{suffix}"
    path.write_bytes(facts.tokenizer_bytes)
    return path
