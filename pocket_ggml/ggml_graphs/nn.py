"""Small building blocks shared by the graph builders: weight lookup, shape checks, norms, linear.

Activations are ggml tensors with the feature axis innermost: a (T, d) numpy matrix is `ne = [d, T]`.
Weights are looked up by the reference's module path through `pocket_ggml.format.names`, so a
builder reads like the torch module it mirrors while the store is keyed by GGUF names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

from pocket_ggml.format.names import from_released
from pocket_ggml.ggml_binding import Tensor, ggml, tensor_nb, tensor_ne

Weights = Mapping[str, Tensor]  # GGUF name -> ggml tensor (a WeightStore)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


@functools.lru_cache(maxsize=4096)
def gguf_name(released: str) -> str:
    row = from_released(released)
    if row is None:
        raise KeyError(f"no GGUF name for released tensor {released!r}")
    return row.gguf


def weight(w: Weights, released: str, shape: Sequence[int] | None = None) -> Tensor:
    """The tensor of a released name, checked against `shape` (numpy order) if given. A missing
    tensor is a KeyError and a misshaped one a ValueError: the runtime checks a model file's tensors
    before any graph is built, so either means weights that were never checked against the config."""
    name = gguf_name(released)
    try:
        t = w[name]
    except KeyError:
        raise KeyError(f"no tensor {name!r} ({released}) among the weights") from None
    if shape is not None and not has_shape(t, shape):
        raise ValueError(f"tensor {name!r} has shape {tuple(reversed(tensor_ne(t)))}, expected {tuple(shape)}")
    return t


def has_shape(t: Tensor, shape: Sequence[int]) -> bool:
    """Whether `t` has this numpy-order shape (missing leading axes count as 1)."""
    ne = tensor_ne(t)
    want = tuple(reversed(tuple(shape))) + (1,) * (4 - len(shape))
    return ne == want


def expect_shape(t: Tensor, shape: Sequence[int], what: str) -> None:
    """Raise before any ggml op sees a misshaped activation (a GGML_ASSERT would kill Python)."""
    if not has_shape(t, shape):
        raise ValueError(f"{what}: shape {tuple(reversed(tensor_ne(t)))}, expected {tuple(shape)}")


def row_count(t: Tensor) -> int:
    """Number of rows (time steps) of a (T, d) activation."""
    return tensor_ne(t)[1]


def width(t: Tensor) -> int:
    """Number of features of a (T, d) activation."""
    return tensor_ne(t)[0]


def linear(ctx: int, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """nn.Linear: x (T, in) @ w (out, in)^T + b."""
    y = ggml.ggml_mul_mat(ctx, w, x)
    return y if b is None else ggml.ggml_add(ctx, y, b)


def layer_norm(ctx: int, x: Tensor, eps: float, w: Tensor | None = None, b: Tensor | None = None) -> Tensor:
    """LayerNorm over the feature axis with the biased variance (nn.LayerNorm, mlp.LayerNorm)."""
    y = ggml.ggml_norm(ctx, x, eps)
    if w is not None:
        y = ggml.ggml_mul(ctx, y, w)
    if b is not None:
        y = ggml.ggml_add(ctx, y, b)
    return y


def gelu_tanh(ctx: int, x: Tensor) -> Tensor:
    """GELU, tanh approximation, in F32: 0.5 x (1 + tanh(u)) = x sigmoid(2u) = silu(x s) / s with
    s = 2u / x = 2 sqrt(2/pi) (1 + 0.044715 x^2) >= 1 (finite for |x| < 1e19). ggml's silu is vectorised, its tanh is a
    scalar loop (6x slower); ggml_gelu goes through an F16 table (3e-4 off)."""
    s = ggml.ggml_scale_bias(ctx, ggml.ggml_sqr(ctx, x), 2 * _SQRT_2_OVER_PI * _GELU_CUBIC, 2 * _SQRT_2_OVER_PI)
    return ggml.ggml_div(ctx, ggml.ggml_silu(ctx, ggml.ggml_mul(ctx, x, s)), s)


def modulate(ctx: int, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift (DiT adaLN)."""
    if not ggml.ggml_is_contiguous(scale):  # a chunk of several rows; ggml_scale_bias needs contiguous
        scale = ggml.ggml_cont(ctx, scale)
    return ggml.ggml_add(ctx, ggml.ggml_mul(ctx, x, ggml.ggml_scale_bias(ctx, scale, 1.0, 1.0)), shift)


def chunk_rows(ctx: int, x: Tensor, n: int) -> list[Tensor]:
    """torch.chunk(x, n, dim=-1) of a (T, n*c) activation: n strided (T, c) views."""
    ne0, ne1 = tensor_ne(x)[:2]
    if ne0 % n:
        raise ValueError(f"cannot split width {ne0} into {n} chunks")
    c = ne0 // n
    nb0, nb1 = tensor_nb(x)[:2]
    return [ggml.ggml_view_2d(ctx, x, c, ne1, nb1, k * c * nb0) for k in range(n)]
