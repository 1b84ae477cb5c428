"""Streaming 1-D convolutions (pocket_tts/modules/conv.py) as ggml graph fragments.

Layout: activations are channel-fastest, ggml ne [C, T] (numpy (T, C)), as the Mimi transformers read
and write them. Streaming state tensors use the same layout: a conv's `previous` is [C_in, K_eff - S],
a transposed conv's `partial` is [C_out, K - S]. They are persistent tensors (a `StateStore`); each
builder reads the old value and schedules the write of the new one in the same graph. The write is a
`ggml_cpy` out of a tensor computed from the old value, so ggml runs it after every read.

A convolution is im2col + mul_mat: ggml's conv_1d aborts on an F32 kernel and rounds through F16
otherwise, and conv_transpose_1d is ~40x slower than mul_mat + col2im_1d at Mimi sizes. Kernels are
matrices as stored (pocket_ggml.format.names): Conv1d (C_out, C_in*K), i.e. ne [C_in*K, C_out];
ConvTranspose1d (C_out*K, C_in), i.e. ne [C_in, K*C_out]. Any type mul_mat takes works (F32, F16,
quantized when the row fits the block size).

Kernels re-laid out channel-fastest (`channel_fast_kernel`, `channel_fast_kernel_tr`) skip the layout
changes: a Conv1d's (C_out, K*C_in) kernel multiplies an overlapping view of the input directly (each
window is K*C_in consecutive values), with no transpose and no im2col; a ConvTranspose1d whose kernel
is 2*stride with rows (k, c_out) overlap-adds by adding the two halves of consecutive steps, with no
col2im and no transpose. Same sums, in the same order.
"""

from __future__ import annotations

import numpy as np

from pocket_ggml.format.seanet import conv1d_history
from pocket_ggml.ggml_binding import (
    GGML_TYPE_F32,
    Tensor,
    ggml,
    ggml_type_of,
    overlapping_view_2d,
    tensor_nb,
    tensor_ne,
)
from pocket_ggml.ggml_graphs.graph import Graph


def check_activation(x: Tensor, channels: int, what: str) -> int:
    """Validate an F32 [channels, T] activation; returns T."""
    c, t, *rest = tensor_ne(x)
    if ggml_type_of(x) != GGML_TYPE_F32 or rest != [1, 1] or c != channels:
        raise ValueError(f"{what}: expected an F32 [C={channels}, T] activation, got ne {list(tensor_ne(x))}")
    return t


def check_state(s: Tensor, channels: int, steps: int, what: str) -> None:
    if ggml_type_of(s) != GGML_TYPE_F32 or tensor_ne(s) != (channels, steps, 1, 1):
        raise ValueError(f"{what}: state must be F32 of ne [{channels}, {steps}], got {list(tensor_ne(s))}")


def check_kernel(t: Tensor, ne0: int, ne1: int, what: str) -> None:
    """A kernel matrix of any type mul_mat takes, in rows of whole quantization blocks."""
    if tensor_ne(t) != (ne0, ne1, 1, 1):
        raise ValueError(f"{what}: ne {list(tensor_ne(t))}, expected [{ne0}, {ne1}]")
    if ne0 % ggml.ggml_blck_size(ggml_type_of(t)):
        raise ValueError(f"{what}: rows of {ne0} are not whole {ggml.ggml_type_name(ggml_type_of(t)).decode()} blocks")


def check_bias(t: Tensor | None, channels: int, what: str) -> None:
    if t is not None and (ggml_type_of(t) != GGML_TYPE_F32 or tensor_ne(t) != (channels, 1, 1, 1)):
        raise ValueError(f"{what}: bias must be F32 of ne [{channels}], got {list(tensor_ne(t))}")


def time_slice(g: Graph, x: Tensor, first: int, count: int) -> Tensor:
    """Steps [first, first + count) of a contiguous [C, T] activation (a contiguous view)."""
    if not ggml.ggml_is_contiguous(x):
        raise ValueError("time_slice: the activation must be contiguous")
    nb1 = tensor_nb(x)[1]
    return ggml.ggml_view_2d(g.ctx, x, tensor_ne(x)[0], count, nb1, first * nb1)


def stacked(g: Graph, first: Tensor, then: Tensor) -> Tensor:
    """A new contiguous F32 [C, a + b] holding [C, a] `first`, then [C, b] `then` (either may be a
    strided view): two copies, which ggml runs as row memcpys on every thread, where ggml_concat
    copies value by value on one thread (a tenth of a SEANet frame).

    The result is a view of the first copy; the second is scheduled here, so any op built on the
    result runs after both (ggml computes a graph's nodes in the order they were added)."""
    ctx = g.ctx
    c, a = tensor_ne(first)[:2]
    b = tensor_ne(then)[1]
    if tensor_ne(then)[0] != c:
        raise ValueError(f"stacked: {c} and {tensor_ne(then)[0]} channels")
    window = ggml.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c, a + b)
    nb1 = tensor_nb(window)[1]
    head = ggml.ggml_cpy(ctx, first, ggml.ggml_view_2d(ctx, window, c, a, nb1, 0))
    # views of `head` (its base is `window`) so that both copies are parents of what reads the window
    g.expand(ggml.ggml_cpy(ctx, then, ggml.ggml_view_2d(ctx, head, c, b, nb1, a * nb1)))
    return ggml.ggml_view_2d(ctx, head, c, a + b, nb1, 0)


def conv1d(g: Graph, xp: Tensor, weight: Tensor, *, kernel_size: int, stride: int = 1, dilation: int = 1) -> Tensor:
    """Unpadded Conv1d without bias: xp [C_in, T] (already padded) -> [C_out, (T - K_eff) // stride + 1]."""
    ctx = g.ctx
    # im2col wants time contiguous; it yields [C_in*K, T_out] with k fastest, the kernel's row order.
    x_t = ggml.ggml_cont(ctx, ggml.ggml_transpose(ctx, xp))
    # im2col reads only (K, C_in) from its kernel operand: any [K, C_in] tensor will do, and a view of
    # the input is free (the stored kernel is a matrix, possibly quantized).
    shape = ggml.ggml_view_2d(ctx, x_t, kernel_size, tensor_ne(x_t)[1], tensor_nb(x_t)[1], 0)
    cols = ggml.ggml_im2col(ctx, shape, x_t, stride, 0, 0, 0, dilation, 0, False, GGML_TYPE_F32)
    return ggml.ggml_mul_mat(ctx, weight, cols)


def channel_fast_kernel(kernel: np.ndarray, kernel_size: int) -> np.ndarray:
    """A stored Conv1d kernel (C_out, C_in*K) as (C_out, K*C_in), for `channel_fast=True` convs."""
    c_out, row = kernel.shape
    return np.ascontiguousarray(kernel.reshape(c_out, row // kernel_size, kernel_size).transpose(0, 2, 1)).reshape(
        c_out, row
    )


def channel_fast_kernel_tr(kernel: np.ndarray, kernel_size: int) -> np.ndarray:
    """A stored ConvTranspose1d kernel (C_out*K, C_in) with rows (k, c_out) instead of (c_out, k);
    works on raw bytes of any type (rows are whole blocks)."""
    n_rows, row = kernel.shape
    return np.ascontiguousarray(kernel.reshape(n_rows // kernel_size, kernel_size, row).transpose(1, 0, 2)).reshape(
        n_rows, row
    )


def conv1d_channel_fast(g: Graph, xp: Tensor, weight: Tensor, *, kernel_size: int, stride: int = 1) -> Tensor:
    """`conv1d` with a `channel_fast_kernel` (dilation 1): the windows of a contiguous xp [C_in, T]
    are an overlapping view [K*C_in, T_out], which mul_mat takes as it is."""
    ctx = g.ctx
    if not ggml.ggml_is_contiguous(xp):
        xp = ggml.ggml_cont(ctx, xp)
    c_in, t = tensor_ne(xp)[:2]
    nb1 = tensor_nb(xp)[1]
    cols = overlapping_view_2d(ctx, xp, c_in * kernel_size, (t - kernel_size) // stride + 1, stride * nb1)
    if ggml_type_of(weight) == GGML_TYPE_F32:
        # LLAMAFILE's sgemm needs a contiguous F32 operand; other kernel types convert it row by row.
        cols = ggml.ggml_cont(ctx, cols)
    return ggml.ggml_mul_mat(ctx, weight, cols)


def check_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, kernel_size: int, stride: int, dilation: int
) -> tuple[int, int, int]:
    """Validate a Conv1d's operands; returns (C_in, C_out, T)."""
    if kernel_size < 1 or stride < 1 or dilation < 1 or conv1d_history(kernel_size, stride, dilation) < 0:
        raise ValueError(f"conv1d: kernel {kernel_size} / stride {stride} / dilation {dilation}")
    row, c_out = tensor_ne(weight)[:2]
    c_in = row // kernel_size
    check_kernel(weight, c_in * kernel_size, c_out, "conv1d kernel")
    t = check_activation(x, c_in, "conv1d input")
    check_bias(bias, c_out, "conv1d")
    if t % stride:
        raise ValueError(f"conv1d: {t} steps is not a multiple of the stride {stride}")
    return c_in, c_out, t


def streaming_conv1d(
    g: Graph,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    previous: Tensor | None = None,
    channel_fast: bool = False,
) -> Tensor:
    """StreamingConv1d with constant (zero) padding: x [C_in, T] -> [C_out, T / stride].

    With `previous` (state [C_in, conv1d_history(...)]) the history is prepended and the last steps of
    [previous | x] become the new history. Without it the history is zeros: the reference's
    `model_state=None`, as the non-streaming encoder runs. `channel_fast`: the kernel is a
    `channel_fast_kernel` (dilation 1 only).
    """
    if channel_fast and dilation != 1:
        raise ValueError("conv1d: a channel-fast kernel needs dilation 1")
    c_in, _, t = check_conv1d(x, weight, bias, kernel_size, stride, dilation)
    history = conv1d_history(kernel_size, stride, dilation)
    ctx = g.ctx
    if kernel_size == 1 and stride == 1:  # a pointwise conv is one matmul in the channel-fastest layout
        y = ggml.ggml_mul_mat(ctx, weight, x)
    else:
        if history == 0:
            xp = x
        elif previous is None:
            xp = ggml.ggml_pad_ext(ctx, x, 0, 0, history, 0, 0, 0, 0, 0)
        else:
            check_state(previous, c_in, history, "conv1d previous")
            xp = stacked(g, previous, x)
            g.expand(ggml.ggml_cpy(ctx, time_slice(g, xp, t, history), previous))
        if channel_fast:
            y = conv1d_channel_fast(g, xp, weight, kernel_size=kernel_size, stride=stride)
        else:
            y = conv1d(g, xp, weight, kernel_size=kernel_size, stride=stride, dilation=dilation)
    return y if bias is None else ggml.ggml_add(ctx, y, bias)


def overlap_add(g: Graph, y_time_fast: Tensor, steps: int, partial: Tensor) -> Tensor:
    """The streaming end of a transposed conv: y [T_full, C] (time fastest, no bias) -> [C, steps].

    The old `partial` [C, T_full - steps] is added to the first steps; the last T_full - steps steps
    become the new `partial`. The reference stores (y + bias)[-PT:] - bias; we store y[-PT:] (no bias
    was added yet), which differs by one rounding.
    """
    ctx = g.ctx
    t_full, c = tensor_ne(y_time_fast)[:2]
    tail = t_full - steps
    check_state(partial, c, tail, "conv_transpose1d partial")
    y = ggml.ggml_cont(ctx, ggml.ggml_transpose(ctx, y_time_fast))
    y = ggml.ggml_acc_inplace(ctx, y, partial, *tensor_nb(y)[1:], 0)
    g.expand(ggml.ggml_cpy(ctx, time_slice(g, y, steps, tail), partial))
    return time_slice(g, y, 0, steps)


def streaming_conv_transpose1d(
    g: Graph,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    kernel_size: int,
    stride: int,
    partial: Tensor,
    channel_fast: bool = False,
) -> Tensor:
    """StreamingConvTranspose1d: x [C_in, T] -> [C_out, T * stride], with `partial` [C_out, K - stride].

    mul_mat gives each input step's K outputs per channel ([K*C_out, T], k fastest); col2im_1d
    overlap-adds them into (T-1)*stride + K steps. `channel_fast`: the kernel is a
    `channel_fast_kernel_tr` and K = 2*stride (see `overlap_add_halves`).
    """
    if not 0 < stride < kernel_size:
        raise ValueError(f"conv_transpose1d: stride {stride} for kernel {kernel_size}")
    if channel_fast and kernel_size != 2 * stride:
        raise ValueError("conv_transpose1d: a channel-fast kernel needs kernel_size == 2 * stride")
    c_in, outputs = tensor_ne(weight)[:2]
    c_out = outputs // kernel_size
    check_kernel(weight, c_in, kernel_size * c_out, "conv_transpose1d kernel")
    t = check_activation(x, c_in, "conv_transpose1d input")
    check_bias(bias, c_out, "conv_transpose1d")
    ctx = g.ctx
    cols = ggml.ggml_mul_mat(ctx, weight, x)
    if channel_fast:
        y = overlap_add_halves(g, cols, c_out, stride, partial)
    else:
        y = overlap_add(g, ggml.ggml_col2im_1d(ctx, cols, stride, c_out, 0), t * stride, partial)
    return y if bias is None else ggml.ggml_add(ctx, y, bias)


def overlap_add_halves(g: Graph, cols: Tensor, c_out: int, stride: int, partial: Tensor) -> Tensor:
    """The streaming overlap-add of a transposed conv with K = 2*stride and rows (k, c_out):
    cols [2*S*C, T] -> [C, T*S]. Output block t (S steps, channel-fastest) is the first half of
    step t plus the second half of step t-1 (the old `partial` [C, S] for t = 0); the second half of
    the last step becomes the new `partial`."""
    ctx = g.ctx
    t = tensor_ne(cols)[1]
    check_state(partial, c_out, stride, "conv_transpose1d partial")
    half = stride * c_out
    el, row = tensor_nb(cols)[:2]
    first = ggml.ggml_view_2d(ctx, cols, half, t, row, 0)
    carried = ggml.ggml_reshape_2d(ctx, partial, half, 1)
    if t > 1:
        carried = stacked(g, carried, ggml.ggml_view_2d(ctx, cols, half, t - 1, row, half * el))
    y = ggml.ggml_reshape_2d(ctx, ggml.ggml_add(ctx, first, carried), c_out, t * stride)
    g.expand(y)  # reads the old partial: in the graph before the write below
    g.expand(ggml.ggml_cpy(ctx, ggml.ggml_view_2d(ctx, cols, half, 1, row, (t - 1) * row + half * el), partial))
    return y
