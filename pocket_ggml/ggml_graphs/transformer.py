"""StreamingTransformer and ProjectedTransformer (pocket_tts/modules/transformer.py).

The same pre-norm layer serves FlowLM (no LayerScale, full causal, GQA) and the Mimi transformers
(LayerScale, a context window). Activations are (T, d): `ne = [d, T]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pocket_ggml.format.config import FlowLMConfig, MimiTransformerConfig
from pocket_ggml.ggml_binding import Tensor, ggml
from pocket_ggml.ggml_graphs.attention import (
    AttentionInputs,
    AttentionShape,
    LayerKV,
    ScoreTap,
    streaming_attention,
)
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.nn import (
    Weights,
    expect_shape,
    gelu_tanh,
    layer_norm,
    linear,
    row_count,
    weight,
    width,
)

NORM_EPS = 1e-5  # nn.LayerNorm(d_model, eps=1e-5) for norm1, norm2 and FlowLM's out_norm


@dataclass(frozen=True)
class TransformerShape:
    attention: AttentionShape
    num_layers: int
    dim_feedforward: int
    layer_scale: bool

    @property
    def d_model(self) -> int:
        return self.attention.d_model

    @classmethod
    def for_flow_lm(cls, cfg: FlowLMConfig) -> TransformerShape:
        attn = AttentionShape(cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.max_period)
        return cls(attn, cfg.num_layers, cfg.dim_feedforward, layer_scale=False)

    @classmethod
    def for_mimi(cls, cfg: MimiTransformerConfig) -> TransformerShape:
        attn = AttentionShape(cfg.d_model, cfg.num_heads, cfg.num_heads, cfg.head_dim, cfg.max_period)
        return cls(attn, cfg.num_layers, cfg.dim_feedforward, layer_scale=True)


def transformer_layer(
    g: Graph,
    w: Weights,
    prefix: str,
    x: Tensor,
    shape: TransformerShape,
    inputs: AttentionInputs,
    cache: LayerKV | None,
    tap: ScoreTap | None = None,
    layer: int = 0,
) -> Tensor:
    """StreamingTransformerLayer (pre-norm):
    x += ls1 * attn(norm1(x)); x += ls2 * linear2(gelu_tanh(linear1(norm2(x)))).
    `tap`/`layer`: attention scores to output (`ScoreTap`), this being layer number `layer`."""
    ctx, d, ff = g.ctx, shape.d_model, shape.dim_feedforward
    n1w, n1b, n2w, n2b = (
        weight(w, f"{prefix}.{n}", (d,)) for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")
    )
    w1 = weight(w, f"{prefix}.linear1.weight", (ff, d))
    w2 = weight(w, f"{prefix}.linear2.weight", (d, ff))
    ls1 = ls2 = None
    if shape.layer_scale:
        ls1 = weight(w, f"{prefix}.layer_scale_1.scale", (d,))
        ls2 = weight(w, f"{prefix}.layer_scale_2.scale", (d,))

    h = layer_norm(ctx, x, NORM_EPS, n1w, n1b)
    update = streaming_attention(g, w, f"{prefix}.self_attn", h, shape.attention, inputs, cache, tap, layer)
    x = ggml.ggml_add(ctx, x, update if ls1 is None else ggml.ggml_mul(ctx, update, ls1))
    update = linear(ctx, gelu_tanh(ctx, linear(ctx, layer_norm(ctx, x, NORM_EPS, n2w, n2b), w1)), w2)
    return ggml.ggml_add(ctx, x, update if ls2 is None else ggml.ggml_mul(ctx, update, ls2))


def streaming_transformer(
    g: Graph,
    w: Weights,
    prefix: str,
    x: Tensor,
    shape: TransformerShape,
    inputs: AttentionInputs,
    caches: Sequence[LayerKV] | None,
    layer_outputs: list[Tensor] | None = None,
    layers: range | None = None,
    tap: ScoreTap | None = None,
) -> Tensor:
    """StreamingTransformer over x (T, d_model); `caches` holds one LayerKV per layer, or None.
    Each layer's output is appended to `layer_outputs` when given (for per-layer parity). `layers`:
    the consecutive layers to run (default all), e.g. one part of a transformer split across graphs.
    `tap`: attention scores to output as well (`ScoreTap`)."""
    expect_shape(x, (inputs.n_rows, shape.d_model), f"{prefix} input")
    if caches is not None and len(caches) != shape.num_layers:
        raise ValueError(f"{prefix}: {len(caches)} caches for {shape.num_layers} layers")
    layers = range(shape.num_layers) if layers is None else layers
    if layers.step != 1 or not 0 <= layers.start <= layers.stop <= shape.num_layers:
        raise ValueError(f"{prefix}: layers {layers} of {shape.num_layers}")
    for layer in layers:
        cache = None if caches is None else caches[layer]
        x = transformer_layer(g, w, f"{prefix}.layers.{layer}", x, shape, inputs, cache, tap, layer)
        if layer_outputs is not None:
            layer_outputs.append(x)
    return x


def projected_transformer(
    g: Graph,
    w: Weights,
    prefix: str,
    x: Tensor,
    cfg: MimiTransformerConfig,
    inputs: AttentionInputs,
    caches: Sequence[LayerKV] | None,
    layers: range | None = None,
) -> list[Tensor]:
    """ProjectedTransformer (Mimi): optional input_proj, the transformer, one output per output_projs.

    x is (T, input_dimension), i.e. the reference's (B, C, T) input already transposed. With `layers`
    (consecutive, default all) only those layers run: input_proj only with the first layer, the output
    projections only with the last; a part that ends earlier returns [its (T, d_model) output].
    """
    ctx, d = g.ctx, cfg.d_model
    shape = TransformerShape.for_mimi(cfg)
    layers = range(shape.num_layers) if layers is None else layers
    if layers.start == 0:
        expect_shape(x, (row_count(x), cfg.input_dimension), f"{prefix} input")
        if width(x) != d:
            x = linear(ctx, x, weight(w, f"{prefix}.input_proj.weight", (d, cfg.input_dimension)))
    z = streaming_transformer(g, w, f"{prefix}.transformer", x, shape, inputs, caches, layers=layers)
    if layers.stop != shape.num_layers:
        return [z]
    return [
        z if od == d else linear(ctx, z, weight(w, f"{prefix}.output_projs.{k}.weight", (od, d)))
        for k, od in enumerate(cfg.output_dimensions)
    ]
