"""Seeded synthetic checkpoints in the exact released tensor layout, made with numpy alone.

No trained weights can be downloaded here, so parity is proven on random weights that both sides
load. PyTorch's default init is degenerate for that purpose (../shared/docs/reference-architecture.md,
"Pitfalls": `speaker_proj_weight` is zeros so the voice has no effect, and Mimi's convs shrink the
signal ~3x each so the waveform is a DC offset). The init below follows the shared torch-side maker
(make_random_weights.py), so the model behaves like it: every tensor draws from its own generator
seeded by (seed, crc32(name)), so the values do not depend on the order tensors are made in.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pocket_ggml.files import atomic_write
from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.names import expected_tensors

MIMI_CONV_GAIN = 2.0  # variance-preserving conv init: N(0, 2 / fan_in)
MIMI_LAYER_SCALE = 0.2  # the config's 0.01 makes the Mimi transformers ~identity
MIMI_LAST_CONV_SCALE = 0.05  # so the waveform is audio-sized (std ~0.1-0.3)
TIMESTEP_MAX_PERIOD = 10000.0


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _uniform_fan_in(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float = 1.0, mean: float = 0.0) -> np.ndarray:
    return (mean + std * rng.standard_normal(size=shape, dtype=np.float32)).astype(np.float32)


def _init(
    name: str, shape: tuple[int, ...], rng: np.random.Generator, linear_fan_in: dict[str, int], last_decoder_conv: str
) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith(".freqs"):  # a buffer: TimestepEmbedder's fixed frequencies
        half = shape[0]
        # in float64, rounded once: numpy's float32 exp differs by an ulp between x86 and ARM, and the
        # synthetic checkpoint must be the same bytes on every machine
        return np.exp(-math.log(TIMESTEP_MAX_PERIOD) * np.arange(half, dtype=np.float64) / half).astype(np.float32)
    if name in ("flow_lm.bos_emb", "flow_lm.bos_before_voice", "flow_lm.conditioner.embed.weight"):
        return _normal(rng, shape)
    if name == "flow_lm.emb_std":
        return (0.5 + rng.uniform(size=shape)).astype(np.float32)
    if name == "flow_lm.emb_mean":
        return _normal(rng, shape, 0.1)
    if name == "flow_lm.speaker_proj_weight":
        return _normal(rng, shape, 1.0 / math.sqrt(shape[1]))
    if leaf == "alpha":  # the flow head's timestep RMSNorm gain
        return _normal(rng, shape, 0.1, 1.0)
    if leaf == "scale":  # Mimi LayerScale
        return (MIMI_LAYER_SCALE * _normal(rng, shape, 0.1, 1.0)).astype(np.float32)
    if len(shape) == 1 and _is_norm(name):
        return _normal(rng, shape, 0.1, 1.0) if leaf == "weight" else _normal(rng, shape, 0.02)
    if name.startswith("mimi.") and leaf == "bias":  # conv biases (the transformers have none)
        return _normal(rng, shape, 0.01)
    if name.startswith("mimi.") and len(shape) == 3:
        if ".convtr." in name:  # ConvTranspose1d (C_in, C_out/groups, K), K = 2 * stride
            fan_in = (1 if shape[1] == 1 else shape[0]) * 2
        else:  # Conv1d (C_out, C_in, K)
            fan_in = shape[1] * shape[2]
        w = _normal(rng, shape, math.sqrt(MIMI_CONV_GAIN / fan_in))
        return (w * MIMI_LAST_CONV_SCALE).astype(np.float32) if name == last_decoder_conv else w
    if name.startswith("mimi."):  # Mimi transformer linears
        return _normal(rng, shape, 1.0 / math.sqrt(shape[1]))
    # FlowLM and flow-head linears (weights and biases) keep PyTorch's default.
    fan_in = shape[1] if len(shape) == 2 else linear_fan_in[name]
    return _uniform_fan_in(rng, shape, fan_in)


def _is_norm(name: str) -> bool:
    return any(k in name for k in ("norm1.", "norm2.", "out_norm.", "in_ln."))


def synthetic_tensors(cfg: PocketConfig, seed: int, with_encoder: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    """(released name, float32 array) for every tensor of `cfg`, in state_dict order."""
    shapes = expected_tensors(cfg, with_encoder=with_encoder)
    # a bias takes the fan-in of the weight beside it (nn.Linear's bias init)
    linear_fan_in = {
        n[: -len("weight")] + "bias": s[1] for n, s in shapes.items() if n.endswith(".weight") and len(s) == 2
    }
    last_decoder_conv = [n for n in shapes if n.startswith("mimi.decoder.model.") and n.endswith(".conv.weight")][-1]
    for name, shape in shapes.items():
        yield name, _init(name, shape, _rng(seed, name), linear_fan_in, last_decoder_conv)


def save_synthetic_safetensors(cfg: PocketConfig, seed: int, path: Path) -> None:
    """The synthetic weights in the released layout (F32), for the reference to load; atomic."""
    import safetensors.numpy

    tensors = dict(synthetic_tensors(cfg, seed))
    meta = {
        "pocket_tts_config": cfg.name,
        "seed": str(seed),
        "generator": "pocket-ggml synthetic (NOT trained weights)",
    }
    with atomic_write(path) as tmp:
        safetensors.numpy.save_file(tensors, str(tmp), metadata=meta)
