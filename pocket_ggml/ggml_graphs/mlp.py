"""SimpleMLPAdaLN, the flow head (pocket_tts/modules/mlp.py).

Rows are independent samples: c is (B, cond_dim), x is (B, latent_dim). Time conditions are
Python floats (the LSD sampler's s and t are fixed per decode step), so each TimestepEmbedder
input is `freqs * t` built in the graph from the stored `freqs` buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

from pocket_ggml.format.config import FlowLMConfig
from pocket_ggml.format.names import TIMESTEP_FREQ_DIM
from pocket_ggml.ggml_binding import Tensor, ggml
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.nn import (
    Weights,
    chunk_rows,
    expect_shape,
    layer_norm,
    linear,
    modulate,
    row_count,
    weight,
)

RMS_NORM_EPS = 1e-5  # the TimestepEmbedder's final RMSNorm
ADALN_NORM_EPS = 1e-6  # ResBlock.in_ln and FinalLayer.norm_final


def _linear(g: Graph, w: Weights, prefix: str, x: Tensor, n_out: int, n_in: int) -> Tensor:
    """nn.Linear with bias."""
    wt, b = weight(w, f"{prefix}.weight", (n_out, n_in)), weight(w, f"{prefix}.bias", (n_out,))
    return linear(g.ctx, x, wt, b)


def timestep_embedder(g: Graph, w: Weights, prefix: str, t: float, dim: int) -> Tensor:
    """TimestepEmbedder(t) -> (1, dim): [cos, sin](t * freqs), Linear, SiLU, Linear, "RMSNorm"."""
    ctx = g.ctx
    half = TIMESTEP_FREQ_DIM // 2
    args = ggml.ggml_scale(ctx, weight(w, f"{prefix}.freqs", (half,)), t)
    emb = ggml.ggml_concat(ctx, ggml.ggml_cos(ctx, args), ggml.ggml_sin(ctx, args), 0)
    h = _linear(g, w, f"{prefix}.mlp.0", emb, dim, TIMESTEP_FREQ_DIM)
    h = _linear(g, w, f"{prefix}.mlp.2", ggml.ggml_silu(ctx, h), dim, dim)
    # The reference's RMSNorm: x * alpha * rsqrt(var(x) + eps) with torch's default *unbiased*
    # variance (mean-centred) but no centring of x itself; no single ggml op does this.
    centred = ggml.ggml_sub(ctx, h, ggml.ggml_mean(ctx, h))
    var = ggml.ggml_scale(ctx, ggml.ggml_sum_rows(ctx, ggml.ggml_sqr(ctx, centred)), 1.0 / (dim - 1))
    h = ggml.ggml_div(ctx, h, ggml.ggml_sqrt(ctx, ggml.ggml_scale_bias(ctx, var, 1.0, RMS_NORM_EPS)))
    return ggml.ggml_mul(ctx, h, weight(w, f"{prefix}.mlp.3.alpha", (dim,)))


def res_block(g: Graph, w: Weights, prefix: str, x: Tensor, y: Tensor, dim: int) -> Tensor:
    """ResBlock: x + gate * MLP(modulate(LN(x), shift, scale)), (shift, scale, gate) from SiLU(y)."""
    ctx = g.ctx
    ada = _linear(g, w, f"{prefix}.adaLN_modulation.1", ggml.ggml_silu(ctx, y), 3 * dim, dim)
    shift, scale, gate = chunk_rows(ctx, ada, 3)
    ln_w, ln_b = weight(w, f"{prefix}.in_ln.weight", (dim,)), weight(w, f"{prefix}.in_ln.bias", (dim,))
    ln = layer_norm(ctx, x, ADALN_NORM_EPS, ln_w, ln_b)
    h = _linear(g, w, f"{prefix}.mlp.0", modulate(ctx, ln, shift, scale), dim, dim)
    h = _linear(g, w, f"{prefix}.mlp.2", ggml.ggml_silu(ctx, h), dim, dim)
    return ggml.ggml_add(ctx, x, ggml.ggml_mul(ctx, gate, h))


def final_layer(g: Graph, w: Weights, prefix: str, x: Tensor, y: Tensor, dim: int, out_dim: int) -> Tensor:
    """FinalLayer: Linear(modulate(LN(x) without affine, shift, scale))."""
    ctx = g.ctx
    ada = _linear(g, w, f"{prefix}.adaLN_modulation.1", ggml.ggml_silu(ctx, y), 2 * dim, dim)
    shift, scale = chunk_rows(ctx, ada, 2)
    h = modulate(ctx, layer_norm(ctx, x, ADALN_NORM_EPS), shift, scale)
    return _linear(g, w, f"{prefix}.linear", h, out_dim, dim)


def simple_mlp_adaln(
    g: Graph,
    w: Weights,
    cfg: FlowLMConfig,
    latent_dim: int,
    c: Tensor,
    ts: Sequence[float],
    x: Tensor,
    prefix: str = "flow_lm.flow_net",
) -> Tensor:
    """SimpleMLPAdaLN(c, *ts, x) -> (B, latent_dim): the flow velocity (or sample) for x."""
    ctx, dim, b = g.ctx, cfg.flow_dim, row_count(x)
    if len(ts) != cfg.num_time_conds:
        raise ValueError(f"{cfg.flow_type} head takes {cfg.num_time_conds} time conditions, got {len(ts)}")
    expect_shape(x, (b, latent_dim), "flow head input")
    expect_shape(c, (b, cfg.cond_dim), "flow head condition")
    x = _linear(g, w, f"{prefix}.input_proj", x, dim, latent_dim)
    y = _linear(g, w, f"{prefix}.cond_embed", c, dim, cfg.cond_dim)
    if ts:
        temb = timestep_embedder(g, w, f"{prefix}.time_embed.0", ts[0], dim)
        for i, t in enumerate(ts[1:], start=1):
            emb = timestep_embedder(g, w, f"{prefix}.time_embed.{i}", t, dim)
            temb = ggml.ggml_add(ctx, temb, emb)
        y = ggml.ggml_add(ctx, y, ggml.ggml_scale(ctx, temb, 1.0 / len(ts)))
    for i in range(cfg.flow_depth):
        x = res_block(g, w, f"{prefix}.res_blocks.{i}", x, y, dim)
    return final_layer(g, w, f"{prefix}.final_layer", x, y, dim, latent_dim)
