"""StreamingMultiheadAttention (pocket_tts/modules/attention.py) and RoPE (modules/rope.py).

The K/V cache of a layer is two persistent ggml tensors (the runtime's state): K (capacity, kv_dim)
and V transposed, (kv_dim, capacity), so that both attention products are plain matmuls with the
slots as the contracted axis (ggml's CPU flash attention walks the keys one at a time: 5-10x slower
at our sizes). New rows are written into slots with `ggml_set_rows` (V one element per slot and
channel), and attention reads the cache through views of that write, so the write always runs
first. Which slots a call writes, and which ones each query sees, is the caller's `AttentionPlan`
(the runtime's `KVCache` keeps the slots as a ring).

What a query may see is an F16 mask built in numpy from absolute positions (the reference's
`_build_attention_mask`): key position p is visible from query position q iff 0 <= q - p < context.
The same positions give the RoPE angles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pocket_ggml.ggml_binding import Tensor, ggml, tensor_nb, tensor_ne
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.nn import Weights, expect_shape, weight

GGML_ROPE_TYPE_NORMAL = 0  # rotates adjacent pairs (x[2i], x[2i+1]): the reference's layout


@dataclass(frozen=True)
class AttentionShape:
    """Sizes of one StreamingMultiheadAttention (its context window lives in the `AttentionPlan`'s mask)."""

    d_model: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_period: float

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class AttentionPlan:
    """Numpy side of one attention call: where the new rows go and what each query may see."""

    positions: np.ndarray  # int32 (T,): absolute positions of the new rows (RoPE angles)
    slots: np.ndarray | None  # int32 (T,): cache rows written; None when there is no cache
    mask: np.ndarray  # float16 (T, n_keys): 0 where the query may attend, -inf elsewhere

    @property
    def n_rows(self) -> int:
        return len(self.positions)

    @property
    def n_keys(self) -> int:
        return self.mask.shape[1]


@dataclass(frozen=True)
class AttentionInputs:
    """Graph side of an `AttentionPlan`, shared by every layer of one transformer."""

    positions: Tensor
    slots: Tensor | None
    mask: Tensor
    n_rows: int
    n_keys: int


@dataclass
class ScoreTap:
    """Attention scores a graph also outputs: q.k (before the 1/sqrt(head_dim) scale, the mask and
    the softmax) of a call's last row for `heads_by_layer`, over the cache slots `keys` (start, stop).
    Word timestamps read them for the text rows; the softmax is the reader's, over those slots only
    (pocket-tts-timestamped normalises over the text alone, not over the whole cache). Building fills
    `scores[(layer, head)]` with (keys,) views; no other part of the attention is copied out."""

    heads_by_layer: dict[int, tuple[int, ...]]
    keys: tuple[int, int]
    scores: dict[tuple[int, int], Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerKV:
    """One layer's persistent cache tensors: k (capacity, kv_dim), v transposed (kv_dim, capacity)."""

    k: Tensor
    v: Tensor


def attention_mask(q_pos: np.ndarray, k_pos: np.ndarray, context: int | None) -> np.ndarray:
    """The F16 mask of queries at `q_pos` over keys at `k_pos` (negative: never written)."""
    delta = q_pos[:, None] - k_pos[None, :]
    ok = (k_pos[None, :] >= 0) & (delta >= 0)
    if context is not None:
        ok &= delta < context
    return np.where(ok, 0.0, -np.inf).astype(np.float16)


def stateless_plan(n_rows: int, context: int | None, offset: int = 0) -> AttentionPlan:
    """Attention over the new rows only, with no cache: the reference's stateless Mimi encoder pass,
    which tests compare the streaming encoder's transformer against."""
    if n_rows < 1:
        raise ValueError("attention needs at least one row")
    pos = np.arange(offset, offset + n_rows, dtype=np.int32)
    return AttentionPlan(pos, None, attention_mask(pos, pos, context))


def attention_arrays(plan: AttentionPlan, name: str) -> dict[str, np.ndarray]:
    """A plan's positions, slots and mask as graph inputs named `name.*`."""
    arrays = {f"{name}.pos": plan.positions, f"{name}.mask": plan.mask}
    if plan.slots is not None:
        arrays[f"{name}.slots"] = plan.slots
    return arrays


def attention_inputs(g: Graph, plan: AttentionPlan, name: str, feed: bool = True) -> AttentionInputs:
    """A plan's positions, slots and mask in the graph under `name.*`: fed now, or with `feed`
    False declared as inputs to pass at run time (`attention_arrays`), as a kept graph needs."""
    tensors = {
        key: g.feed(key, a) if feed else g.input(key, a.shape, a.dtype)
        for key, a in attention_arrays(plan, name).items()
    }
    return AttentionInputs(
        positions=tensors[f"{name}.pos"],
        slots=tensors.get(f"{name}.slots"),
        mask=tensors[f"{name}.mask"],
        n_rows=plan.n_rows,
        n_keys=plan.n_keys,
    )


def rope_interleaved(ctx: int, x: Tensor, positions: Tensor, max_period: float) -> Tensor:
    """RoPE on x (T, H, D) over adjacent pairs, angle = position * max_period^(-2i/D), in F32."""
    head_dim = tensor_ne(x)[0]
    return ggml.ggml_rope_ext(
        ctx, x, positions, None, head_dim, GGML_ROPE_TYPE_NORMAL, 0, max_period, 1.0, 0.0, 1.0, 0.0, 0.0
    )


def streaming_attention(
    g: Graph,
    w: Weights,
    prefix: str,
    x: Tensor,
    shape: AttentionShape,
    inputs: AttentionInputs,
    cache: LayerKV | None,
    tap: ScoreTap | None = None,
    layer: int = 0,
) -> Tensor:
    """Self-attention of x (T, d_model) -> (T, d_model); `prefix` is the reference module path.
    With `tap`, the scores of its heads of `layer` are added to it (see `ScoreTap`)."""
    ctx, s = g.ctx, shape
    d, kv_dim, attn_dim = s.head_dim, s.kv_dim, s.attn_dim
    n = inputs.n_rows
    if s.num_heads % s.num_kv_heads:
        raise ValueError(f"{s.num_heads} heads cannot share {s.num_kv_heads} K/V heads")
    expect_shape(x, (n, s.d_model), f"{prefix} input")
    w_in = weight(w, f"{prefix}.in_proj.weight", (attn_dim + 2 * kv_dim, s.d_model))
    w_out = weight(w, f"{prefix}.out_proj.weight", (s.d_model, attn_dim))
    if (cache is None) != (inputs.slots is None):
        raise ValueError(f"{prefix}: a cache needs a plan with slots, and a stateless plan no cache")

    qkv = ggml.ggml_mul_mat(ctx, w_in, x)  # (T, q | k | v)
    el, row = tensor_nb(qkv)[:2]
    v_offset = (attn_dim + kv_dim) * el
    q = ggml.ggml_view_3d(ctx, qkv, d, s.num_heads, n, d * el, row, 0)
    k = ggml.ggml_view_3d(ctx, qkv, d, s.num_kv_heads, n, d * el, row, attn_dim * el)
    q = rope_interleaved(ctx, q, inputs.positions, s.max_period)
    k = rope_interleaved(ctx, k, inputs.positions, s.max_period)
    if cache is None:
        keys = k
        values = ggml.ggml_view_3d(ctx, qkv, d, s.num_kv_heads, n, d * el, row, v_offset)
        values_t = ggml.ggml_cont(ctx, ggml.ggml_permute(ctx, values, 1, 2, 0, 3))  # (H, D, T)
    else:
        capacity = tensor_ne(cache.k)[1]
        if tensor_ne(cache.k) != (kv_dim, capacity, 1, 1) or tensor_ne(cache.v) != (capacity, kv_dim, 1, 1):
            raise ValueError(
                f"{prefix}: cache ne {list(tensor_ne(cache.k))} / {list(tensor_ne(cache.v))}, expected "
                f"[{kv_dim}, capacity] / [capacity, {kv_dim}]"
            )
        if capacity < inputs.n_keys:
            raise ValueError(f"{prefix}: a cache of {capacity} slots cannot hold {inputs.n_keys} keys")
        k_cache = ggml.ggml_set_rows(ctx, cache.k, ggml.ggml_reshape_2d(ctx, k, kv_dim, n), inputs.slots)
        # V^T as kv_dim planes of one-element rows: one set_rows writes each channel's slots.
        v_el = tensor_nb(cache.v)[0]
        v_planes = ggml.ggml_view_3d(ctx, cache.v, 1, capacity, kv_dim, v_el, capacity * v_el, 0)
        v_new = ggml.ggml_view_3d(ctx, qkv, 1, n, kv_dim, row, el, v_offset)
        v_cache = ggml.ggml_set_rows(ctx, v_planes, v_new, inputs.slots)
        keys = _valid_heads(ctx, k_cache, d, s.num_kv_heads, inputs.n_keys)
        values_t = ggml.ggml_view_3d(
            ctx, v_cache, inputs.n_keys, d, s.num_kv_heads, capacity * v_el, d * capacity * v_el, 0
        )
    # Heads share K/V heads in groups (GQA): mul_mat broadcasts src0 over dim 2 the same way.
    # LLAMAFILE's sgemm only takes a contiguous second operand.
    q_heads = ggml.ggml_cont(ctx, ggml.ggml_permute(ctx, q, 0, 2, 1, 3))
    scores = ggml.ggml_mul_mat(ctx, ggml.ggml_permute(ctx, keys, 0, 2, 1, 3), q_heads)
    if tap is not None:
        _tap_scores(ctx, scores, tap, layer, n, s.num_heads)
    probs = ggml.ggml_soft_max_ext(ctx, scores, inputs.mask, 1.0 / math.sqrt(d), 0.0)  # (H, T, keys)
    out = ggml.ggml_cont(ctx, ggml.ggml_permute(ctx, ggml.ggml_mul_mat(ctx, values_t, probs), 0, 2, 1, 3))
    return ggml.ggml_mul_mat(ctx, w_out, ggml.ggml_reshape_2d(ctx, out, attn_dim, n))


def _tap_scores(ctx: int, scores: Tensor, tap: ScoreTap, layer: int, n_rows: int, n_heads: int) -> None:
    """Views of scores (n_keys, T, H) of the last row for the tapped heads of `layer` over the tapped slots."""
    heads = tap.heads_by_layer.get(layer, ())
    if not heads:
        return
    start, stop = tap.keys
    n_keys = tensor_ne(scores)[0]
    if not 0 <= start < stop <= n_keys or not all(0 <= h < n_heads for h in heads):
        raise ValueError(
            f"cannot tap heads {heads} of {n_heads} over slots {start}:{stop} of {n_keys} in a {n_rows}-row call"
        )
    el, row_stride, head_stride = tensor_nb(scores)[:3]
    last_row = (n_rows - 1) * row_stride
    for h in heads:
        tap.scores[(layer, h)] = ggml.ggml_view_1d(ctx, scores, stop - start, h * head_stride + last_row + start * el)


def _valid_heads(ctx: int, cache: Tensor, head_dim: int, n_heads: int, n_keys: int) -> Tensor:
    """The first n_keys slots of a (capacity, kv_dim) cache as (n_keys, H, D)."""
    el, row = tensor_nb(cache)[:2]
    return ggml.ggml_view_3d(ctx, cache, head_dim, n_heads, n_keys, head_dim * el, row, 0)
