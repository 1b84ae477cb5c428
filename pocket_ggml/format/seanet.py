"""The SEANet module walk: the convs of a SEANetEncoder / SEANetDecoder (pocket_tts/modules/seanet.py)
with the reference's module paths and sizes, from the config alone.

The tensor names of a checkpoint (`names.expected_tensors`) and the graph builders
(`pocket_ggml.ggml_graphs.seanet`) both follow this one plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from pocket_ggml.format.config import SEANetConfig


def conv1d_history(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Input steps a streaming conv keeps between calls (the reference's `previous`)."""
    return (kernel_size - 1) * dilation + 1 - stride


ENCODER = "encoder.model"  # the reference's module paths under MimiModel
DECODER = "decoder.model"


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
    def released_kernel_shape(self) -> tuple[int, int, int]:
        """The kernel as a checkpoint holds it: (C_out, C_in, K), or (C_in, C_out, K) if transposed."""
        if self.transposed:
            return self.c_in, self.c_out, self.kernel
        return self.c_out, self.c_in, self.kernel

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
