"""Mimi's frame-rate changes and quantizer projection (pocket_tts/modules/resample.py, dummy_quantizer.py).

Activations are channel-fastest, ggml ne [C, T], as in conv.py. The 12.5 Hz latent side and the 200 Hz
transformer side differ by `MimiConfig.resample_stride` (16).
"""

from __future__ import annotations

from collections.abc import Mapping

from pocket_ggml.format.config import MimiConfig
from pocket_ggml.ggml_binding import GGML_TYPE_F32, Tensor, ggml, ggml_type_of
from pocket_ggml.ggml_graphs.conv import (
    check_activation,
    check_conv1d,
    conv1d,
    conv1d_history,
    overlap_add,
    streaming_conv1d,
    time_slice,
)
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.nn import Weights, weight

UPSAMPLE = "upsample.convtr"  # the reference's module paths under MimiModel (weights and state)
DOWNSAMPLE = "downsample.conv"
QUANTIZER = "quantizer.output_proj"


def quantizer_output_proj(g: Graph, w: Weights, cfg: MimiConfig, x: Tensor) -> Tensor:
    """DummyQuantizer: Conv1d k=1 without bias, [latent_dim, T] -> [quantizer_output_dim, T]."""
    kernel = weight(w, f"mimi.{QUANTIZER}.weight", (cfg.quantizer_output_dim, cfg.latent_dim))
    return streaming_conv1d(g, x, kernel, None, kernel_size=1)


def conv_tr_upsample_state_shapes(cfg: MimiConfig) -> dict[str, tuple[int, int]]:
    """The upsample's streaming state: name -> numpy shape (steps, channels), i.e. ggml ne [C, S]."""
    return {f"{UPSAMPLE}.partial": (cfg.resample_stride, cfg.decoder_seanet.dimension)}


def conv_tr_upsample(g: Graph, w: Weights, cfg: MimiConfig, x: Tensor, state: Mapping[str, Tensor]) -> Tensor:
    """ConvTrUpsample1d: depthwise ConvTranspose1d k=2S stride S, no bias: [C, T] -> [C, T*S].

    Each channel's 2S outputs per input step are that channel's kernel times the step's value (a
    broadcast multiply); col2im_1d overlap-adds the steps, and `partial` carries the last S outputs
    into the next call. Reads and writes `state["upsample.convtr.partial"]` [C, S].
    """
    s = cfg.resample_stride
    c = cfg.decoder_seanet.dimension
    if (cfg.outer_dim or c) != c:
        raise ValueError("conv_tr_upsample: a depthwise upsample needs outer_dim == the decoder dimension")
    kernel = weight(w, f"mimi.{UPSAMPLE}.convtr.weight", (c, 2 * s))  # released (C, 1, 2S)
    if ggml_type_of(kernel) != GGML_TYPE_F32:
        raise ValueError("conv_tr_upsample: the depthwise kernel must be F32 (it is multiplied, not matmul'd)")
    t = check_activation(x, c, "conv_tr_upsample input")
    ctx = g.ctx
    x3 = ggml.ggml_reshape_3d(ctx, ggml.ggml_cont(ctx, ggml.ggml_transpose(ctx, x)), 1, t, c)
    k3 = ggml.ggml_repeat_4d(ctx, ggml.ggml_reshape_3d(ctx, kernel, 2 * s, 1, c), 2 * s, t, c, 1)
    cols = ggml.ggml_cont(ctx, ggml.ggml_permute(ctx, ggml.ggml_mul(ctx, k3, x3), 0, 2, 1, 3))  # [2S, C, T]
    y = ggml.ggml_col2im_1d(ctx, ggml.ggml_reshape_2d(ctx, cols, 2 * s * c, t), s, c, 0)
    return overlap_add(g, y, t * s, state[f"{UPSAMPLE}.partial"])


def conv_downsample(g: Graph, w: Weights, cfg: MimiConfig, x: Tensor) -> Tensor:
    """ConvDownsample1d as the encoder calls it (no state): Conv1d k=2S stride S without bias,
    [C, T] -> [C_out, T/S], after S copies of the first step (pad_mode "replicate")."""
    s = cfg.resample_stride
    c = cfg.encoder_seanet.dimension
    kernel = weight(w, f"mimi.{DOWNSAMPLE}.conv.weight", (cfg.speaker_dim, c * 2 * s))
    _, _, t = check_conv1d(x, kernel, None, 2 * s, s, 1)
    history = conv1d_history(2 * s, s)
    if t < history:
        raise ValueError(f"conv_downsample: needs at least {history} steps, got {t}")
    ctx = g.ctx
    first = ggml.ggml_repeat_4d(ctx, time_slice(g, x, 0, 1), c, history, 1, 1)
    return conv1d(g, ggml.ggml_concat(ctx, first, x, 1), kernel, kernel_size=2 * s, stride=s)
