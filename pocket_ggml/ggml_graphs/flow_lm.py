"""FlowLMModel (pocket_tts/models/flow_lm.py): conditioning rows, backbone, EOS head, samplers.

One FlowLM call runs `[conditioning rows | latent rows]` through the transformer with one KV cache.
Conditioning rows are text embeddings (`flow_lm_text_embeddings`) or the voice prompt
(`flow_lm_voice_conditioning`); latent rows come from `flow_lm_input`, whose NaN -> bos_emb
replacement happens in numpy first (`replace_nan_with_bos`). The sampler's noise is a graph input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pocket_ggml.format.config import FlowLMConfig
from pocket_ggml.ggml_binding import GGML_TYPE_I32, Tensor, ggml, ggml_type_of, tensor_nb, tensor_ne
from pocket_ggml.ggml_graphs.attention import AttentionInputs, LayerKV, ScoreTap
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.mlp import simple_mlp_adaln
from pocket_ggml.ggml_graphs.nn import Weights, expect_shape, layer_norm, linear, row_count, weight, width
from pocket_ggml.ggml_graphs.transformer import NORM_EPS, TransformerShape, streaming_transformer

PREFIX = "flow_lm"


def replace_nan_with_bos(latents: np.ndarray, bos_emb: np.ndarray) -> np.ndarray:
    """torch.where(isnan(sequence), bos_emb, sequence): NaN marks the BOS position."""
    return np.where(np.isnan(latents), bos_emb, latents).astype(np.float32)


def flow_lm_text_embeddings(g: Graph, w: Weights, cfg: FlowLMConfig, tokens: Tensor) -> Tensor:
    """LUTConditioner: token ids (N,) int32 -> (N, d_model), through the low-rank proj if any."""
    if ggml_type_of(tokens) != GGML_TYPE_I32:
        raise TypeError("token ids must be an int32 tensor")
    table_width = cfg.text_rank or cfg.text_dim
    table = weight(w, f"{PREFIX}.conditioner.embed.weight", (cfg.n_bins + 1, table_width))
    x = ggml.ggml_get_rows(g.ctx, table, tokens)
    if cfg.text_rank:
        proj = weight(w, f"{PREFIX}.conditioner.proj.weight", (cfg.text_dim, cfg.text_rank))
        x = linear(g.ctx, x, proj)
    return x


def flow_lm_voice_conditioning(g: Graph, w: Weights, cfg: FlowLMConfig, latents: Tensor) -> Tensor:
    """Voice prompt rows: [bos_before_voice |] latents (N, speaker_dim) @ speaker_proj_weight^T."""
    ctx, d = g.ctx, cfg.d_model
    n, speaker_dim = row_count(latents), width(latents)
    x = linear(ctx, latents, weight(w, f"{PREFIX}.speaker_proj_weight", (d, speaker_dim)))
    if cfg.insert_bos_before_voice:
        bos = ggml.ggml_reshape_2d(ctx, weight(w, f"{PREFIX}.bos_before_voice", (1, 1, d)), d, 1)
        x = ggml.ggml_concat(ctx, bos, x, 1)
    expect_shape(x, (n + int(cfg.insert_bos_before_voice), d), "voice conditioning")
    return x


def flow_lm_input(g: Graph, w: Weights, cfg: FlowLMConfig, latents: Tensor, latent_dim: int) -> Tensor:
    """input_linear: latents (N, latent_dim), BOS already filled in -> (N, d_model)."""
    expect_shape(latents, (row_count(latents), latent_dim), "FlowLM input latents")
    w_in = weight(w, f"{PREFIX}.input_linear.weight", (cfg.d_model, latent_dim))
    return linear(g.ctx, latents, w_in)


def flow_lm_backbone(
    g: Graph,
    w: Weights,
    cfg: FlowLMConfig,
    x: Tensor,
    inputs: AttentionInputs,
    caches: Sequence[LayerKV] | None,
    n_out: int = 1,
    stages: dict[str, Tensor] | None = None,
    tap: ScoreTap | None = None,
) -> Tensor:
    """FlowLMModel.backbone on the sequence x (T, d_model): transformer, then out_norm and z_proj of
    the last `n_out` rows -> (n_out, cond_dim), what the EOS and flow heads read. With `stages`,
    the intermediates are added to it: `layerNN` (all rows), `transformer_out`, `hidden` (after
    out_norm) and `z` (after z_proj), the last three over the last `n_out` rows. `tap`: attention
    scores to output as well (`ScoreTap`)."""
    ctx, d = g.ctx, cfg.d_model
    if not 1 <= n_out <= inputs.n_rows:
        raise ValueError(f"cannot output {n_out} of {inputs.n_rows} rows")
    shape = TransformerShape.for_flow_lm(cfg)
    layer_outputs: list[Tensor] | None = [] if stages is not None else None
    h = streaming_transformer(g, w, f"{PREFIX}.transformer", x, shape, inputs, caches, layer_outputs, tap=tap)
    h = last_rows(g, h, n_out)
    norm_w = weight(w, f"{PREFIX}.out_norm.weight", (d,))
    hidden = layer_norm(ctx, h, NORM_EPS, norm_w, weight(w, f"{PREFIX}.out_norm.bias", (d,)))
    out = hidden
    if cfg.z_dim:
        out = linear(ctx, hidden, weight(w, f"{PREFIX}.z_proj.weight", (cfg.z_dim, d)))
    if stages is not None:
        stages.update({f"layer{i:02d}": t for i, t in enumerate(layer_outputs or [])})
        stages.update(transformer_out=h, hidden=hidden)
        if cfg.z_dim:
            stages["z"] = out
    return out


def last_rows(g: Graph, x: Tensor, n: int) -> Tensor:
    """The last n rows of a (T, d) tensor, as a view."""
    row = tensor_nb(x)[1]
    return ggml.ggml_view_2d(g.ctx, x, width(x), n, row, (row_count(x) - n) * row)


def flow_lm_eos_logit(g: Graph, w: Weights, cfg: FlowLMConfig, h: Tensor) -> Tensor:
    """out_eos: (n, cond_dim) -> (n, 1) logits; EOS when logit > threshold."""
    eos_w = weight(w, f"{PREFIX}.out_eos.weight", (1, cfg.cond_dim))
    return linear(g.ctx, h, eos_w, weight(w, f"{PREFIX}.out_eos.bias", (1,)))


def lsd_decode(g: Graph, w: Weights, cfg: FlowLMConfig, h: Tensor, noise: Tensor, num_steps: int) -> Tensor:
    """Lagrangian self distillation: x = noise; x += v(h, s=i/N, t=(i+1)/N, x) / N for i < N."""
    x = noise
    for i in range(num_steps):
        ts = (i / num_steps, (i + 1) / num_steps)
        v = simple_mlp_adaln(g, w, cfg, width(noise), h, ts, x)
        x = ggml.ggml_add(g.ctx, x, ggml.ggml_scale(g.ctx, v, 1.0 / num_steps))
    return x


def ot_decode(g: Graph, w: Weights, cfg: FlowLMConfig, h: Tensor, noise: Tensor, num_steps: int) -> Tensor:
    """Euler steps of an optimal-transport flow (type flow_matching): x += v(h, t=i/N, x) / N."""
    x = noise
    for i in range(num_steps):
        v = simple_mlp_adaln(g, w, cfg, width(noise), h, (i / num_steps,), x)
        x = ggml.ggml_add(g.ctx, x, ggml.ggml_scale(g.ctx, v, 1.0 / num_steps))
    return x


def pointwise_decode(g: Graph, w: Weights, cfg: FlowLMConfig, h: Tensor, noise: Tensor, num_steps: int) -> Tensor:
    """One step, no time input: x = noise + v(h, noise)."""
    return ggml.ggml_add(g.ctx, noise, simple_mlp_adaln(g, w, cfg, width(noise), h, (), noise))


def drifting_decode(g: Graph, w: Weights, cfg: FlowLMConfig, h: Tensor, noise: Tensor, num_steps: int) -> Tensor:
    """One step, no time input: x = v(h, noise)."""
    return simple_mlp_adaln(g, w, cfg, width(noise), h, (), noise)


DECODERS = {
    "lsd": lsd_decode,
    "flow_matching": ot_decode,
    "pointwise": pointwise_decode,
    "drifting": drifting_decode,
}


def flow_head_sample(g: Graph, w: Weights, cfg: FlowLMConfig, h: Tensor, noise: Tensor, num_steps: int = 1) -> Tensor:
    """The next latents (n, latent_dim) from h (n, cond_dim) and noise (n, latent_dim), whose std
    is sqrt(temp); `num_steps` is the reference's sampler_decode_steps (only LSD/OT use it)."""
    if num_steps < 1:
        raise ValueError(f"decode steps must be >= 1, got {num_steps}")
    return DECODERS[cfg.flow_type](g, w, cfg, h, noise, num_steps)


def flow_lm_step(
    g: Graph,
    w: Weights,
    cfg: FlowLMConfig,
    cond_rows: Tensor | None,
    latent_rows: Tensor | None,
    inputs: AttentionInputs,
    caches: Sequence[LayerKV],
    noise: Tensor,
    decode_steps: int = 1,
    stages: dict[str, Tensor] | None = None,
    n_out: int = 1,
    tap: ScoreTap | None = None,
) -> dict[str, Tensor]:
    """FlowLMModel.forward for one call: [cond_rows | input_linear(latent_rows)] through the
    backbone; from the last row, `h` (1, cond_dim), `eos_logit` (1, 1) and the sampled `latent`.

    cond_rows are (N, d_model) text or voice rows; latent_rows (M, latent_dim) have BOS filled in.
    With `stages`, the backbone's intermediates (see `flow_lm_backbone`, over the last `n_out`
    rows) are added to the outputs. With `tap`, the last row's attention scores are too, as
    `text_scores` (heads, keys), the heads in the order of `tap.heads_by_layer`.
    """
    parts = [] if cond_rows is None else [cond_rows]
    if latent_rows is not None:
        parts.append(flow_lm_input(g, w, cfg, latent_rows, width(noise)))
    if not parts:
        raise ValueError("a FlowLM call needs conditioning rows or latent rows")
    x = parts[0] if len(parts) == 1 else ggml.ggml_concat(g.ctx, parts[0], parts[1], 1)
    expect_shape(noise, (1, width(noise)), "sampler noise")
    h = flow_lm_backbone(g, w, cfg, x, inputs, caches, n_out, stages, tap)
    if n_out > 1:
        h = last_rows(g, h, 1)
    out = {
        "h": h,
        "eos_logit": flow_lm_eos_logit(g, w, cfg, h),
        "latent": flow_head_sample(g, w, cfg, h, noise, decode_steps),
    }
    if stages is not None:
        out.update(stages)
    if tap is not None and tap.scores:
        # One (keys, heads) output, in the order the tap lists its heads: one read per step, not one per head.
        views = [tap.scores[(layer, head)] for layer, heads in tap.heads_by_layer.items() for head in heads]
        scores = ggml.ggml_reshape_2d(g.ctx, views[0], tensor_ne(views[0])[0], 1)
        for view in views[1:]:
            scores = ggml.ggml_concat(g.ctx, scores, ggml.ggml_reshape_2d(g.ctx, view, tensor_ne(view)[0], 1), 1)
        out["text_scores"] = scores
    return out
