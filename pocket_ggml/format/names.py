"""The one table from released Pocket TTS tensor names to our GGUF tensor names.

Released names (pocket-tts 4.0.1 `TTSModel.state_dict()`) run to 71 characters; GGUF allows 63. Each
row of `TENSOR_NAME_TABLE` is (released template, GGUF template, role); `{l}`, `{i}`, `{j}`, `{t}`,
`{b}`, `{k}` stand for indices (layer, SEANet module, block item, time embedder, res block, output
projection). Nothing else in the code base spells a tensor name: the writer, the loader, the graphs
and the tests all go through this module.

Layout: tensors keep the released shape (numpy order; GGUF/ggml `ne` is the reverse), except conv
kernels, which are stored as matrices whose rows are what one output value reads, so that a conv is
one `mul_mat` and quantization blocks run along those rows (ggml quantizes along `ne[0]` only):
- Conv1d (C_out, C_in, K) -> (C_out, C_in*K): `im2col` (F32) + `mul_mat`. This covers the k=1
  quantizer projection, the downsample conv and the depthwise upsample ((C, 1, K) -> (C, K)).
- ConvTranspose1d (C_in, C_out, K) -> (C_out*K, C_in): one `mul_mat` over C_in, then `col2im_1d`,
  which wants the C_out*K axis with K fastest.

`expected_tensors(config)` lists what a checkpoint of that config must hold, built from the
hyperparameters alone (the module structure of pocket-tts's FlowLMModel, SEANet and Mimi).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import numpy as np

from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.seanet import SeanetLayer, seanet_convs, seanet_decoder_plan, seanet_encoder_plan

GGUF_MAX_NAME = 63


class Role(enum.Enum):
    """What a tensor is, for the quantization policy."""

    VECTOR = "vector"  # norms, biases, scales, embeddings rows, buffers: always F32
    LM_TEXT_EMBD = "lm_text_embd"
    LM_TEXT_PROJ = "lm_text_proj"
    LM_INPUT = "lm_input"  # input_linear (latent -> d_model)
    LM_SPEAKER_PROJ = "lm_speaker_proj"
    LM_ATTN_QKV = "lm_attn_qkv"
    LM_ATTN_OUT = "lm_attn_out"
    LM_FFN_UP = "lm_ffn_up"
    LM_FFN_DOWN = "lm_ffn_down"
    LM_Z_PROJ = "lm_z_proj"
    LM_EOS = "lm_eos"
    FLOW = "flow"  # every matrix of the flow head (SimpleMLPAdaLN)
    MIMI_DEC_TRANSFORMER = "mimi_dec_transformer"
    MIMI_ENC_TRANSFORMER = "mimi_enc_transformer"
    SEANET_DEC = "seanet_dec"  # decoder conv and transposed-conv kernels
    SEANET_ENC = "seanet_enc"
    MIMI_QUANT_OUT = "mimi_quant_out"
    MIMI_UPSAMPLE = "mimi_upsample"  # depthwise transposed conv: a per-channel broadcast multiply
    MIMI_DOWNSAMPLE = "mimi_downsample"


class Layout(enum.Enum):
    RELEASED = "released"
    CONV_MATRIX = "conv_matrix"  # (C_out, C_in, K) -> (C_out, C_in*K)
    CONVTR_MATRIX = "convtr_matrix"  # (C_in, C_out, K) -> (C_out*K, C_in)


@dataclass(frozen=True)
class NameRule:
    released: str
    gguf: str
    role: Role
    layout: Layout = Layout.RELEASED
    encoder: bool = False  # needed only for voice cloning (dropped by --no-encoder)


def _r(released: str, gguf: str, role: Role, **kw) -> NameRule:
    return NameRule(released, gguf, role, **kw)


_V = Role.VECTOR
_TABLE: list[NameRule] = [
    # FlowLM
    _r("flow_lm.bos_emb", "lm.bos_emb", _V),
    _r("flow_lm.bos_before_voice", "lm.bos_before_voice", _V),
    _r("flow_lm.speaker_proj_weight", "lm.speaker_proj.weight", Role.LM_SPEAKER_PROJ, encoder=True),
    _r("flow_lm.emb_std", "lm.latent_std", _V),
    _r("flow_lm.emb_mean", "lm.latent_mean", _V),
    _r("flow_lm.conditioner.embed.weight", "lm.text_embd.weight", Role.LM_TEXT_EMBD),
    _r("flow_lm.conditioner.proj.weight", "lm.text_proj.weight", Role.LM_TEXT_PROJ),
    _r("flow_lm.input_linear.weight", "lm.input_linear.weight", Role.LM_INPUT),
    _r("flow_lm.transformer.layers.{l}.self_attn.in_proj.weight", "lm.blk.{l}.attn_qkv.weight", Role.LM_ATTN_QKV),
    _r("flow_lm.transformer.layers.{l}.self_attn.out_proj.weight", "lm.blk.{l}.attn_out.weight", Role.LM_ATTN_OUT),
    _r("flow_lm.transformer.layers.{l}.norm1.weight", "lm.blk.{l}.attn_norm.weight", _V),
    _r("flow_lm.transformer.layers.{l}.norm1.bias", "lm.blk.{l}.attn_norm.bias", _V),
    _r("flow_lm.transformer.layers.{l}.norm2.weight", "lm.blk.{l}.ffn_norm.weight", _V),
    _r("flow_lm.transformer.layers.{l}.norm2.bias", "lm.blk.{l}.ffn_norm.bias", _V),
    _r("flow_lm.transformer.layers.{l}.linear1.weight", "lm.blk.{l}.ffn_up.weight", Role.LM_FFN_UP),
    _r("flow_lm.transformer.layers.{l}.linear2.weight", "lm.blk.{l}.ffn_down.weight", Role.LM_FFN_DOWN),
    _r("flow_lm.out_norm.weight", "lm.out_norm.weight", _V),
    _r("flow_lm.out_norm.bias", "lm.out_norm.bias", _V),
    _r("flow_lm.z_proj.weight", "lm.z_proj.weight", Role.LM_Z_PROJ),
    _r("flow_lm.out_eos.weight", "lm.eos.weight", Role.LM_EOS),
    _r("flow_lm.out_eos.bias", "lm.eos.bias", _V),
    # Flow head (SimpleMLPAdaLN)
    _r("flow_lm.flow_net.time_embed.{t}.freqs", "flow.time.{t}.freqs", _V),
    _r("flow_lm.flow_net.time_embed.{t}.mlp.0.weight", "flow.time.{t}.fc1.weight", Role.FLOW),
    _r("flow_lm.flow_net.time_embed.{t}.mlp.0.bias", "flow.time.{t}.fc1.bias", _V),
    _r("flow_lm.flow_net.time_embed.{t}.mlp.2.weight", "flow.time.{t}.fc2.weight", Role.FLOW),
    _r("flow_lm.flow_net.time_embed.{t}.mlp.2.bias", "flow.time.{t}.fc2.bias", _V),
    _r("flow_lm.flow_net.time_embed.{t}.mlp.3.alpha", "flow.time.{t}.norm.alpha", _V),
    _r("flow_lm.flow_net.cond_embed.weight", "flow.cond_embd.weight", Role.FLOW),
    _r("flow_lm.flow_net.cond_embed.bias", "flow.cond_embd.bias", _V),
    _r("flow_lm.flow_net.input_proj.weight", "flow.input_proj.weight", Role.FLOW),
    _r("flow_lm.flow_net.input_proj.bias", "flow.input_proj.bias", _V),
    _r("flow_lm.flow_net.res_blocks.{b}.in_ln.weight", "flow.blk.{b}.norm.weight", _V),
    _r("flow_lm.flow_net.res_blocks.{b}.in_ln.bias", "flow.blk.{b}.norm.bias", _V),
    _r("flow_lm.flow_net.res_blocks.{b}.mlp.0.weight", "flow.blk.{b}.fc1.weight", Role.FLOW),
    _r("flow_lm.flow_net.res_blocks.{b}.mlp.0.bias", "flow.blk.{b}.fc1.bias", _V),
    _r("flow_lm.flow_net.res_blocks.{b}.mlp.2.weight", "flow.blk.{b}.fc2.weight", Role.FLOW),
    _r("flow_lm.flow_net.res_blocks.{b}.mlp.2.bias", "flow.blk.{b}.fc2.bias", _V),
    _r("flow_lm.flow_net.res_blocks.{b}.adaLN_modulation.1.weight", "flow.blk.{b}.adaln.weight", Role.FLOW),
    _r("flow_lm.flow_net.res_blocks.{b}.adaLN_modulation.1.bias", "flow.blk.{b}.adaln.bias", _V),
    _r("flow_lm.flow_net.final_layer.linear.weight", "flow.final.linear.weight", Role.FLOW),
    _r("flow_lm.flow_net.final_layer.linear.bias", "flow.final.linear.bias", _V),
    _r("flow_lm.flow_net.final_layer.adaLN_modulation.1.weight", "flow.final.adaln.weight", Role.FLOW),
    _r("flow_lm.flow_net.final_layer.adaLN_modulation.1.bias", "flow.final.adaln.bias", _V),
    # Mimi SEANet
    _r(
        "mimi.encoder.model.{i}.conv.weight",
        "mimi.enc.seanet.{i}.conv.weight",
        Role.SEANET_ENC,
        encoder=True,
        layout=Layout.CONV_MATRIX,
    ),
    _r("mimi.encoder.model.{i}.conv.bias", "mimi.enc.seanet.{i}.conv.bias", _V, encoder=True),
    _r(
        "mimi.encoder.model.{i}.block.{j}.conv.weight",
        "mimi.enc.seanet.{i}.res.{j}.weight",
        Role.SEANET_ENC,
        encoder=True,
        layout=Layout.CONV_MATRIX,
    ),
    _r("mimi.encoder.model.{i}.block.{j}.conv.bias", "mimi.enc.seanet.{i}.res.{j}.bias", _V, encoder=True),
    _r(
        "mimi.decoder.model.{i}.conv.weight",
        "mimi.dec.seanet.{i}.conv.weight",
        Role.SEANET_DEC,
        layout=Layout.CONV_MATRIX,
    ),
    _r("mimi.decoder.model.{i}.conv.bias", "mimi.dec.seanet.{i}.conv.bias", _V),
    _r(
        "mimi.decoder.model.{i}.convtr.weight",
        "mimi.dec.seanet.{i}.convtr.weight",
        Role.SEANET_DEC,
        layout=Layout.CONVTR_MATRIX,
    ),
    _r("mimi.decoder.model.{i}.convtr.bias", "mimi.dec.seanet.{i}.convtr.bias", _V),
    _r(
        "mimi.decoder.model.{i}.block.{j}.conv.weight",
        "mimi.dec.seanet.{i}.res.{j}.weight",
        Role.SEANET_DEC,
        layout=Layout.CONV_MATRIX,
    ),
    _r("mimi.decoder.model.{i}.block.{j}.conv.bias", "mimi.dec.seanet.{i}.res.{j}.bias", _V),
    # Mimi resampling and quantizer projection
    _r(
        "mimi.quantizer.output_proj.weight", "mimi.dec.quant_out.weight", Role.MIMI_QUANT_OUT, layout=Layout.CONV_MATRIX
    ),
    _r(
        "mimi.downsample.conv.conv.weight",
        "mimi.enc.downsample.weight",
        Role.MIMI_DOWNSAMPLE,
        encoder=True,
        layout=Layout.CONV_MATRIX,
    ),
    _r("mimi.upsample.convtr.convtr.weight", "mimi.dec.upsample.weight", Role.MIMI_UPSAMPLE, layout=Layout.CONV_MATRIX),
]
for _side, _tag, _role, _enc in (
    ("encoder", "enc", Role.MIMI_ENC_TRANSFORMER, True),
    ("decoder", "dec", Role.MIMI_DEC_TRANSFORMER, False),
):
    _p = f"mimi.{_side}_transformer"
    _q = f"mimi.{_tag}"
    _TABLE += [
        _r(
            f"{_p}.transformer.layers.{{l}}.self_attn.in_proj.weight",
            f"{_q}.blk.{{l}}.attn_qkv.weight",
            _role,
            encoder=_enc,
        ),
        _r(
            f"{_p}.transformer.layers.{{l}}.self_attn.out_proj.weight",
            f"{_q}.blk.{{l}}.attn_out.weight",
            _role,
            encoder=_enc,
        ),
        _r(f"{_p}.transformer.layers.{{l}}.norm1.weight", f"{_q}.blk.{{l}}.attn_norm.weight", _V, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.norm1.bias", f"{_q}.blk.{{l}}.attn_norm.bias", _V, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.norm2.weight", f"{_q}.blk.{{l}}.ffn_norm.weight", _V, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.norm2.bias", f"{_q}.blk.{{l}}.ffn_norm.bias", _V, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.linear1.weight", f"{_q}.blk.{{l}}.ffn_up.weight", _role, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.linear2.weight", f"{_q}.blk.{{l}}.ffn_down.weight", _role, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.layer_scale_1.scale", f"{_q}.blk.{{l}}.attn_scale", _V, encoder=_enc),
        _r(f"{_p}.transformer.layers.{{l}}.layer_scale_2.scale", f"{_q}.blk.{{l}}.ffn_scale", _V, encoder=_enc),
        _r(f"{_p}.input_proj.weight", f"{_q}.tr_in.weight", _role, encoder=_enc),
        _r(f"{_p}.output_projs.{{k}}.weight", f"{_q}.tr_out.{{k}}.weight", _role, encoder=_enc),
    ]
TENSOR_NAME_TABLE: tuple[NameRule, ...] = tuple(_TABLE)


_Segments = tuple[str, ...]


def _shape_key(segments: _Segments) -> _Segments:
    """A dotted name with its numeric segments blanked: what a name and its template share."""
    return tuple("#" if s.isdigit() or (s[:1] == "{" and s[-1:] == "}") else s for s in segments)


@functools.cache
def _index(attr: str) -> dict[_Segments, list[tuple[_Segments, NameRule]]]:
    """The table's templates on side `attr` ("released" or "gguf") by shape key. Every placeholder
    ({l}, {k}, ...) is a whole dot-separated segment that matches a decimal number; a lookup is a dict
    probe and a segment-wise check, not a scan of ~80 regexes (compiling those would slow every load)."""
    index: dict[_Segments, list[tuple[_Segments, NameRule]]] = {}
    for rule in TENSOR_NAME_TABLE:
        template = tuple(getattr(rule, attr).split("."))
        index.setdefault(_shape_key(template), []).append((template, rule))
    return index


@dataclass(frozen=True)
class TensorName:
    released: str
    gguf: str
    rule: NameRule


def _match(name: str, attr: str, other_attr: str) -> TensorName | None:
    segments = tuple(name.split("."))
    for template, rule in _index(attr).get(_shape_key(segments), ()):
        fields: dict[str, str] = {}
        for t, s in zip(template, segments):
            if t[:1] == "{":
                if not s.isascii() or not s.isdigit() or fields.setdefault(t[1:-1], s) != s:
                    break
            elif t != s:
                break
        else:
            other = getattr(rule, other_attr).format(**fields)
            return TensorName(name, other, rule) if attr == "released" else TensorName(other, name, rule)
    return None


@functools.lru_cache(maxsize=4096)
def from_released(name: str) -> TensorName | None:
    """The row for a released tensor name, or None if the table has no such tensor."""
    return _match(name, "released", "gguf")


@functools.lru_cache(maxsize=4096)
def from_gguf(name: str) -> TensorName | None:
    return _match(name, "gguf", "released")


def stored_shape(released_shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    if layout is Layout.CONV_MATRIX:
        c_out, c_in, k = released_shape
        return (c_out, c_in * k)
    if layout is Layout.CONVTR_MATRIX:
        c_in, c_out, k = released_shape
        return (c_out * k, c_in)
    return tuple(released_shape)


def to_stored_layout(array: np.ndarray, layout: Layout) -> np.ndarray:
    if layout is Layout.CONV_MATRIX:
        return np.ascontiguousarray(array).reshape(array.shape[0], -1)
    if layout is Layout.CONVTR_MATRIX:
        c_in, c_out, k = array.shape
        return np.ascontiguousarray(array.transpose(1, 2, 0)).reshape(c_out * k, c_in)
    return array


def to_released_layout(array: np.ndarray, layout: Layout, released_shape: tuple[int, ...]) -> np.ndarray:
    if layout is Layout.CONV_MATRIX:
        return array.reshape(released_shape)
    if layout is Layout.CONVTR_MATRIX:
        c_in, c_out, k = released_shape
        return np.ascontiguousarray(array.reshape(c_out, k, c_in).transpose(2, 0, 1))
    return array.reshape(released_shape)


# --------------------------------------------------------------------------------------------
# What a checkpoint of a given config holds (released names and shapes, state_dict order)
# --------------------------------------------------------------------------------------------
TIMESTEP_FREQ_DIM = 256  # TimestepEmbedder.frequency_embedding_size


def _seanet(plan: tuple[SeanetLayer, ...]) -> list[tuple[str, tuple[int, ...]]]:
    out: list[tuple[str, tuple[int, ...]]] = []
    for conv in seanet_convs(plan):
        kernel, bias = conv.weight_names
        out += [(kernel, conv.released_kernel_shape), (bias, (conv.c_out,))]
    return out


def _mimi_transformer(prefix: str, t) -> list[tuple[str, tuple[int, ...]]]:
    d, ff = t.d_model, t.dim_feedforward
    out: list[tuple[str, tuple[int, ...]]] = []
    if d != t.input_dimension:
        out.append((f"{prefix}.input_proj.weight", (d, t.input_dimension)))
    for layer in range(t.num_layers):
        p = f"{prefix}.transformer.layers.{layer}"
        out += [
            (f"{p}.self_attn.in_proj.weight", (3 * d, d)),
            (f"{p}.self_attn.out_proj.weight", (d, d)),
            (f"{p}.norm1.weight", (d,)),
            (f"{p}.norm1.bias", (d,)),
            (f"{p}.norm2.weight", (d,)),
            (f"{p}.norm2.bias", (d,)),
            (f"{p}.linear1.weight", (ff, d)),
            (f"{p}.linear2.weight", (d, ff)),
            (f"{p}.layer_scale_1.scale", (d,)),
            (f"{p}.layer_scale_2.scale", (d,)),
        ]
    for k, od in enumerate(t.output_dimensions):
        if od != d:
            out.append((f"{prefix}.output_projs.{k}.weight", (od, d)))
    return out


def expected_tensors(cfg: PocketConfig, with_encoder: bool = True) -> dict[str, tuple[int, ...]]:
    """Released name -> shape, in the reference's state_dict order."""
    f, m = cfg.flow_lm, cfg.mimi
    D, L, F = f.d_model, m.latent_dim, f.flow_dim
    t: list[tuple[str, tuple[int, ...]]] = [("flow_lm.bos_emb", (L,))]
    if f.insert_bos_before_voice:
        t.append(("flow_lm.bos_before_voice", (1, 1, D)))
    if with_encoder:
        t.append(("flow_lm.speaker_proj_weight", (D, m.speaker_dim)))
    t += [("flow_lm.emb_std", (L,)), ("flow_lm.emb_mean", (L,))]
    t.append(("flow_lm.conditioner.embed.weight", (f.n_bins + 1, f.text_rank or f.text_dim)))
    if f.text_rank:
        t.append(("flow_lm.conditioner.proj.weight", (f.text_dim, f.text_rank)))
    fn = "flow_lm.flow_net"
    for i in range(f.num_time_conds):
        p = f"{fn}.time_embed.{i}"
        t += [
            (f"{p}.freqs", (TIMESTEP_FREQ_DIM // 2,)),
            (f"{p}.mlp.0.weight", (F, TIMESTEP_FREQ_DIM)),
            (f"{p}.mlp.0.bias", (F,)),
            (f"{p}.mlp.2.weight", (F, F)),
            (f"{p}.mlp.2.bias", (F,)),
            (f"{p}.mlp.3.alpha", (F,)),
        ]
    t += [
        (f"{fn}.cond_embed.weight", (F, f.cond_dim)),
        (f"{fn}.cond_embed.bias", (F,)),
        (f"{fn}.input_proj.weight", (F, L)),
        (f"{fn}.input_proj.bias", (F,)),
    ]
    for b in range(f.flow_depth):
        p = f"{fn}.res_blocks.{b}"
        t += [
            (f"{p}.in_ln.weight", (F,)),
            (f"{p}.in_ln.bias", (F,)),
            (f"{p}.mlp.0.weight", (F, F)),
            (f"{p}.mlp.0.bias", (F,)),
            (f"{p}.mlp.2.weight", (F, F)),
            (f"{p}.mlp.2.bias", (F,)),
            (f"{p}.adaLN_modulation.1.weight", (3 * F, F)),
            (f"{p}.adaLN_modulation.1.bias", (3 * F,)),
        ]
    t += [
        (f"{fn}.final_layer.linear.weight", (L, F)),
        (f"{fn}.final_layer.linear.bias", (L,)),
        (f"{fn}.final_layer.adaLN_modulation.1.weight", (2 * F, F)),
        (f"{fn}.final_layer.adaLN_modulation.1.bias", (2 * F,)),
    ]
    t.append(("flow_lm.input_linear.weight", (D, L)))
    for layer in range(f.num_layers):
        p = f"flow_lm.transformer.layers.{layer}"
        t += [
            (f"{p}.self_attn.in_proj.weight", (f.attn_dim + 2 * f.kv_dim, D)),
            (f"{p}.self_attn.out_proj.weight", (D, f.attn_dim)),
            (f"{p}.norm1.weight", (D,)),
            (f"{p}.norm1.bias", (D,)),
            (f"{p}.norm2.weight", (D,)),
            (f"{p}.norm2.bias", (D,)),
            (f"{p}.linear1.weight", (f.dim_feedforward, D)),
            (f"{p}.linear2.weight", (D, f.dim_feedforward)),
        ]
    t += [("flow_lm.out_norm.weight", (D,)), ("flow_lm.out_norm.bias", (D,))]
    if f.z_dim:
        t.append(("flow_lm.z_proj.weight", (f.z_dim, D)))
    t += [("flow_lm.out_eos.weight", (1, f.cond_dim)), ("flow_lm.out_eos.bias", (1,))]

    if with_encoder:
        t += _seanet(seanet_encoder_plan(m.encoder_seanet))
    t += _seanet(seanet_decoder_plan(m.decoder_seanet))
    if with_encoder:
        t += _mimi_transformer("mimi.encoder_transformer", m.encoder_transformer)
    t += _mimi_transformer("mimi.decoder_transformer", m.decoder_transformer)
    t.append(("mimi.quantizer.output_proj.weight", (m.quantizer_output_dim, L, 1)))
    if m.resample_stride > 1:
        k = 2 * m.resample_stride
        enc_dim = m.encoder_seanet.dimension
        if with_encoder:
            t.append(("mimi.downsample.conv.conv.weight", (m.inner_dim or enc_dim, enc_dim, k)))
        dec_dim = m.decoder_seanet.dimension
        t.append(("mimi.upsample.convtr.convtr.weight", (m.outer_dim or dec_dim, 1, k)))
    return dict(t)


def encoder_tensor_names(cfg: PocketConfig) -> set[str]:
    """Released names that exist only with voice cloning."""
    return set(expected_tensors(cfg, True)) - set(expected_tensors(cfg, False))
