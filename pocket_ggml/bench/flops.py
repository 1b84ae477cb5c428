"""FLOP counts of one generation, from the config alone (the same for us and for the reference).

A matmul of a (rows, n_in) activation by an (n_out, n_in) weight counts 2 * n_in * n_out FLOPs per
row (one multiply and one add per weight touched); attention counts 2 * keys * width for Q.K^T and
the same for A.V, per query row. Norms, activations, RoPE, softmax and the tiny elementwise work are
not counted, so the figures are a slight undercount of what the hardware does (the usual convention
for "achieved GFLOP/s").
"""

from __future__ import annotations

from dataclasses import dataclass

from pocket_ggml.format.config import FlowLMConfig, MimiConfig, MimiTransformerConfig, PocketConfig
from pocket_ggml.format.names import TIMESTEP_FREQ_DIM
from pocket_ggml.ggml_graphs.seanet import SeanetConv, SeanetResBlock, seanet_decoder_plan


def _mm(n_in: int, n_out: int, rows: int = 1) -> int:
    return 2 * n_in * n_out * rows


def flow_lm_row_flops(f: FlowLMConfig, latent_dim: int, n_keys: int) -> int:
    """One latent row through input_linear, the transformer (attending `n_keys` keys), out_norm,
    z_proj and the EOS head: what one generation step costs before the flow head."""
    d, kv = f.d_model, f.kv_dim
    per_layer = (
        _mm(d, f.attn_dim + 2 * kv)  # in_proj: q | k | v
        + 2 * 2 * n_keys * f.attn_dim  # Q.K^T and A.V over every query head
        + _mm(f.attn_dim, d)  # out_proj
        + _mm(d, f.dim_feedforward)
        + _mm(f.dim_feedforward, d)
    )
    total = _mm(latent_dim, d) + f.num_layers * per_layer
    if f.z_dim:
        total += _mm(d, f.z_dim)
    return total + _mm(f.cond_dim, 1)


def flow_head_flops(f: FlowLMConfig, latent_dim: int, decode_steps: int = 1) -> int:
    """The flow head (SimpleMLPAdaLN) for one frame: `decode_steps` calls of it."""
    w = f.flow_dim
    per_call = (
        _mm(latent_dim, w)  # input_proj
        + _mm(f.cond_dim, w)  # cond_embed
        + f.num_time_conds * (_mm(TIMESTEP_FREQ_DIM, w) + _mm(w, w))  # timestep embedders
        + f.flow_depth * (_mm(w, 3 * w) + 2 * _mm(w, w))  # res blocks: adaLN + 2-layer MLP
        + _mm(w, 2 * w)  # final layer adaLN
        + _mm(w, latent_dim)  # final linear
    )
    steps = decode_steps if f.flow_type in ("lsd", "flow_matching") else 1
    return steps * per_call


def mimi_transformer_flops(t: MimiTransformerConfig, rows: int) -> int:
    """A Mimi (projected) transformer over `rows` steps at 200 Hz, each attending a full window
    of `context` keys (the steady state of a stream)."""
    d = t.d_model
    per_row = t.num_layers * (_mm(d, 3 * d) + 2 * 2 * t.context * d + _mm(d, d) + _mm(d, t.dim_feedforward) * 2)
    if t.input_dimension != d:
        per_row += _mm(t.input_dimension, d)
    per_row += sum(_mm(d, od) for od in t.output_dimensions if od != d)
    return rows * per_row


def seanet_decoder_flops(m: MimiConfig, steps_in: int) -> int:
    """The SEANet decoder on `steps_in` steps at 200 Hz (one latent frame: 16 steps, 1920 samples)."""
    total, t = 0, steps_in
    for layer in seanet_decoder_plan(m.decoder_seanet):
        convs = layer.convs if isinstance(layer, SeanetResBlock) else (layer,)
        for c in convs:
            assert isinstance(c, SeanetConv)
            if c.transposed:
                total += 2 * c.c_in * c.c_out * c.kernel * t
                t *= c.stride
            else:
                t //= c.stride
                total += 2 * c.c_in * c.c_out * c.kernel * t
    return total


def mimi_frame_extra_flops(m: MimiConfig) -> int:
    """The quantizer projection (k1 conv) and the depthwise x16 upsample of one latent frame."""
    s, c = m.resample_stride, m.decoder_seanet.dimension
    return _mm(m.latent_dim, m.quantizer_output_dim) + 2 * c * 2 * s


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one benchmark run: `frames` steps after a text prefill of `text_tokens` tokens,
    starting from a voice state of `voice_rows` rows."""

    flow_lm_transformer: float  # per frame, averaged over the frames (attention grows with position)
    flow_head: float  # per frame
    mimi_transformer: float  # per frame
    seanet: float  # per frame
    mimi_other: float  # per frame: quantizer projection + upsample
    text_prefill: float  # once per run
    frames: int

    @property
    def per_frame(self) -> float:
        return self.flow_lm_transformer + self.flow_head + self.mimi_transformer + self.seanet + self.mimi_other

    @property
    def per_run(self) -> float:
        return self.frames * self.per_frame + self.text_prefill


def count_flops(
    cfg: PocketConfig, *, frames: int, text_tokens: int, voice_rows: int, decode_steps: int = 1
) -> FlopCount:
    f, m = cfg.flow_lm, cfg.mimi
    ldim = m.latent_dim
    start = voice_rows + text_tokens  # keys already in the cache when frame 0 runs
    transformer = sum(flow_lm_row_flops(f, ldim, start + j + 1) for j in range(frames)) / max(frames, 1)
    # text rows: the table (through the low-rank proj if any), then the transformer; the head runs once
    prefill = 0
    for i in range(text_tokens):
        row = flow_lm_row_flops(f, ldim, voice_rows + i + 1) - _mm(ldim, f.d_model)
        prefill += row + (_mm(f.text_rank, f.text_dim) if f.text_rank else 0)
    prefill += flow_head_flops(f, ldim, decode_steps)
    s = m.resample_stride
    return FlopCount(
        flow_lm_transformer=float(transformer),
        flow_head=float(flow_head_flops(f, ldim, decode_steps)),
        mimi_transformer=float(mimi_transformer_flops(m.decoder_transformer, s)),
        seanet=float(seanet_decoder_flops(m, s)),
        mimi_other=float(mimi_frame_extra_flops(m)),
        text_prefill=float(prefill),
        frames=frames,
    )
