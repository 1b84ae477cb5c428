"""Where models come from: `resolve_model` turns what a user gives `TTSModel.load_model` into a GGUF path.

- a GGUF, as is;
- a released `model.safetensors`, converted on first use and cached;
- a released model name, downloaded with huggingface_hub (optional, online only);
- nothing: the embedded default, a synthetic english Q4_K_M model with one stored voice
  (`synthetic_model`), made on first use in the user cache directory.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from pocket_ggml.errors import CheckpointError, ModelNotAvailable, TokenizerError
from pocket_ggml.format.config import DEFAULT_CONFIG, DEFAULT_MIX, load_released_config, released_config_names
from pocket_ggml.format.tokenizer import read_tokenizer, synthetic_tokenizer_record
from pocket_ggml.quantize.checkpoint import SafetensorsCheckpoint
from pocket_ggml.quantize.convert import convert
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.voices.store import convert_with_voices, synthetic_voice_audio

DEFAULT_VOICE = "synthetic"
CACHE_VERSION = (
    "v3"  # v2: synthetic checkpoints identical across machines (float64 freqs); v3: Q4_K_M's Mimi transformers Q8_0
)
HF_REPO = "kyutai/pocket-tts"


def cache_dir() -> Path:
    import platformdirs

    d = Path(os.environ.get("POCKET_GGML_CACHE") or platformdirs.user_cache_dir("pocket-ggml"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def synthetic_model(mix: str = DEFAULT_MIX) -> Path:
    """The synthetic english model (seed 0) at `mix` with a stored synthetic voice, made once and
    cached; at `DEFAULT_MIX` it is the embedded default."""
    m = get_mix(mix)
    path = cache_dir() / f"synthetic-{DEFAULT_CONFIG}-{m.name.lower()}-{CACHE_VERSION}.gguf"
    if not path.exists():
        cfg = load_released_config(DEFAULT_CONFIG)
        tok = synthetic_tokenizer_record(cfg.flow_lm.n_bins)
        audio = synthetic_voice_audio(cfg.mimi.sample_rate)
        convert_with_voices(
            lambda out, states: convert(cfg, out, m, tok, synthetic_seed=0, voices=states),
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
    """The GGUF path of `model` (see the module's docstring); `config`, `tokenizer` and `quantization`
    apply to a released checkpoint."""
    if model is None:
        return synthetic_model()
    p = Path(model)
    if p.suffix == ".gguf" or p.is_file() and p.suffix != ".safetensors":
        return p  # ModelFile reports a missing or invalid file
    if p.suffix == ".safetensors":
        return _convert_checkpoint(p, config, tokenizer, quantization)
    return _download(str(model), quantization)


def _convert_checkpoint(src: Path, config: str | None, tokenizer: str | Path | None, quantization: str) -> Path:
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
