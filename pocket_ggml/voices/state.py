"""Voice states: the FlowLM KV cache after a voice prompt, saved, loaded, imported, stored in GGUFs.

Our file format is a safetensors file holding `k` and `v`, each (layers, rows, kv_dim) float32 (K
after RoPE, as in the cache), with metadata naming the format and the model's sizes. The official
package's voice states (`pocket-tts export-voice`: per-layer 5-D caches `[2, 1, T, kv_heads, head]`
under `transformer.layers.N.self_attn/cache`, with `offset`) are imported into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocket_ggml.errors import VoiceStateError
from pocket_ggml.format.config import FlowLMConfig
from pocket_ggml.runtime.flow_lm import FlowLMSnapshot
from pocket_ggml.runtime.model import PocketRuntime
from pocket_ggml.voices.audio import prompt_latents

FORMAT = "pocket-ggml-voice"
FORMAT_VERSION = "1"
_OFFICIAL_KEY = re.compile(r"transformer\.layers\.(\d+)\.self_attn/(cache|offset|current_end|pad)")


@dataclass(frozen=True)
class VoiceState:
    """What `TTSModel.get_state_for_audio_prompt` returns: the FlowLM cache after the voice prompt."""

    snapshot: FlowLMSnapshot
    source: str = ""

    @property
    def num_layers(self) -> int:
        return int(self.snapshot.k.shape[0])

    @property
    def kv_dim(self) -> int:
        return int(self.snapshot.k.shape[2])

    @property
    def n_rows(self) -> int:
        return self.snapshot.n_rows


def clone_voice(runtime: PocketRuntime, wav: np.ndarray, rate: int, source: str = "") -> VoiceState:
    """The voice state of a voice prompt given as mono samples at `rate`."""
    return VoiceState(runtime.voice_state(prompt_latents(runtime, wav, rate)), source=source)


def check_fits(state: VoiceState, flow_lm: FlowLMConfig) -> VoiceState:
    """`state`, if it is a cache of a FlowLM of this shape (layers and K/V width); else a `VoiceStateError`."""
    if state.num_layers != flow_lm.num_layers or state.kv_dim != flow_lm.kv_dim:
        raise VoiceStateError(
            f"voice state for {state.num_layers} layers x {state.kv_dim} does not fit this model "
            f"({flow_lm.num_layers} x {flow_lm.kv_dim})"
        )
    return state


def save_voice_state(state: VoiceState, path: str | Path) -> None:
    """Write atomically (temp file + rename): an interrupted save leaves any previous file intact."""
    import safetensors.numpy

    from pocket_ggml.files import atomic_write

    path = Path(path)
    if not path.parent.is_dir():
        raise VoiceStateError(f"folder {str(path.parent)!r} does not exist")
    with atomic_write(path) as tmp:
        safetensors.numpy.save_file(
            {"k": np.ascontiguousarray(state.snapshot.k), "v": np.ascontiguousarray(state.snapshot.v)},
            str(tmp),
            metadata={"format": FORMAT, "version": FORMAT_VERSION, "source": state.source[:200]},
        )


def load_voice_state(path: str | Path) -> VoiceState:
    """Ours, or an official pocket-tts voice state (imported)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            if meta.get("format") == FORMAT:
                if keys != {"k", "v"}:
                    raise VoiceStateError(f"{path}: a {FORMAT} file holds exactly k and v")
                k, v = f.get_tensor("k").astype(np.float32), f.get_tensor("v").astype(np.float32)
            else:
                k, v = _import_official(path, {key: f.get_tensor(key) for key in keys})
    except (OSError, SafetensorError, ValueError, TypeError) as e:
        raise VoiceStateError(f"cannot read voice state {str(path)!r}: {e}") from None
    if k.ndim != 3 or k.shape != v.shape or k.shape[1] < 1 or not (np.isfinite(k).all() and np.isfinite(v).all()):
        raise VoiceStateError(f"{path}: K/V caches of shapes {k.shape} / {v.shape} are not a usable voice state")
    return VoiceState(FlowLMSnapshot(k, v), source=str(path))


def _import_official(path: Path, tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    layers: dict[int, dict[str, np.ndarray]] = {}
    for key, t in tensors.items():
        m = _OFFICIAL_KEY.fullmatch(key)
        if m is None:
            raise VoiceStateError(f"{path}: not a voice state (unexpected tensor {key!r})")
        layers.setdefault(int(m.group(1)), {})[m.group(2)] = t
    if not layers or sorted(layers) != list(range(len(layers))):
        raise VoiceStateError(f"{path}: not a voice state (no FlowLM layer caches)")
    ks, vs = [], []
    for i in range(len(layers)):
        cache = layers[i].get("cache")
        if cache is None or cache.ndim != 5 or cache.shape[0] != 2 or cache.shape[1] != 1:
            raise VoiceStateError(f"{path}: layer {i} has no [2, 1, T, heads, dim] cache")
        if "offset" in layers[i]:
            rows = int(np.asarray(layers[i]["offset"]).reshape(-1)[0])
        elif "current_end" in layers[i]:  # older exports: the length of this tensor is the offset
            rows = int(layers[i]["current_end"].shape[0])
        else:
            rows = cache.shape[2]
        if not 1 <= rows <= cache.shape[2]:
            raise VoiceStateError(f"{path}: layer {i} offset {rows} outside its cache of {cache.shape[2]}")
        t, h, d = cache.shape[2:]
        ks.append(cache[0, 0, :rows].reshape(rows, h * d))
        vs.append(cache[1, 0, :rows].reshape(rows, h * d))
    if len({k.shape for k in ks}) != 1:
        raise VoiceStateError(f"{path}: layers hold different numbers of rows")
    return np.stack(ks).astype(np.float32), np.stack(vs).astype(np.float32)
