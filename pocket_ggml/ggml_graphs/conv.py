"""Streaming 1-D convolutions (pocket_tts/modules/conv.py) as ggml graph fragments.

Layout: activations are channel-fastest, ggml ne [C, T] (numpy (T, C)), as the Mimi transformers read
and write them. Streaming state tensors use the same layout: a conv's `previous` is [C_in, K_eff - S],
a transposed conv's `partial` is [C_out, K - S]. They are persistent tensors (a `StateStore`); each
builder reads the old value and schedules the write of the new one in the same graph. The write is a
`ggml_cpy` out of a tensor computed from the old value, so ggml runs it after every read.

A convolution is im2col + mul_mat: ggml's conv_1d aborts on an F32 kernel and rounds through F16
otherwise, and conv_transpose_1d is ~40x slower than mul_mat + col2im_1d at Mimi sizes. Kernels are
matrices as stored (pocket_ggml.quantize.names): Conv1d (C_out, C_in*K), i.e. ne [C_in*K, C_out];
ConvTranspose1d (C_out*K, C_in), i.e. ne [C_in, K*C_out]. Any type mul_mat takes works (F32, F16,
quantized when the row fits the block size).
"""

from __future__ import annotations

import ggml

from pocket_ggml.runtime.ggml_backend import GGML_TYPE_F32, Graph, Tensor, ggml_type_of, tensor_nb, tensor_ne


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


def rows(g: Graph, x: Tensor, first: int, count: int) -> Tensor:
    """Steps [first, first + count) of a contiguous [C, T] activation (a contiguous view)."""
    if not ggml.ggml_is_contiguous(x):
        raise ValueError("rows: the activation must be contiguous")
    nb1 = tensor_nb(x)[1]
    return ggml.ggml_view_2d(g.ctx, x, tensor_ne(x)[0], count, nb1, first * nb1)


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


def conv1d_history(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Input steps a streaming conv keeps between calls (the reference's `previous`)."""
    return (kernel_size - 1) * dilation + 1 - stride


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
) -> Tensor:
    """StreamingConv1d with constant (zero) padding: x [C_in, T] -> [C_out, T / stride].

    With `previous` (state [C_in, conv1d_history(...)]) the history is prepended and the last steps of
    [previous | x] become the new history. Without it the history is zeros: the reference's
    `model_state=None`, as the non-streaming encoder runs.
    """
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
            xp = ggml.ggml_concat(ctx, previous, x, 1)
            g.expand(ggml.ggml_cpy(ctx, rows(g, xp, t, history), previous))
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
    g.expand(ggml.ggml_cpy(ctx, rows(g, y, steps, tail), partial))
    return rows(g, y, 0, steps)


def streaming_conv_transpose1d(
    g: Graph, x: Tensor, weight: Tensor, bias: Tensor | None, *, kernel_size: int, stride: int, partial: Tensor
) -> Tensor:
    """StreamingConvTranspose1d: x [C_in, T] -> [C_out, T * stride], with `partial` [C_out, K - stride].

    mul_mat gives each input step's K outputs per channel ([K*C_out, T], k fastest); col2im_1d
    overlap-adds them into (T-1)*stride + K steps.
    """
    if not 0 < stride < kernel_size:
        raise ValueError(f"conv_transpose1d: stride {stride} for kernel {kernel_size}")
    c_in, outputs = tensor_ne(weight)[:2]
    c_out = outputs // kernel_size
    check_kernel(weight, c_in, kernel_size * c_out, "conv_transpose1d kernel")
    t = check_activation(x, c_in, "conv_transpose1d input")
    check_bias(bias, c_out, "conv_transpose1d")
    ctx = g.ctx
    cols = ggml.ggml_mul_mat(ctx, weight, x)
    y = overlap_add(g, ggml.ggml_col2im_1d(ctx, cols, stride, c_out, 0), t * stride, partial)
    return y if bias is None else ggml.ggml_add(ctx, y, bias)
