"""The bad-GGUF corpus: case lists, how each case's file is made, and the worker that opens them.

A case is a JSON-able dict `{"id", "base", "op", "args", "expect"}`: which valid base file it starts
from, how it is damaged, and what `ModelFile` must do with it ("error": raise ModelFileError, "ok":
load, "any": either). Cases are made from deterministic seeds, and the parent (test_bad_gguf.py)
describes them while a worker subprocess materialises and opens them, so that an abort or a
segfault kills only the worker:

    python tests/_gguf_corpus.py BASES.json CASES.json WORKDIR

prints one `RESULT {json}` line per case. A file that loads is then used: PocketRuntime (weights
mapped into ggml, tokenizer, FlowLM, Mimi decoder), a text prompt, one FlowLM step, one Mimi frame,
and the Mimi encoder on a short silence when the file has it. During that use only a PocketError
(NaN latents from corrupted weights, say) is acceptable.

Two ways of damaging a file:
- byte surgery on the serialised file (`flip`, `set`, `truncate`, `splice`), at offsets found with
  `layout()` (gguf-py's view of the valid base);
- `rewrite`: the base re-serialised with gguf.GGUFWriter after metadata or tensor edits, which gives
  a structurally valid GGUF whose *content* is wrong (missing keys, out-of-range values, wrong
  shapes or types, missing or extra tensors).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

import numpy as np

BASE_CONFIG = "english_2m_2026-10"
# Address space of a worker: a few hundred MB are used; an allocation sized by a count the file
# merely claims would fail (MemoryError, or a death the parent reports) rather than swap the machine.
ADDRESS_SPACE_LIMIT = 2 << 30
# base name -> (quantization mix, keep the Mimi encoder)
BASES = {"q4": ("Q4_K_M", False), "q8": ("Q8_0", True), "f32": ("F32", False)}
U64_MAX = (1 << 64) - 1


# ------------------------------------------------------------------------------------------------
# Base files and their layout
# ------------------------------------------------------------------------------------------------
def make_bases(folder: Path, names=tuple(BASES)) -> dict[str, str]:
    """The valid synthetic base files, written with the converter (as pocket-quantize does)."""
    from pocket_ggml.format.config import load_released_config
    from pocket_ggml.format.tokenizer import synthetic_tokenizer_record
    from pocket_ggml.quantize.convert import convert
    from pocket_ggml.quantize.policy import get_mix

    cfg = load_released_config(BASE_CONFIG)
    tok = synthetic_tokenizer_record(cfg.flow_lm.n_bins)
    out = {}
    for name in names:
        mix, encoder = BASES[name]
        path = folder / f"base-{name}.gguf"
        convert(cfg, path, get_mix(mix), tok, synthetic_seed=0, keep_encoder=encoder)
        out[name] = str(path)
    return out


def layout(path: str) -> dict:
    """Byte offsets of every part of a valid GGUF, from gguf-py's parse of it."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    base = r.data.ctypes.data

    def at(part) -> int:
        return int(part.ctypes.data - base)

    kv = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        entry = {
            "start": f.offset,
            "key_len": at(f.parts[0]),
            "type": at(f.parts[2]),
            "vtype": int(f.types[0]),
            "end": at(f.parts[-1]) + f.parts[-1].nbytes,
        }
        if f.types[0] == 9:  # ARRAY
            entry |= {"itype": at(f.parts[3]), "count": at(f.parts[4]), "n": int(f.parts[4][0])}
            entry["sub"] = int(f.types[-1]) if len(f.types) > 1 else None
        elif f.types[0] == 8:  # STRING
            entry |= {"str_len": at(f.parts[3]), "str": at(f.parts[4]), "n": int(f.parts[3][0])}
        else:
            entry |= {"value": at(f.parts[3]), "size": int(f.parts[3].nbytes)}
        kv[name] = entry
    tensors = []
    for t in r.tensors:
        p = t.field.parts
        tensors.append(
            {
                "name": t.name,
                "start": t.field.offset,
                "name_len": at(p[0]),
                "n_dims": at(p[2]),
                "dims": at(p[3]),
                "ndim": int(p[2][0]),
                "type": at(p[4]),
                "offset": at(p[5]),
                "rel": int(p[5][0]),
                "data": int(t.data_offset),
                "nbytes": int(t.n_bytes),
                "ggml_type": int(t.tensor_type),
                "shape": [int(d) for d in reversed(t.shape.tolist())],
            }
        )
    kv_start = min(e["start"] for e in kv.values())
    ti_start = tensors[0]["start"]
    ti_end = tensors[-1]["offset"] + 8
    return {
        "size": int(r.data.nbytes),
        "kv": kv,
        "tensors": tensors,
        "kv_start": kv_start,
        "ti_start": ti_start,
        "ti_end": ti_end,
        "data": int(r.data_offset),
    }


# ------------------------------------------------------------------------------------------------
# The case list
# ------------------------------------------------------------------------------------------------
def build_cases(layouts: dict[str, dict]) -> list[dict]:
    """Every case of the corpus, deterministically (fixed seeds), from the layouts of the bases."""
    from pocket_ggml.format.gguf_keys import Keys, config_key

    out: list[dict] = []

    def add(group: str, op: str, args: dict, expect: str, base: str | None = "q4") -> None:
        out.append({"id": f"{group}-{len(out):04d}", "base": base, "op": op, "args": args, "expect": expect})

    def surgery(group: str, steps: list, expect: str = "error", base: str = "q4") -> None:
        add(group, "bytes", {"steps": steps}, expect, base)

    def kv(key: str, value, vtype: str, expect: str = "error", sub: str | None = None, base: str = "q4") -> None:
        add("meta", "rewrite", {"kv_set": {key: [value, vtype, sub]}}, expect, base)

    q4 = layouts["q4"]
    size = q4["size"]

    # -- not a GGUF at all, and paths that are not files
    add("path", "missing", {}, "error", None)
    add("path", "dir", {}, "error", None)
    for kind in ("empty", "text", "wav", "safetensors", "zip", "gguf_magic_only", "gguf_empty"):
        add("not-gguf", "not_gguf", {"kind": kind}, "error", None)
    for seed in range(6):
        add("not-gguf", "not_gguf", {"kind": "random", "seed": seed}, "error", None)
    for seed in range(3):
        add("not-gguf", "not_gguf", {"kind": "zeros", "seed": seed}, "error", None)
        add("not-gguf", "not_gguf", {"kind": "gguf_header_only", "seed": seed}, "error", None)

    # -- magic and version
    for magic in (b"GGML", b"GGJT", b"gguf", b"FUGG", bytes(4)):
        surgery("magic", [["bytes", 0, magic.hex()]])
    for i in range(4):
        surgery("magic", [["flip", i, 1 << i]])
    for version, expect in ((0, "error"), (1, "error"), (2, "ok"), (4, "error"), (0xFFFFFFFF, "error")):
        surgery("version", [["set", 4, "<I", version]], expect)
    surgery("version", [["set", 4, ">I", 3]])  # big-endian

    # -- header counts
    n_t, n_kv = len(q4["tensors"]), len(q4["kv"])
    for count in (0, n_t - 1, n_t + 1, 1 << 32, 1 << 63, U64_MAX, size):
        surgery("count-tensors", [["set", 8, "<Q", count]])
    for count in (0, n_kv - 1, n_kv + 1, 1 << 32, 1 << 63, U64_MAX):
        surgery("count-kv", [["set", 16, "<Q", count]])

    # -- metadata pairs, byte by byte
    rng = random.Random(6)
    kvs = q4["kv"]
    strings = [k for k, e in kvs.items() if e["vtype"] == 8]
    arrays = [k for k, e in kvs.items() if e["vtype"] == 9]
    scalars = [k for k, e in kvs.items() if e["vtype"] not in (8, 9)]
    for key in rng.sample(list(kvs), 4) + ["general.architecture"]:
        e = kvs[key]
        for length in (U64_MAX, 1 << 40, size):
            surgery("kv-key-len", [["set", e["key_len"], "<Q", length]])
        for delta in (1, -1):
            surgery("kv-key-len", [["set", e["key_len"], "<Q", len(key.encode()) + delta]])
        surgery("kv-key-utf8", [["flip", e["key_len"] + 8, 0x80], ["bytes", e["key_len"] + 9, "ff"]])
    for key in rng.sample(scalars, 3) + [Keys.LM_D_MODEL]:
        e = kvs[key]
        for vtype in (13, 0xFFFFFFFF, 9, 8, 6, 10):
            if vtype != e["vtype"]:
                surgery("kv-type", [["set", e["type"], "<I", vtype]])
    for key in strings[:2] + [Keys.FLOW_TYPE, Keys.TOKENIZER_KIND]:
        e = kvs[key]
        for length in (U64_MAX, 1 << 40, size, e["n"] + 1, e["n"] - 1):
            surgery("kv-str-len", [["set", e["str_len"], "<Q", length]])
        surgery("kv-str-utf8", [["bytes", e["str"], "fffe"]])
    for key in arrays:
        e = kvs[key]
        for count in (U64_MAX, 1 << 32, (1 << 16) + 1, e["n"] + 1):
            surgery("kv-array-count", [["set", e["count"], "<Q", count]])
        for itype in (9, 13, 8 if e["sub"] != 8 else 4, 6):
            surgery("kv-array-type", [["set", e["itype"], "<I", itype]])

    # -- tensor infos, byte by byte
    tensors = q4["tensors"]
    picks = sorted({0, len(tensors) - 1, *rng.sample(range(1, len(tensors) - 1), 3)})
    for i in picks:
        t = tensors[i]
        name = t["name"]
        for length in (U64_MAX, 64, size, len(name.encode()) + 1):
            surgery("ti-name-len", [["set", t["name_len"], "<Q", length]])
        for n_dims in (0, 5, 0xFFFFFFFF, t["ndim"] + 1):
            surgery("ti-ndims", [["set", t["n_dims"], "<I", n_dims]])
        for dim in (0, U64_MAX, 1 << 40, 1 << 62, t["shape"][-1] * 2):
            surgery("ti-dim", [["set", t["dims"], "<Q", dim]])
        for ggml_type in (99, 0xFFFFFFFF, 0, 1, 2, 12, 41):
            if ggml_type != t["ggml_type"]:
                surgery("ti-type", [["set", t["type"], "<I", ggml_type]])
        for offset in (U64_MAX, 1 << 40, size, t["rel"] + 1, t["rel"] + 32, size - q4["data"]):
            surgery("ti-offset", [["set", t["offset"], "<Q", offset]])
        if i:  # the same data as the previous tensor
            surgery("ti-overlap", [["set", t["offset"], "<Q", tensors[i - 1]["rel"]]])
    # duplicate names: a tensor renamed to another name of the same length
    by_len: dict[int, list[dict]] = {}
    for t in tensors:
        by_len.setdefault(len(t["name"]), []).append(t)
    dups = [g for g in by_len.values() if len(g) > 1]
    for group in rng.sample(dups, 3):
        a, b = group[0], group[1]
        surgery("ti-dup-name", [["bytes", b["name_len"] + 8, a["name"].encode().hex()]])
    # two tensors of one size swap their data: structurally valid, semantically scrambled
    by_size: dict[tuple, list[dict]] = {}
    for t in tensors:
        by_size.setdefault((t["nbytes"], t["ggml_type"]), []).append(t)
    swaps = [g for g in by_size.values() if len(g) > 1]
    for group in rng.sample(swaps, 2):
        a, b = group[0], group[1]
        surgery("ti-swap", [["set", a["offset"], "<Q", b["rel"]], ["set", b["offset"], "<Q", a["rel"]]], "any")
    surgery("ti-name-utf8", [["bytes", tensors[3]["name_len"] + 8, "c3"]])

    # -- random damage
    for seed in range(12):
        r = random.Random(100 + seed)
        surgery("flip-header", [["flip", r.randrange(24), 1 << r.randrange(8)]], "any")
    for region, lo, hi, n in (
        ("flip-meta", q4["kv_start"], q4["ti_start"], 30),
        ("flip-tinfo", q4["ti_start"], q4["ti_end"], 30),
        ("flip-data", q4["data"], size, 10),
    ):
        for seed in range(n):
            r = random.Random(f"{region}-{seed}")
            steps = [["flip", r.randrange(lo, hi), r.randrange(1, 256)] for _ in range(r.choice([1, 1, 2, 4]))]
            surgery(region, steps, "any")
    for seed in range(12):
        r = random.Random(300 + seed)
        pos = r.randrange(q4["kv_start"], q4["ti_end"])
        insert = bytes(r.choice([1, 3, 8])) if seed % 2 else b""
        surgery("splice", [["splice", pos, 0 if insert else r.choice([1, 4, 8]), insert.hex()]], "any")
    r = random.Random(7)
    data_end = max(t["data"] + t["nbytes"] for t in tensors)  # the file may end in padding after it
    cuts = {4, 8, 16, 24, q4["kv_start"] + 9, q4["ti_start"], q4["ti_start"] + 1, q4["ti_end"], q4["data"]}
    cuts |= {q4["data"] + 1, size - 1, size - 32, size // 2}
    cuts |= {r.randrange(1, q4["data"]) for _ in range(10)} | {r.randrange(q4["data"], size) for _ in range(8)}
    for cut in sorted(cuts):
        surgery("truncate", [["truncate", cut]], "error" if cut < data_end else "ok")
    q8 = layouts["q8"]
    q8_end = max(t["data"] + t["nbytes"] for t in q8["tensors"])
    surgery("truncate", [["truncate", q8_end - 1]], base="q8")
    surgery("truncate", [["truncate", q8_end]], "ok", base="q8")
    surgery("append", [["splice", size, 0, random.Random(1).randbytes(100).hex()]], "ok")

    # -- data only: bytes of weights (loads; the use must still not crash)
    qk = next(t for t in tensors if t["ggml_type"] == 8)  # a Q8_0 matrix: f16 scale + 32 int8 per block
    for scale in (0x7C00, 0x7E00, 0xFC00, 0x7BFF):  # +inf, NaN, -inf, max f16
        surgery("data-q8-scale", [["set", qk["data"] + 34 * k, "<H", scale] for k in range(0, 64, 3)], "ok")
    f32 = next(t for t in tensors if t["ggml_type"] == 0 and t["nbytes"] >= 256)
    for value in (float("nan"), float("inf"), 3e38):
        surgery("data-f32", [["set", f32["data"] + 4 * k, "<f", value] for k in range(0, 32, 2)], "ok")
    for name, fill in (
        ("lm.blk.0.attn_qkv.weight", "nan"),
        ("lm.blk.3.ffn_up.weight", "inf"),
        ("mimi.dec.blk.0.attn_qkv.weight", "big"),
        ("lm.eos.weight", "nan"),
    ):
        add("data-fill", "rewrite", {"tensor_set": {name: {"data": fill}}}, "ok", "f32")
    tok = next(t for t in tensors if t["name"] == "tokenizer.data")
    for seed in range(3):
        r = random.Random(500 + seed)
        surgery("data-tokenizer", [["flip", r.randrange(tok["data"], tok["data"] + 64), 0xFF]], "any")
    add("tokenizer", "rewrite", {"tokenizer_vocab": 3999}, "error")
    add("tokenizer", "rewrite", {"tokenizer_vocab": 4000}, "ok")
    json_kind = {Keys.TOKENIZER_KIND: ["tokenizers", "STRING", None]}
    for text in ("[" * 100_000, '{"model": {"vocab": {}}}', '{"model": {"vocab": 5}}', "\ud800"):
        add("tokenizer", "rewrite", {"kv_set": json_kind, "tokenizer_json": text}, "error")
    add("tokenizer", "rewrite", {"tensor_set": {"tokenizer.data": {"data": "zeros"}}}, "error")
    add(
        "tokenizer",
        "rewrite",
        {"tensor_set": {"tokenizer.data": {"type": "F32", "data": "zeros", "shape": [64]}}},
        "error",
    )
    add("tokenizer", "rewrite", {"tensor_set": {"tokenizer.data": {"shape": [2, tok["nbytes"] // 2]}}}, "error")

    # -- valid files and metadata pairs that stay in range (must load and run)
    for base in BASES:
        add("valid", "bytes", {"steps": []}, "ok", base)
    lm_h, lm_kv = Keys.LM_HEADS, Keys.LM_KV_HEADS
    for heads, kv_heads in ((6, 2), (12, 4), (48, 16)):  # head_dim 32 / 16 / 4: same tensor shapes
        add("meta-ok", "rewrite", {"kv_set": {lm_h: [heads, "UINT32", None], lm_kv: [kv_heads, "UINT32", None]}}, "ok")

    def dec_tr(field):
        return config_key(f"mimi.decoder_transformer.{field}")

    def enc_tr(field):
        return config_key(f"mimi.encoder_transformer.{field}")

    def dec_sn(field):
        return config_key(f"mimi.decoder_seanet.{field}")

    def enc_sn(field):
        return config_key(f"mimi.encoder_seanet.{field}")

    for key, value, vtype in (
        (dec_tr("num_heads"), 2, "UINT32"),
        (dec_tr("num_heads"), 64, "UINT32"),
        (dec_tr("context"), 1, "UINT32"),
        (dec_tr("context"), 1000, "UINT32"),
        (dec_tr("max_period"), 2.0, "FLOAT64"),
        (dec_sn("dilation_base"), 7, "UINT32"),
        (Keys.LM_ROPE_PERIOD, 100.0, "FLOAT64"),
        (Keys.TEMPERATURE, 0.0, "FLOAT64"),
        (Keys.EOS_THRESHOLD, 5.0, "FLOAT64"),
        (Keys.FRAMES_AFTER_EOS, 5, "INT32"),
        (Keys.FRAMES_AFTER_EOS, -7, "INT32"),
        (Keys.MIMI_INNER_DIM, 0, "UINT32"),  # no encoder: the voice width is not used
        (Keys.CONFIG_NAME, "", "STRING"),
        (Keys.NAME, "x" * 10000, "STRING"),
        (Keys.LM_D_MODEL, 112, "INT64"),  # any integer type will do
        (Keys.TEMPERATURE, 0.5, "FLOAT32"),
        (Keys.SYNTHETIC_SEED, -1, "INT64"),
        ("general.alignment", 32, "UINT32"),
        ("some.other.key", [1.0, 2.0], "ARRAY"),
        ("some\nkey", "a\nvalue", "STRING"),
    ):
        kv(key, value, vtype, "ok", "FLOAT32" if vtype == "ARRAY" else None)
    add("meta-ok", "rewrite", {"kv_set": {"general.alignment": [64, "UINT32", None]}, "alignment": 64}, "ok")
    kv(enc_tr("num_heads"), 16, "UINT32", "ok", base="q8")
    kv(enc_tr("context"), 3, "UINT32", "ok", base="q8")
    kv(Keys.REPLACE_FROM, ["x", "y", "z", "w"], "ARRAY", "ok", "STRING")

    # -- metadata out of range or of the wrong type (a structurally valid GGUF)
    kv("general.architecture", "llama", "STRING")
    add("meta", "rewrite", {"arch": "llama"}, "error")
    add("meta", "rewrite", {"kv_del": ["general.architecture"]}, "error")
    optional = {Keys.SYNTHETIC_SEED, Keys.QUANT_VERSION, Keys.VOICE_COUNT}
    for key in sorted(set(rng.sample(list(kvs), 24)) | optional | {Keys.LM_HEADS, Keys.HAS_ENCODER}):  # missing
        add("meta-missing", "rewrite", {"kv_del": [key]}, "ok" if key in optional else "error")
    add("meta-missing", "rewrite", {"kv_del": [Keys.REPLACE_FROM, Keys.REPLACE_TO]}, "ok")
    for key, bad in (
        (Keys.FORMAT_VERSION, [(0, "UINT32"), (2, "UINT32"), ("1", "STRING")]),
        (
            Keys.LM_D_MODEL,
            [
                (0, "UINT32"),
                (-1, "INT32"),
                (2**32 - 1, "UINT32"),
                (2**62, "INT64"),
                (113, "UINT32"),
                (112.0, "FLOAT64"),
                ("112", "STRING"),
                (True, "BOOL"),
            ],
        ),
        (Keys.LM_HEADS, [(0, "UINT32"), (7, "UINT32"), (1, "UINT32"), (192, "UINT32"), (-3, "INT32")]),
        (Keys.LM_KV_HEADS, [(0, "UINT32"), (2, "UINT32"), (3, "UINT32")]),
        (Keys.LM_ATTN_DIM, [(0, "UINT32"), (2**32 - 1, "UINT32")]),
        (Keys.LM_LAYERS, [(0, "UINT32"), (7, "UINT32"), (9, "UINT32"), (2**31, "UINT32"), (2**40, "INT64")]),
        (Keys.LM_FFN, [(0, "UINT32"), (2**31, "UINT32")]),
        (Keys.LM_N_BINS, [(0, "UINT32"), (3999, "UINT32"), (2**31, "UINT32")]),
        (Keys.LM_TEXT_DIM, [(111, "UINT32")]),
        (Keys.LM_TEXT_RANK, [(0, "UINT32"), (2**20, "UINT32")]),
        (Keys.LM_Z_DIM, [(0, "UINT32"), (65, "UINT32")]),
        (Keys.FLOW_DIM, [(0, "UINT32")]),
        (Keys.FLOW_DEPTH, [(0, "UINT32"), (10**9, "UINT32")]),
        (
            Keys.LM_ROPE_PERIOD,
            [(float("nan"), "FLOAT64"), (float("inf"), "FLOAT64"), (0.0, "FLOAT64"), (-1.0, "FLOAT64")],
        ),
        (Keys.FLOW_TYPE, [("bogus", "STRING"), ("lsd", "STRING")]),
        (Keys.LM_BOS_BEFORE_VOICE, [(False, "BOOL"), (1, "UINT8")]),
        (Keys.HAS_ENCODER, [(True, "BOOL")]),
        (Keys.TOKENIZER_KIND, [("tokenizers", "STRING"), ("bogus", "STRING")]),
        (Keys.WEIGHTS_KIND, [("bogus", "STRING")]),
        (Keys.VOICE_NAMES, [(["alice"], "ARRAY")]),
        (Keys.VOICE_COUNT, [(3, "UINT32")]),
        (Keys.TEMPERATURE, [(float("nan"), "FLOAT64"), (-1.0, "FLOAT64"), (float("inf"), "FLOAT64")]),
        (Keys.EOS_THRESHOLD, [(float("nan"), "FLOAT64"), (float("-inf"), "FLOAT64")]),
        (Keys.FRAMES_AFTER_EOS, [(2**31 - 1, "INT32")]),
        (
            Keys.REPLACE_FROM,
            [(["ab", "c", "d", "e"], "ARRAY"), ([1, 2, 3, 4], "ARRAY"), (["a"], "ARRAY"), (["a"] * 5000, "ARRAY")],
        ),
        (Keys.PAD_SHORT, [(1, "UINT8")]),
        (Keys.MIMI_SAMPLE_RATE, [(0, "UINT32"), (48000, "UINT32"), (2**31, "UINT32")]),
        (
            Keys.MIMI_FRAME_RATE,
            [
                (0.0, "FLOAT64"),
                (float("nan"), "FLOAT64"),
                (float("inf"), "FLOAT64"),
                (-12.5, "FLOAT64"),
                (25.0, "FLOAT64"),
                (12.4, "FLOAT64"),
            ],
        ),
        (Keys.MIMI_CHANNELS, [(2, "UINT32"), (0, "UINT32")]),
        (Keys.MIMI_LATENT_DIM, [(0, "UINT32"), (33, "UINT32")]),
        (Keys.MIMI_QUANT_OUT_DIM, [(64, "UINT32")]),
        (Keys.MIMI_OUTER_DIM, [(64, "UINT32")]),
        (dec_tr("num_heads"), [(0, "UINT32"), (3, "UINT32"), (128, "UINT32")]),
        (dec_tr("context"), [(0, "UINT32"), (2**31, "UINT32"), (2**16 + 1, "UINT32")]),
        (dec_tr("num_layers"), [(0, "UINT32"), (5, "UINT32"), (2**30, "UINT32")]),
        (dec_tr("d_model"), [(0, "UINT32"), (64, "UINT32")]),
        (dec_tr("input_dimension"), [(64, "UINT32")]),
        (dec_tr("output_dimensions"), [([128, 128], "ARRAY"), ([64], "ARRAY"), (["128"], "ARRAY")]),
        (dec_tr("layer_scale"), [(float("nan"), "FLOAT64"), (float("inf"), "FLOAT64")]),
        (dec_tr("max_period"), [(0.0, "FLOAT64"), (float("nan"), "FLOAT64")]),
        (dec_tr("dim_feedforward"), [(0, "UINT32")]),
        (dec_sn("dilation_base"), [(0, "UINT32"), (2**20 + 1, "UINT32")]),
        (dec_sn("n_residual_layers"), [(0, "UINT32"), (2, "UINT32"), (100, "UINT32")]),
        (dec_sn("compress"), [(1000, "UINT32"), (0, "UINT32")]),
        (
            dec_sn("ratios"),
            [
                ([6, 5, 4, 1], "ARRAY"),
                ([0, 5, 4], "ARRAY"),
                ([1] * 17, "ARRAY"),
                ([6.0, 5.0, 4.0], "ARRAY"),
                ([-6, 5, 4], "ARRAY"),
                ([2**31, 5, 4], "ARRAY", "UINT32"),
                ([2**40, 5, 4], "ARRAY", "INT64"),
                ([2**63 - 1] * 65536, "ARRAY", "INT64"),  # validate() would multiply them for minutes
            ],
        ),
        (dec_sn("kernel_size"), [(0, "UINT32"), (5, "UINT32")]),
        (dec_sn("pad_mode"), [("reflect", "STRING")]),
        (dec_sn("channels"), [(2, "UINT32")]),
        (dec_sn("dimension"), [(0, "UINT32"), (256, "UINT32")]),
        (dec_sn("n_filters"), [(2**20, "UINT32")]),
        (enc_sn("ratios"), [([5, 6, 4, 2], "ARRAY")]),
        (enc_sn("dimension"), [(256, "UINT32")]),
        (enc_sn("residual_kernel_size"), [(2**20, "UINT32")]),
        (enc_tr("context"), [(2**31, "UINT32")]),
        (enc_tr("output_dimensions"), [([512, 512], "ARRAY")]),
        ("general.alignment", [(0, "UINT32"), (3, "UINT32"), (64, "UINT32"), (1, "UINT32"), ("32", "STRING")]),
    ):
        for value, vtype, *given_sub in bad:
            sub = given_sub[0] if given_sub else None
            if vtype == "ARRAY" and sub is None:
                sub = "STRING" if isinstance(value[0], str) else "FLOAT32" if isinstance(value[0], float) else "INT32"
            kv(key, value, vtype, "error", sub)
    kv(Keys.MIMI_INNER_DIM, 0, "UINT32", "error", base="q8")
    kv(Keys.HAS_ENCODER, False, "BOOL", "error", base="q8")
    kv(enc_tr("num_heads"), 3, "UINT32", "error", base="q8")

    # -- tensors missing, extra, misshaped, mistyped
    weights = [t["name"] for t in tensors if t["name"] != "tokenizer.data"]
    for name in sorted({weights[0], weights[-1], *rng.sample(weights, 6)}) + ["tokenizer.data"]:
        add("tensor-missing", "rewrite", {"tensor_del": [name]}, "error")
    add("tensor-missing", "rewrite", {"tensor_del": ["mimi.enc.downsample.weight"]}, "error", "q8")
    add("tensor-missing", "rewrite", {"tensor_del": weights}, "error")
    for extra in (
        {"name": "lm.blk.8.attn_qkv.weight", "type": "F32", "shape": [256, 112]},
        {"name": "foo", "type": "F32", "shape": [4]},
        {"name": "mimi.enc.downsample.weight", "type": "F32", "shape": [32, 16384]},
        {"name": "voice.alice.k", "type": "F32", "shape": [8, 3, 64]},
        {"name": "evil\nname\u2028", "type": "F32", "shape": [4]},  # the message must stay one line
    ):
        add("tensor-extra", "rewrite", {"tensor_add": [extra]}, "error")
    many = [{"name": f"extra.{i}", "type": "F32", "shape": [8]} for i in range(8000)]  # gguf-py's parse: ~1 s
    add("tensor-extra", "rewrite", {"tensor_add": many}, "error")
    qkv = next(t for t in tensors if t["name"] == "mimi.dec.blk.0.attn_qkv.weight")  # Q8_0 (384, 128)
    for shape in ([128, 384], [384 * 128], [1, 384, 128], [192, 256]):
        add("tensor-shape", "rewrite", {"tensor_set": {qkv["name"]: {"shape": shape}}}, "error")
    for shape in ([56, 2], [1, 112], [2, 56]):
        add("tensor-shape", "rewrite", {"tensor_set": {"lm.out_norm.weight": {"shape": shape}}}, "error")
    for name, ggml_type, expect in (
        (qkv["name"], "F32", "ok"),
        (qkv["name"], "F16", "ok"),
        (qkv["name"], "Q4_0", "error"),
        (qkv["name"], "BF16", "error"),
        (qkv["name"], "I32", "error"),
        (qkv["name"], "F64", "error"),
        ("lm.out_norm.weight", "F16", "error"),
        ("lm.bos_emb", "Q8_0", "error"),
        ("mimi.dec.upsample.weight", "F16", "error"),
        ("lm.blk.0.attn_out.weight", "F16", "ok"),
        ("lm.blk.0.ffn_up.weight", "F32", "ok"),
    ):
        add("tensor-type", "rewrite", {"tensor_set": {name: {"type": ggml_type}}}, expect)

    # -- stored voices
    def names_kv(names):
        return {Keys.VOICE_NAMES: [names, "ARRAY", "STRING"], Keys.VOICE_COUNT: [len(names), "UINT32", None]}

    def voice(name, kind, shape=(8, 3, 64), t="F32"):
        return {"name": f"voice.{name}.{kind}", "type": t, "shape": list(shape)}

    for args, expect in (
        ({"kv_set": names_kv(["alice"]), "tensor_add": [voice("alice", "k"), voice("alice", "v")]}, "ok"),
        (
            {
                "kv_set": names_kv(["alice", "bob"]),
                "tensor_add": [
                    voice("alice", "k"),
                    voice("alice", "v"),
                    voice("bob", "k", (8, 40, 64)),
                    voice("bob", "v", (8, 40, 64)),
                ],
            },
            "ok",
        ),
        ({"kv_set": names_kv(["alice"]), "tensor_add": [voice("alice", "k")]}, "error"),
        (
            {"kv_set": names_kv(["alice"]), "tensor_add": [voice("alice", "k"), voice("alice", "v", (8, 4, 64))]},
            "error",
        ),
        (
            {
                "kv_set": names_kv(["alice"]),
                "tensor_add": [voice("alice", "k", (8, 3, 32)), voice("alice", "v", (8, 3, 32))],
            },
            "error",
        ),
        (
            {
                "kv_set": names_kv(["alice"]),
                "tensor_add": [voice("alice", "k", (7, 3, 64)), voice("alice", "v", (7, 3, 64))],
            },
            "error",
        ),
        (
            {"kv_set": names_kv(["alice"]), "tensor_add": [voice("alice", "k", t="F16"), voice("alice", "v", t="F16")]},
            "error",
        ),
        (
            {"kv_set": names_kv(["alice"]), "tensor_add": [voice("alice", "k", (3, 64)), voice("alice", "v", (3, 64))]},
            "error",
        ),
        ({"tensor_add": [voice("alice", "k"), voice("alice", "v")]}, "error"),
        ({"kv_set": names_kv(["bad name"]), "tensor_add": [voice("bad name", "k"), voice("bad name", "v")]}, "error"),
        ({"kv_set": names_kv(["alice", "alice"]), "tensor_add": [voice("alice", "k"), voice("alice", "v")]}, "error"),
        (
            {
                "kv_set": names_kv(["alice"]),
                "tensor_add": [voice("alice", "k"), voice("alice", "v"), voice("alice", "q")],
            },
            "error",
        ),
    ):
        add("voices", "rewrite", args, expect)
    return out


# ------------------------------------------------------------------------------------------------
# Materialising a case
# ------------------------------------------------------------------------------------------------
def _not_gguf(kind: str, seed: int) -> bytes:
    rng = random.Random(seed)
    if kind == "empty":
        return b""
    if kind == "random":
        return rng.randbytes(rng.choice([1, 7, 24, 100, 4096, 1 << 20]))
    if kind == "text":
        return b"Hello world. This is not a model file.\n" * rng.randint(1, 50)
    if kind == "zeros":
        return bytes(rng.choice([24, 64, 4096]))
    if kind == "wav":
        return b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
    if kind == "safetensors":
        header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        return struct.pack("<Q", len(header)) + header + bytes(8)
    if kind == "zip":
        return b"PK\x03\x04" + rng.randbytes(200)
    if kind == "gguf_magic_only":
        return b"GGUF"
    if kind == "gguf_header_only":  # a valid header claiming content that is not there
        return b"GGUF" + struct.pack("<IQQ", 3, rng.randint(1, 1000), rng.randint(1, 1000))
    if kind == "gguf_empty":  # a complete, empty GGUF: no metadata, no tensors
        return b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    raise ValueError(kind)


def _field_value(f):
    from gguf import GGUFValueType

    vtype = f.types[0]
    if vtype == GGUFValueType.ARRAY:
        return f.contents(), vtype, (f.types[-1] if len(f.types) > 1 else GGUFValueType.INT32)
    return f.contents(), vtype, None


def rewrite(src: str, dst: str, args: dict) -> None:
    """Re-serialise `src` with GGUFWriter after the edits in `args`:
    kv_set {key: [value, type name, item type name | None]}, kv_del [keys], arch,
    tensor_del [names], tensor_set {name: {type, shape, data: zeros|nan|inf|big|random|dequant|f16|quant,
    name}}, tensor_add [{name, type, shape, data}]."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

    from pocket_ggml.format.gguf_keys import ARCH, TOKENIZER_TENSOR
    from pocket_ggml.format.tokenizer import synthetic_tokenizer

    r = GGUFReader(src)
    w = GGUFWriter(dst, arch=args.get("arch", ARCH))
    kv_del = set(args.get("kv_del", ()))
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in kv_del:
            continue
        value, vtype, sub = _field_value(f)
        w.add_key_value(name, value, vtype, sub)
    for key, (value, vtype, sub) in args.get("kv_set", {}).items():
        w.add_key_value(key, value, GGUFValueType[vtype], GGUFValueType[sub] if sub else None)
    if "general.architecture" in kv_del:
        del w.kv_data[0]["general.architecture"]

    def encode(ggml_type, shape: tuple[int, ...], data: str, rng: np.random.Generator, old=None, old_type=None):
        n = int(np.prod(shape))
        if data == "keep":
            return np.ascontiguousarray(old).view(np.uint8).reshape(-1)
        if data == "dequant":  # the old values in the new type
            vals = quants.dequantize(np.asarray(old), old_type) if old.dtype == np.uint8 else old
            vals = np.asarray(vals, np.float32).reshape(shape)
        elif data == "zeros":
            vals = np.zeros(shape, np.float32)
        elif data == "random":
            vals = rng.standard_normal(shape).astype(np.float32)
        elif data in ("nan", "inf", "big"):  # some values replaced, the rest random
            vals = rng.standard_normal(shape).astype(np.float32)
            fill = {"nan": np.nan, "inf": np.inf, "big": 3e38}[data]
            vals.reshape(-1)[rng.choice(n, size=max(1, n // 7), replace=False)] = fill
        else:
            raise ValueError(data)
        t = ggml_type
        if t == GGMLQuantizationType.F32:
            return vals.astype(np.float32).view(np.uint8).reshape(-1)
        if t == GGMLQuantizationType.F16:
            return vals.astype(np.float16).view(np.uint8).reshape(-1)
        if t == GGMLQuantizationType.F64:
            return vals.astype(np.float64).view(np.uint8).reshape(-1)
        if t in (GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32):
            dt = {1: np.int8, 2: np.int16, 4: np.int32}[GGML_QUANT_SIZES[t][1]]
            return np.zeros(n, dt).view(np.uint8)
        if t == GGMLQuantizationType.BF16:
            return (vals.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(-1)
        return np.asarray(quants.quantize(vals.reshape(-1, shape[-1]), t)).reshape(-1)

    def add(name: str, ggml_type, shape, raw: np.ndarray) -> None:
        block, size = GGML_QUANT_SIZES[ggml_type]
        byte_shape = (*shape[:-1], shape[-1] // block * size)
        w.add_tensor(name, raw, raw_shape=byte_shape, raw_dtype=ggml_type)

    if "alignment" in args:
        w.data_alignment = args["alignment"]
    rng = np.random.default_rng(args.get("seed", 0))
    tensor_del = set(args.get("tensor_del", ()))
    tensor_set = args.get("tensor_set", {})
    for t in r.tensors:
        if t.name in tensor_del:
            continue
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        edit = tensor_set.get(t.name)
        if t.name == TOKENIZER_TENSOR and ("tokenizer_vocab" in args or "tokenizer_json" in args):
            if "tokenizer_json" in args:  # e.g. "[" * 100000: nested beyond any JSON parser's depth
                raw = args["tokenizer_json"].encode("utf-8", "surrogatepass")
            else:
                raw = synthetic_tokenizer(args["tokenizer_vocab"])
            tok = np.frombuffer(raw, np.int8)
            add(t.name, t.tensor_type, tok.shape, tok.view(np.uint8))
            continue
        if edit is None:
            add(t.name, t.tensor_type, shape, np.ascontiguousarray(t.data).view(np.uint8).reshape(-1))
            continue
        new_type = GGMLQuantizationType[edit.get("type", t.tensor_type.name)]
        new_shape = tuple(edit.get("shape", shape))
        data = edit.get("data", "keep" if new_type == t.tensor_type else "dequant")
        add(
            edit.get("name", t.name), new_type, new_shape, encode(new_type, new_shape, data, rng, t.data, t.tensor_type)
        )
    for extra in args.get("tensor_add", ()):
        ggml_type = GGMLQuantizationType[extra["type"]]
        shape = tuple(extra["shape"])
        add(extra["name"], ggml_type, shape, encode(ggml_type, shape, extra.get("data", "zeros"), rng))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def materialise(case: dict, bases: dict[str, str], workdir: Path, cache: dict[str, bytes]) -> str:
    """Write the case's file; returns the path to open."""
    op, args = case["op"], case.get("args", {})
    path = workdir / f"{case['id']}.gguf"
    if op == "signal":  # for testing the harness: the worker dies as an abort or a segfault would
        os.kill(os.getpid(), getattr(signal, args["signal"]))
    if op == "missing":
        return str(workdir / "no-such-file.gguf")
    if op == "dir":
        d = workdir / "a-directory.gguf"
        d.mkdir(exist_ok=True)
        return str(d)
    if op == "not_gguf":
        path.write_bytes(_not_gguf(args["kind"], args.get("seed", 0)))
        return str(path)
    if op == "rewrite":
        rewrite(bases[case["base"]], str(path), args)
        return str(path)
    if case["base"] not in cache:
        cache[case["base"]] = Path(bases[case["base"]]).read_bytes()
    data = bytearray(cache[case["base"]])
    for step in args["steps"]:
        kind = step[0]
        if kind == "truncate":
            del data[step[1] :]
        elif kind == "flip":  # ["flip", pos, xor]
            data[step[1]] ^= step[2]
        elif kind == "set":  # ["set", pos, struct fmt, value]
            struct.pack_into(step[2], data, step[1], step[3])
        elif kind == "bytes":  # ["bytes", pos, hex]
            b = bytes.fromhex(step[2])
            data[step[1] : step[1] + len(b)] = b
        elif kind == "splice":  # ["splice", pos, n_delete, hex to insert]
            data[step[1] : step[1] + step[2]] = bytes.fromhex(step[3])
        else:
            raise ValueError(kind)
    path.write_bytes(bytes(data))
    return str(path)


# ------------------------------------------------------------------------------------------------
# Opening and using a file (in the worker)
# ------------------------------------------------------------------------------------------------
def probe(path: str) -> dict:
    """Open with ModelFile; if it loads, run every graph once. Never raises."""
    from pocket_ggml.errors import ModelFileError, PocketError
    from pocket_ggml.runtime.model_file import ModelFile

    t0 = time.perf_counter()
    try:
        mf = ModelFile(path)
    except ModelFileError as e:
        return {"outcome": "error", "message": str(e), "seconds": time.perf_counter() - t0}
    except BaseException as e:  # noqa: BLE001 - any other exception type is what the test looks for
        return {
            "outcome": "wrong-exception",
            "message": f"{type(e).__name__}: {e}",
            "trace": traceback.format_exc(limit=-4),
            "seconds": time.perf_counter() - t0,
        }
    load_seconds = time.perf_counter() - t0
    del mf
    result = {"outcome": "loaded", "seconds": load_seconds}
    try:
        result["use"] = use(path)
    except PocketError as e:
        result["use"] = f"{type(e).__name__}: {e}"
    except BaseException as e:  # noqa: BLE001
        result["outcome"] = "use-failed"
        result["message"] = f"{type(e).__name__}: {e}"
        result["trace"] = traceback.format_exc(limit=-4)
    return result


def use(path: str) -> str:
    from pocket_ggml.runtime.model import PocketRuntime

    rt = PocketRuntime(path)
    try:
        tokens, _ = rt.tokens("Hello world, this is a test.")
        rt.flow_lm.reserve(len(tokens) + 4)
        rt.flow_lm.text_prompt(tokens)
        out = rt.flow_lm.step(None)
        rt.mimi.decode(out.latent[None, :])
        done = "flow_lm+mimi"
        if rt.file.info.has_encoder:
            rt.encode_voice(np.zeros(2 * rt.config.mimi.frame_size, np.float32))
            done += "+encoder"
        return done
    finally:
        rt.close()


def limit_address_space(limit: int = ADDRESS_SPACE_LIMIT) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker(bases_json: str, cases_json: str, workdir: str) -> None:
    limit_address_space()
    bases = json.loads(Path(bases_json).read_text())
    cases = json.loads(Path(cases_json).read_text())
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    cache: dict[str, bytes] = {}
    for case in cases:
        print(f"START {case['id']}", flush=True)
        t0 = time.perf_counter()
        path = materialise(case, bases, wd, cache)
        t1 = time.perf_counter()
        result = probe(path)
        result |= {"id": case["id"], "make_seconds": t1 - t0, "total_seconds": time.perf_counter() - t0}
        if os.path.isfile(path):
            os.unlink(path)
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    worker(*sys.argv[1:4])
