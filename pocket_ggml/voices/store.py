"""Where models and their stored voices come from.

`resolve_model` turns what a user gives `TTSModel.load_model` into a GGUF path: a GGUF as is; a
released `model.safetensors` converted on first use and cached; a released model name downloaded
with huggingface_hub (optional, online only); or nothing, for the embedded default: a synthetic
english Q4_K_M model with one stored voice, made on first use in the user cache directory.

Stored voices are FlowLM caches computed with the very weights of the file they are stored in
(`pocket-quantize --voice NAME=FILE`), so that quantized models get their own exact voice state.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pocket_ggml.errors import ModelNotAvailable, TokenizerError, VoiceStateError
from pocket_ggml.format.gguf_keys import voice_tensor_name
from pocket_ggml.voices.state import VoiceState, load_voice_state

DEFAULT_CONFIG = "english"
DEFAULT_MIX = "Q4_K_M"
DEFAULT_VOICE = "synthetic"
CACHE_VERSION = "v2"  # v2: synthetic checkpoints identical across machines (float64 freqs)
HF_REPO = "kyutai/pocket-tts"


def cache_dir() -> Path:
    import platformdirs

    d = Path(os.environ.get("POCKET_GGML_CACHE") or platformdirs.user_cache_dir("pocket-ggml"))
    d.mkdir(parents=True, exist_ok=True)
    return d


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
    from pocket_ggml.runtime.model import PocketRuntime
    from pocket_ggml.voices.audio import read_audio

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rt = PocketRuntime(gguf)
    try:
        shape = rt.flow_lm.shape
        for name, src in sources.items():
            if isinstance(src, np.ndarray):
                snap = rt.voice_state(rt.encode_voice(src, rt.sample_rate))
            elif Path(src).suffix == ".safetensors":
                snap = load_voice_state(src).snapshot
                if snap.k.shape[0] != shape.num_layers or snap.k.shape[2] != shape.attention.kv_dim:
                    raise VoiceStateError(f"voice state {src} does not fit this model")
            else:
                snap = rt.voice_state(rt.encode_voice(*read_audio(src)))
            out[name] = (snap.k, snap.v)
    finally:
        rt.close()
    return out


def stored_voice(model_file, name: str) -> VoiceState:
    k = np.array(model_file.raw(voice_tensor_name(name, "k")), dtype=np.float32)
    v = np.array(model_file.raw(voice_tensor_name(name, "v")), dtype=np.float32)
    if k.ndim != 3 or k.shape != v.shape or not (np.isfinite(k).all() and np.isfinite(v).all()):
        raise VoiceStateError(f"{model_file.path}: stored voice {name!r} is damaged")
    from pocket_ggml.runtime.flow_lm import FlowLMSnapshot

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


def default_model_path() -> Path:
    """The embedded default: synthetic english Q4_K_M with a stored synthetic voice."""
    path = cache_dir() / f"synthetic-{DEFAULT_CONFIG}-{DEFAULT_MIX.lower()}-{CACHE_VERSION}.gguf"
    if not path.exists():
        from pocket_ggml.format.config import load_released_config
        from pocket_ggml.format.tokenizer import check_tokenizer, synthetic_tokenizer
        from pocket_ggml.quantize.convert import convert
        from pocket_ggml.quantize.policy import get_mix

        cfg = load_released_config(DEFAULT_CONFIG)
        tok = check_tokenizer(synthetic_tokenizer(cfg.flow_lm.n_bins), "sentencepiece", cfg.flow_lm.n_bins)
        audio = synthetic_voice_audio(cfg.mimi.sample_rate)
        convert_with_voices(
            lambda out, states: convert(cfg, out, get_mix(DEFAULT_MIX), tok, synthetic_seed=0, voices=states),
            path,
            {DEFAULT_VOICE: audio},
        )
    return path


def _converted_path(src: Path, quantization: str, config: str | None) -> Path:
    st = src.stat()
    key = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{quantization}|{config}|{CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    d = cache_dir() / "converted"
    d.mkdir(exist_ok=True)
    return d / f"{src.stem}-{quantization.lower()}-{digest}.gguf"


def resolve_model(
    model: str | Path | None, *, config: str | None, tokenizer: str | Path | None, quantization: str
) -> Path:
    if model is None:
        return default_model_path()
    p = Path(model)
    if p.suffix == ".gguf" or p.is_file() and p.suffix != ".safetensors":
        return p  # ModelFile reports a missing or invalid file
    if p.suffix == ".safetensors":
        return _convert_checkpoint(p, config, tokenizer, quantization)
    return _download(str(model), quantization)


def _convert_checkpoint(src: Path, config: str | None, tokenizer: str | Path | None, quantization: str) -> Path:
    from pocket_ggml.errors import CheckpointError
    from pocket_ggml.format.config import load_released_config
    from pocket_ggml.format.tokenizer import read_tokenizer
    from pocket_ggml.quantize.checkpoint import SafetensorsCheckpoint
    from pocket_ggml.quantize.convert import convert
    from pocket_ggml.quantize.policy import get_mix

    if not src.is_file():
        raise CheckpointError(f"{src}: no such file")
    mix = get_mix(quantization)
    out = _converted_path(src, mix.name, config)
    if out.exists():
        return out
    if tokenizer is None:
        raise TokenizerError(f"converting {src} needs its tokenizer: load_model(..., tokenizer='tokenizer.model')")
    ckpt = SafetensorsCheckpoint(src)
    name = config or ckpt.metadata.get("pocket_tts_config")
    if name is None:
        raise CheckpointError(f"{src} does not name its config: load_model(..., config='english')")
    cfg = load_released_config(name)
    convert(cfg, out, mix, read_tokenizer(tokenizer, cfg.flow_lm.n_bins), checkpoint=ckpt)
    return out


def _download(name: str, quantization: str) -> Path:
    from pocket_ggml.format.config import released_config_names

    local = "give a local .gguf, or a released model.safetensors with tokenizer=..., or None for the synthetic default"
    if name not in released_config_names():
        raise ModelNotAvailable(f"{name!r} is not a file nor a released model name; {local}")
    try:
        import huggingface_hub
    except ImportError:
        raise ModelNotAvailable(
            f"downloading {name!r} needs huggingface_hub (pip install huggingface_hub); {local}"
        ) from None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not _online():
        raise ModelNotAvailable(f"cannot download {name!r}: no connection to huggingface.co; {local}")
    try:
        weights = huggingface_hub.hf_hub_download(HF_REPO, f"languages/{name}/model.safetensors")
        tok = None
        for fname in ("tokenizer.model", "tokenizer.json"):
            try:
                tok = huggingface_hub.hf_hub_download(HF_REPO + "-without-voice-cloning", f"languages/{name}/{fname}")
                break
            except Exception:  # the other tokenizer format may be the one published
                continue
    except Exception as e:
        raise ModelNotAvailable(f"downloading {name!r} failed ({type(e).__name__}: {e}); {local}") from None
    if tok is None:
        raise ModelNotAvailable(f"no tokenizer published for {name!r}; {local}")
    return _convert_checkpoint(Path(weights), name, tok, quantization)


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
