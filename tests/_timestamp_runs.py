"""A synthetic checkpoint whose timestamp heads read the text in order, and fork runs on it.

On plain synthetic weights the heads pocket-tts-timestamped reads barely move along the text, so a
comparison of word events would compare two nearly empty lists. `shaped_model` edits the query and
key rows of exactly those heads (the fork's `timestamp_heads` of the config), and the norm1 bias of
their layers, in the released-layout checkpoint, before either side loads it: each such head's
query and key become constant vectors whose RoPE product peaks when the key lies `lag` positions
before the query. At each frame the head then looks at the token `lag` rows back, one token further
per frame, so the words of a text of about `lag` tokens are read one after the other. The product is
symmetric about its peak: with an integer `lag` two keys at equal distance would tie exactly, for
float rounding to decide differently on the two sides, hence e.g. 15.75. The rest of the model is the
seeded synthetic one. Both sides load the same file: the fork the safetensors, we a GGUF converted
from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from _parity_runs import SEED, _root, made_once
from _reference import shared_path

from pocket_ggml.format.config import PocketConfig, load_released_config
from pocket_ggml.format.tokenizer import read_tokenizer
from pocket_ggml.quantize.checkpoint import SafetensorsCheckpoint
from pocket_ggml.quantize.convert import convert as convert_checkpoint
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.quantize.synthetic import save_synthetic_safetensors
from pocket_ggml.runtime.timestamps import timestamp_heads

PEAK_LOGIT = 3.0  # per frequency pair: the peak stands ~PEAK_LOGIT * head_dim / 16 above far keys
# Added to those layers' norm1 bias along norm1.weight: sum_i b_i / w_i grows by BIAS_SHIFT * d_model,
# so the constant rows stay as small as the synthetic weights. With the synthetic bias alone that sum
# can be ~0.05 (english layer 2), and rows 1/0.05 times larger turn quantization error into noise
# larger than the attention pattern itself.
BIAS_SHIFT = 0.05


def _constant_rows(vector: np.ndarray, norm_w: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """Rows R with R @ LayerNorm(x) == vector for every x: rows along 1/w see only the norm's bias,
    since the normalised x sums to zero (sum_i (w_i n_i + b_i) / w_i = sum_i b_i / w_i)."""
    inv_w = 1.0 / norm_w.astype(np.float64)
    s = float(np.dot(norm_b.astype(np.float64), inv_w))
    assert abs(s) > 1e-3, "the norm's bias leaves no constant direction"
    return np.outer(vector, inv_w / s)


def shaped_tensors(cfg: PocketConfig, tensors: dict[str, np.ndarray], lag: float) -> dict[str, np.ndarray]:
    f = cfg.flow_lm
    d, attn_dim = f.head_dim, f.num_heads * f.head_dim
    group = f.num_heads // f.num_kv_heads
    theta = f.max_period ** (-2.0 * np.arange(d // 2) / d)
    query = np.zeros(d)  # RoPE pairs (x[2i], x[2i+1]): q.k over a distance t is sum_i cos(theta_i (t - lag))
    query[0::2], query[1::2] = np.cos(theta * lag), -np.sin(theta * lag)
    query *= PEAK_LOGIT
    key = np.zeros(d)
    key[0::2] = 1.0
    out = dict(tensors)
    heads = timestamp_heads(cfg.name)
    for layer in {layer for layer, _ in heads}:
        prefix = f"flow_lm.transformer.layers.{layer}"
        out[f"{prefix}.norm1.bias"] = (
            out[f"{prefix}.norm1.bias"] + np.float32(BIAS_SHIFT) * out[f"{prefix}.norm1.weight"]
        )
    for layer, head in heads:
        prefix = f"flow_lm.transformer.layers.{layer}"
        w_in = out[f"{prefix}.self_attn.in_proj.weight"].astype(np.float64).copy()
        nw, nb = out[f"{prefix}.norm1.weight"], out[f"{prefix}.norm1.bias"]
        w_in[head * d : (head + 1) * d] = _constant_rows(query, nw, nb)
        kv = attn_dim + (head // group) * d
        w_in[kv : kv + d] = _constant_rows(key, nw, nb)
        out[f"{prefix}.self_attn.in_proj.weight"] = w_in.astype(np.float32)
    return out


def shaped_model(config: str, lag: float, mix: str = "F32") -> tuple[Path, Path]:
    """(released-layout safetensors, GGUF `mix`) of the shaped synthetic model (made once)."""
    import safetensors.numpy

    cfg = load_released_config(config)
    st = _root() / f"{config}-shaped{lag}.safetensors"
    gguf = _root() / f"{config}-shaped{lag}-{mix}.gguf"
    with made_once(st):
        if not st.exists():
            plain = _root() / f"{config}-shaped{lag}-synthetic-for-shaping.safetensors"
            save_synthetic_safetensors(cfg, SEED, plain)
            tensors = safetensors.numpy.load_file(str(plain))
            meta = {"pocket_tts_config": config, "seed": str(SEED), "generator": "pocket-ggml synthetic, heads shaped"}
            safetensors.numpy.save_file(shaped_tensors(cfg, tensors, lag), str(st), metadata=meta)
            plain.unlink()
    with made_once(gguf):
        if not gguf.exists():
            tok = read_tokenizer(shared_path("assets", "tokenizer.model"), cfg.flow_lm.n_bins)
            convert_checkpoint(cfg, gguf, get_mix(mix), tok, checkpoint=SafetensorsCheckpoint(st))
    return st, gguf


def fork_run(config: str, lag: float, text: str, *, temp: float, frames: int) -> dict:
    """pocket-tts-timestamped on the shaped checkpoint (tests/workers/timestamps_reference.py)."""
    out = _root() / "timestamps" / f"{config}-shaped{lag}-t{temp}-f{frames}-{zlib.crc32(text.encode()):08x}.json"
    with made_once(out):
        if not out.exists():
            st, _ = shaped_model(config, lag)
            cmd = [
                sys.executable,
                str(Path(__file__).parent / "workers" / "timestamps_reference.py"),
                "--weights",
                str(st),
                "--config",
                config,
                "--tokenizer",
                str(shared_path("assets", "tokenizer.model")),
                "--voice-wav",
                str(shared_path("assets", "voices", "speaker-48k.wav")),
                "--text",
                text,
                "--frames",
                str(frames),
                "--seed",
                str(SEED),
                "--temp",
                str(temp),
                "--out",
                str(out),
            ]
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))
