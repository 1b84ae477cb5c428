"""Mimi's SEANet encoder and decoder (pocket_tts/modules/seanet.py) as ggml graph fragments.

Activations are channel-fastest, ggml ne [C, T] (conv.py). The layer plan (`pocket_ggml.format.seanet`)
mirrors the reference's constructors, module indices included, so that weights are found by released
name (`mimi.<module>.conv.weight`) and streaming state is named `<module>.previous` / `<module>.partial`
after the reference's `init_states(mimi)` keys (e.g. `decoder.model.3.block.1.previous`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pocket_ggml.format.config import SEANetConfig
from pocket_ggml.format.seanet import (
    SeanetConv,
    SeanetLayer,
    SeanetResBlock,
    seanet_convs,
    seanet_decoder_plan,
    seanet_encoder_plan,
)
from pocket_ggml.ggml_binding import Tensor, ggml, tensor_ne
from pocket_ggml.ggml_graphs.conv import streaming_conv1d, streaming_conv_transpose1d
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.nn import Weights, expect_shape, gguf_name, weight

CHANNEL_FAST_SUFFIX = ".channel_fast"


def seanet_state_shapes(plan: tuple[SeanetLayer, ...]) -> dict[str, tuple[int, int]]:
    """Streaming state of a plan: name -> numpy shape (steps, channels), i.e. ggml ne [C, steps]."""
    return dict(c.state for c in seanet_convs(plan) if c.state is not None)


def elu(g: Graph, x: Tensor) -> Tensor:
    """nn.ELU(alpha=1) = relu(x) + expm1(u), u = min(x, 0), with the exponential from ggml's SiLU,
    the one unary op ggml vectorises with an exp inside (ggml_elu and ggml_expm1 call libm's expm1f
    value by value, a large share of a Mimi frame). For u' = u - 1e-30 < 0, silu(u') = u' sigmoid(u') and
    u' - silu(u') = u' sigmoid(-u'), so e^u' = silu(u') / (u' - silu(u')) with no cancellation;
    expm1(u) is then that less 1: within 3e-7 of the exact value (absolute; libm: 6e-8), so values
    near zero lose relative precision (a conv of them does not: it sums values of order 1).
    (ggml_clamp would give u' in one op, but it writes into its input, which a resblock still needs.)"""
    ctx = g.ctx
    r = ggml.ggml_relu(ctx, x)
    u = ggml.ggml_scale_bias(ctx, ggml.ggml_sub(ctx, x, r), 1.0, -1e-30)  # < 0 even where x >= 0
    s = ggml.ggml_silu(ctx, u)
    exp_u = ggml.ggml_div(ctx, s, ggml.ggml_sub(ctx, u, s))
    return ggml.ggml_add(ctx, ggml.ggml_scale_bias(ctx, r, 1.0, -1.0), exp_u)


def channel_fast_name(conv: SeanetConv) -> str:
    """Name of the conv's channel-fast kernel copy (conv.py), which a runtime may add to the weights."""
    return gguf_name(conv.weight_names[0]) + CHANNEL_FAST_SUFFIX


def has_channel_fast_form(conv: SeanetConv) -> bool:
    """Whether conv.py has a channel-fast path for this conv (pointwise convs need none)."""
    if conv.transposed:
        return conv.kernel == 2 * conv.stride
    return conv.kernel > 1 and conv.dilation == 1


def seanet_conv(g: Graph, w: Weights, conv: SeanetConv, x: Tensor, state: Mapping[str, Tensor] | None) -> Tensor:
    """One conv of the plan; with `state` None a conv starts from zero history (transposed convs need state).
    Uses the channel-fast kernel when the weights have one (`channel_fast_name`)."""
    kernel_name, bias_name = conv.weight_names
    channel_fast = channel_fast_name(conv) in w
    if channel_fast:
        kernel = w[channel_fast_name(conv)]
        expect_shape(kernel, conv.kernel_shape, channel_fast_name(conv))
    else:
        kernel = weight(w, kernel_name, conv.kernel_shape)
    bias = weight(w, bias_name, (conv.c_out,))
    if conv.transposed:
        if state is None:
            raise ValueError(f"{conv.module}: a transposed conv needs its partial state")
        return streaming_conv_transpose1d(
            g,
            x,
            kernel,
            bias,
            kernel_size=conv.kernel,
            stride=conv.stride,
            partial=state[conv.state[0]],
            channel_fast=channel_fast,
        )
    previous = state[conv.state[0]] if state is not None and conv.state is not None else None
    return streaming_conv1d(
        g,
        x,
        kernel,
        bias,
        kernel_size=conv.kernel,
        stride=conv.stride,
        dilation=conv.dilation,
        previous=previous,
        channel_fast=channel_fast,
    )


def seanet_resblock(
    g: Graph, w: Weights, block: SeanetResBlock, x: Tensor, state: Mapping[str, Tensor] | None
) -> Tensor:
    """SEANetResnetBlock: x + conv_k1(ELU(conv_k(ELU(x))))."""
    ctx = g.ctx
    v = x
    for conv in block.convs:
        v = seanet_conv(g, w, conv, elu(g, v), state)
    return ggml.ggml_add(ctx, x, v)


def _seanet(
    g: Graph, w: Weights, plan: tuple[SeanetLayer, ...], x: Tensor, state: Mapping[str, Tensor] | None
) -> Tensor:
    for i, layer in enumerate(plan):
        if isinstance(layer, SeanetResBlock):
            x = seanet_resblock(g, w, layer, x, state)
        else:
            if i:  # every top-level conv but the first follows an ELU (resblocks have their own)
                x = elu(g, x)
            x = seanet_conv(g, w, layer, x, state)
    return x


def seanet_decoder(g: Graph, w: Weights, cfg: SEANetConfig, x: Tensor, state: Mapping[str, Tensor]) -> Tensor:
    """SEANetDecoder, streaming: x [dimension, T] -> audio [channels, T * hop_length].

    Reads and writes every tensor of `seanet_state_shapes(seanet_decoder_plan(cfg))` in `state`.
    """
    return _seanet(g, w, seanet_decoder_plan(cfg), x, state)


def seanet_encoder(
    g: Graph, w: Weights, cfg: SEANetConfig, x: Tensor, state: Mapping[str, Tensor] | None = None
) -> Tensor:
    """SEANetEncoder: audio [channels, T] -> [dimension, T / hop_length].

    Without `state` every conv starts from zeros: the reference's non-streaming encoder
    (`model_state=None`). With `state` (the tensors of `seanet_state_shapes(seanet_encoder_plan(cfg))`)
    a long clip can be encoded in consecutive chunks that give the same result.
    """
    t = tensor_ne(x)[1]
    if t % cfg.hop_length:
        raise ValueError(f"seanet_encoder: {t} samples is not a multiple of the hop length {cfg.hop_length}")
    return _seanet(g, w, seanet_encoder_plan(cfg), x, state)
