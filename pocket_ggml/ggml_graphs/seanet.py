"""Mimi's SEANet encoder and decoder (pocket_tts/modules/seanet.py) as ggml graph fragments.

Activations are channel-fastest, ggml ne [C, T] (conv.py). The layer plan mirrors the reference's
constructors, module indices included, so that weights are found by released name
(`mimi.<module>.conv.weight`) and streaming state is named `<module>.previous` / `<module>.partial`
after the reference's `init_states(mimi)` keys (e.g. `decoder.model.3.block.1.previous`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pocket_ggml.format.config import SEANetConfig
from pocket_ggml.ggml_binding import Tensor, ggml, tensor_ne
from pocket_ggml.ggml_graphs.conv import conv1d_history, streaming_conv1d, streaming_conv_transpose1d
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.nn import Weights, expect_shape, gguf_name, weight

ENCODER = "encoder.model"  # the reference's module paths under MimiModel
DECODER = "decoder.model"
CHANNEL_FAST_SUFFIX = ".channel_fast"


@dataclass(frozen=True)
class SeanetConv:
    """One StreamingConv1d / StreamingConvTranspose1d of the plan."""

    module: str  # reference module path under MimiModel, e.g. "decoder.model.3.block.1"
    c_in: int
    c_out: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    transposed: bool = False

    @property
    def weight_names(self) -> tuple[str, str]:
        """Released names of the kernel and bias."""
        leaf = "convtr" if self.transposed else "conv"
        return f"mimi.{self.module}.{leaf}.weight", f"mimi.{self.module}.{leaf}.bias"

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """The stored kernel matrix (numpy order): (C_out, C_in*K), or (C_out*K, C_in) if transposed."""
        if self.transposed:
            return self.c_out * self.kernel, self.c_in
        return self.c_out, self.c_in * self.kernel

    @property
    def state(self) -> tuple[str, tuple[int, int]] | None:
        """(name, numpy shape (steps, channels)) of the streaming state; pointwise convs have none."""
        if self.transposed:
            return f"{self.module}.partial", (self.kernel - self.stride, self.c_out)
        history = conv1d_history(self.kernel, self.stride, self.dilation)
        return (f"{self.module}.previous", (history, self.c_in)) if history else None


@dataclass(frozen=True)
class SeanetResBlock:
    """SEANetResnetBlock with its two convs (kernel `residual_kernel_size` then 1)."""

    module: str
    convs: tuple[SeanetConv, SeanetConv]


SeanetLayer = SeanetConv | SeanetResBlock


def _resblock(module: str, dim: int, s: SEANetConfig, dilation: int) -> SeanetResBlock:
    hidden = dim // s.compress
    return SeanetResBlock(
        module,
        (
            SeanetConv(f"{module}.block.1", dim, hidden, s.residual_kernel_size, dilation=dilation),
            SeanetConv(f"{module}.block.3", hidden, dim, 1),
        ),
    )


def seanet_encoder_plan(s: SEANetConfig, module: str = ENCODER) -> tuple[SeanetLayer, ...]:
    """SEANetEncoder.__init__: conv, then per reversed ratio [resblocks, ELU, strided conv], ELU, conv."""
    layers: list[SeanetLayer] = [SeanetConv(f"{module}.0", s.channels, s.n_filters, s.kernel_size)]
    idx, dim = 1, s.n_filters
    for ratio in reversed(s.ratios):
        for j in range(s.n_residual_layers):
            layers.append(_resblock(f"{module}.{idx}", dim, s, s.dilation_base**j))
            idx += 1
        idx += 1  # ELU
        layers.append(SeanetConv(f"{module}.{idx}", dim, 2 * dim, 2 * ratio, stride=ratio))
        idx += 1
        dim *= 2
    idx += 1  # ELU
    layers.append(SeanetConv(f"{module}.{idx}", dim, s.dimension, s.last_kernel_size))
    return tuple(layers)


def seanet_decoder_plan(s: SEANetConfig, module: str = DECODER) -> tuple[SeanetLayer, ...]:
    """SEANetDecoder.__init__: conv, then per ratio [ELU, transposed conv, resblocks], ELU, conv."""
    dim = 2 ** len(s.ratios) * s.n_filters
    layers: list[SeanetLayer] = [SeanetConv(f"{module}.0", s.dimension, dim, s.kernel_size)]
    idx = 1
    for ratio in s.ratios:
        idx += 1  # ELU
        layers.append(SeanetConv(f"{module}.{idx}", dim, dim // 2, 2 * ratio, stride=ratio, transposed=True))
        idx += 1
        dim //= 2
        for j in range(s.n_residual_layers):
            layers.append(_resblock(f"{module}.{idx}", dim, s, s.dilation_base**j))
            idx += 1
    idx += 1  # ELU
    layers.append(SeanetConv(f"{module}.{idx}", dim, s.channels, s.last_kernel_size))
    return tuple(layers)


def seanet_convs(plan: tuple[SeanetLayer, ...]) -> list[SeanetConv]:
    """Every conv of a plan, in order."""
    return [c for layer in plan for c in (layer.convs if isinstance(layer, SeanetResBlock) else (layer,))]


def seanet_state_shapes(plan: tuple[SeanetLayer, ...]) -> dict[str, tuple[int, int]]:
    """Streaming state of a plan: name -> numpy shape (steps, channels), i.e. ggml ne [C, steps]."""
    return dict(c.state for c in seanet_convs(plan) if c.state is not None)


def elu(g: Graph, x: Tensor) -> Tensor:
    """nn.ELU(alpha=1) = relu(x) + expm1(u), u = min(x, 0), with the exponential from ggml's SiLU,
    the one unary op ggml vectorises with an exp inside (ggml_elu and ggml_expm1 call libm's expm1f
    value by value: 13% of a Mimi frame). For u' = u - 1e-30 < 0, silu(u') = u' sigmoid(u') and
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
