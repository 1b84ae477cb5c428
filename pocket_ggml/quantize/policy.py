"""Which GGML type each tensor gets: the named mixes, the row-size fallback, `--tensor-type` overrides.

Why the mixes are as they are (the quantization study in the docs has the figures): the flow head and
the SEANet kernels want F16 in the high-quality mixes; attention `out_proj` is the most sensitive
FlowLM matrix at 4 bits, so the Q4 mix keeps it Q8_0 for a few MB; the text table tolerates Q4_K; the
Mimi decoder transformer loses little at Q8_0, the SEANet decoder much more, so it stays F16. The Mimi
encoder (voice cloning only) loses little at Q8_0 and is Q8_0 in every quantized mix. The Mimi
transformers are Q8_0 even in the Q4 mix: they multiply 16 rows a frame, which llamafile's kernels do
for Q8_0 (and F16) but not for K-quants, so a K-quant there would be copied to F16 at load, taking
twice Q8_0's memory for no gain in speed.

Fallback (ggml quantizes rows, along `ne[0]`): a K-quant needs rows that are a multiple of 256;
otherwise Q8_0 if the row is a multiple of 32, else F16. Q8_0 falls back to F16 the same way.
1-D tensors (norms, biases, scales, buffers) and the per-channel depthwise upsample are always F32,
overrides included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pocket_ggml.errors import QuantizationError
from pocket_ggml.format.ggml_types import K_QUANTS, QUANT_SIZES, TENSOR_TYPES, FileType, GGMLType
from pocket_ggml.format.names import Role

T = GGMLType

_SMALL_LM = (Role.LM_INPUT, Role.LM_SPEAKER_PROJ, Role.LM_Z_PROJ, Role.LM_EOS, Role.LM_TEXT_PROJ)


def _mix(default: T, **by_role: T) -> dict[Role, T]:
    table = {role: default for role in Role}
    table.update({Role[k]: v for k, v in by_role.items()})
    table[Role.VECTOR] = T.F32
    table[Role.MIMI_UPSAMPLE] = T.F32  # a per-channel multiply, 16 K parameters
    return table


@dataclass(frozen=True)
class Mix:
    name: str
    file_type: FileType
    types: dict[Role, T]
    # (roles, type) applied to FlowLM layers where llama.cpp's `use_more_bits` holds.
    more_bits: tuple[tuple[Role, ...], T] | None = None
    description: str = ""


_F16_PARTS = {r.name: T.F16 for r in (Role.FLOW, *_SMALL_LM, Role.SEANET_DEC, Role.MIMI_QUANT_OUT)}

MIXES: dict[str, Mix] = {
    "F32": Mix("F32", FileType.ALL_F32, _mix(T.F32), description="everything F32 (the parity baseline)"),
    "F16": Mix("F16", FileType.MOSTLY_F16, _mix(T.F16), description="every matrix F16"),
    "Q8_0": Mix(
        "Q8_0",
        FileType.MOSTLY_Q8_0,
        _mix(T.Q8_0, **_F16_PARTS),
        description="matrices Q8_0; flow head, SEANet decoder and small projections F16",
    ),
    "Q6_K": Mix(
        "Q6_K",
        FileType.MOSTLY_Q6_K,
        _mix(T.Q8_0, LM_ATTN_QKV=T.Q6_K, LM_FFN_UP=T.Q6_K, LM_FFN_DOWN=T.Q6_K, LM_TEXT_EMBD=T.Q6_K, **_F16_PARTS),
        description="FlowLM Q6_K (out_proj Q8_0), Mimi transformers Q8_0, flow head and SEANet F16",
    ),
    "Q5_K_M": Mix(
        "Q5_K_M",
        FileType.MOSTLY_Q5_K_M,
        _mix(
            T.Q8_0,
            LM_ATTN_QKV=T.Q5_K,
            LM_FFN_UP=T.Q5_K,
            LM_FFN_DOWN=T.Q5_K,
            LM_TEXT_EMBD=T.Q5_K,
            SEANET_DEC=T.F16,
            MIMI_QUANT_OUT=T.F16,
        ),
        more_bits=((Role.LM_ATTN_QKV, Role.LM_FFN_DOWN), T.Q6_K),
        description="FlowLM Q5_K (qkv/ffn_down Q6_K on more-bits layers, out_proj Q8_0), flow head and "
        "Mimi transformers Q8_0, SEANet F16",
    ),
    "Q4_K_M": Mix(
        "Q4_K_M",
        FileType.MOSTLY_Q4_K_M,
        _mix(
            T.Q6_K,
            LM_ATTN_QKV=T.Q4_K,
            LM_FFN_UP=T.Q4_K,
            LM_FFN_DOWN=T.Q4_K,
            LM_TEXT_EMBD=T.Q4_K,
            LM_ATTN_OUT=T.Q8_0,
            MIMI_DEC_TRANSFORMER=T.Q8_0,
            MIMI_ENC_TRANSFORMER=T.Q8_0,
            SEANET_DEC=T.F16,
            MIMI_QUANT_OUT=T.F16,
            SEANET_ENC=T.Q8_0,
            LM_INPUT=T.Q8_0,
            LM_SPEAKER_PROJ=T.Q8_0,
            LM_EOS=T.F16,
        ),
        description="FlowLM Q4_K (out_proj Q8_0), flow head Q6_K, Mimi transformers Q8_0, SEANet decoder F16, "
        "encoder Q6_K/Q8_0",
    ),
}


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of layers that get more bits: the first and last eighth, and every third."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def row_fits(qtype: T, row: int) -> bool:
    block = QUANT_SIZES[qtype][0]
    return row % block == 0


def fallback(qtype: T, row: int) -> T:
    """The best type no finer than `qtype` whose block size divides `row`."""
    if row_fits(qtype, row):
        return qtype
    if qtype in K_QUANTS and row_fits(T.Q8_0, row):
        return T.Q8_0
    return T.F16 if qtype != T.F32 else T.F32


def parse_overrides(specs: tuple[str, ...] | list[str]) -> list[tuple[re.Pattern[str], T]]:
    """`REGEX=TYPE` pairs; REGEX is matched (re.search) against GGUF tensor names."""
    out = []
    for spec in specs:
        rx, sep, tname = spec.rpartition("=")
        if not sep or not rx:
            raise QuantizationError(f"--tensor-type {spec!r}: expected REGEX=TYPE")
        if tname.upper() not in TENSOR_TYPES:
            raise QuantizationError(
                f"--tensor-type {spec!r}: unknown type {tname!r} (one of {', '.join(TENSOR_TYPES)})"
            )
        try:
            out.append((re.compile(rx), TENSOR_TYPES[tname.upper()]))
        except re.error as e:
            raise QuantizationError(f"--tensor-type {spec!r}: bad regular expression ({e})") from None
    return out


def get_mix(name: str) -> Mix:
    key = name.upper()
    if key not in MIXES:
        raise QuantizationError(f"unknown quantization type {name!r}; one of {', '.join(MIXES)}")
    return MIXES[key]


def is_vector(shape: tuple[int, ...]) -> bool:
    return sum(d > 1 for d in shape) <= 1


def choose_type(
    mix: Mix,
    gguf_name: str,
    role: Role,
    stored_shape: tuple[int, ...],
    layer: int | None,
    n_layers: int,
    overrides: list[tuple[re.Pattern[str], T]] = (),  # type: ignore[assignment]
) -> T:
    """The type a tensor is written in; the last matching override wins over the mix. Vectors and
    the depthwise upsample stay F32 whatever the overrides say (the graphs add/multiply them)."""
    if is_vector(stored_shape) or role in (Role.VECTOR, Role.MIMI_UPSAMPLE):
        return T.F32
    wanted = mix.types[role]
    if mix.more_bits and layer is not None and role in mix.more_bits[0] and use_more_bits(layer, n_layers):
        wanted = mix.more_bits[1]
    for rx, qtype in overrides:
        if rx.search(gguf_name):
            wanted = qtype
    return fallback(wanted, stored_shape[-1])
