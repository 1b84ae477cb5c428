"""K/V cache bookkeeping of the runtime's transformers: which slots a call writes and sees, and the
state tensors that hold the caches.

Slots form a ring: slot = position % capacity. FlowLM's cache never wraps (its capacity covers the
whole sequence); the Mimi transformers' caches wrap, so their memory is bounded by the context
window, not the audio length. The graphs (`pocket_ggml.ggml_graphs.attention`) take a `KVCache`'s
`AttentionPlan` and the `LayerKV` tensors of `layer_caches`.
"""

from __future__ import annotations

import numpy as np

from pocket_ggml.ggml_binding import GGML_TYPE_F32
from pocket_ggml.ggml_graphs.attention import AttentionPlan, LayerKV, attention_mask
from pocket_ggml.ggml_graphs.transformer import TransformerShape
from pocket_ggml.runtime.ggml_backend import StateStore

RING_ALIGN = 32


class KVCache:
    """Slot bookkeeping of a transformer's K/V caches (all layers move together).

    `offset` is the absolute position of the next row (the reference's `offset` state and RoPE
    offset). Call `plan(n)` to build a graph, then `advance(n)` once it has been computed.
    """

    def __init__(self, capacity: int, context: int | None = None) -> None:
        if capacity < 1 or (context is not None and context < 1):
            raise ValueError(f"bad cache capacity {capacity} / context {context}")
        self.capacity = capacity
        self.context = context
        self.offset = 0

    @staticmethod
    def ring_capacity(context: int, max_rows: int) -> int:
        """A ring that holds a full window for every query of a call of `max_rows` rows: at least
        context + max_rows - 1 slots, rounded up to a multiple of RING_ALIGN. Attention reads the whole
        ring, and LLAMAFILE's sgemm takes the V x probabilities product only when the key count is a
        multiple of its vector width (16 floats with AVX-512); other counts go to ggml's scalar-loop
        dot products."""
        return -(-(context + max_rows - 1) // RING_ALIGN) * RING_ALIGN

    def max_rows(self) -> int:
        """Most rows one call may add without overwriting keys that call still needs."""
        if self.context is None:
            return self.capacity - self.offset
        return self.capacity - min(self.offset, self.context - 1)

    def plan(self, n_rows: int, min_keys: int = 0) -> AttentionPlan:
        """Where `n_rows` new rows go and what they see. Attention reads the first
        max(offset + n_rows, min_keys) slots (at most all): slots not written yet are masked, so a
        graph can keep its shape while the cache fills (they must hold finite values, e.g. zeros)."""
        if not 1 <= n_rows <= self.max_rows():
            raise ValueError(
                f"{n_rows} new rows do not fit a KV cache of {self.capacity} slots at offset "
                f"{self.offset} (context {self.context}); at most {self.max_rows()} fit"
            )
        end = self.offset + n_rows
        pos = np.arange(self.offset, end, dtype=np.int32)
        n_keys = min(self.capacity, max(end, min_keys))
        slots = np.arange(n_keys, dtype=np.int64)
        # The latest position written to each slot once this call's rows are in.
        slot_pos = slots + self.capacity * ((end - 1 - slots) // self.capacity)
        slots_written = (pos % self.capacity).astype(np.int32)
        return AttentionPlan(pos, slots_written, attention_mask(pos, slot_pos, self.context))

    def advance(self, n_rows: int) -> None:
        self.offset += n_rows

    def reset(self) -> None:
        self.offset = 0


def kv_cache_specs(
    name: str, shape: TransformerShape, capacity: int, ggml_type: int = GGML_TYPE_F32
) -> dict[str, tuple[tuple[int, int], int]]:
    """StateStore specs of a transformer's K/V caches: `{name}.{layer}.k` (capacity, kv_dim) and
    `.v`, stored transposed (kv_dim, capacity). F16 halves the memory but rounds K/V to F16."""
    kv_dim = shape.attention.kv_dim
    specs = {}
    for layer in range(shape.num_layers):
        specs[f"{name}.{layer}.k"] = ((capacity, kv_dim), ggml_type)
        specs[f"{name}.{layer}.v"] = ((kv_dim, capacity), ggml_type)
    return specs


def layer_caches(state: StateStore, name: str, shape: TransformerShape) -> list[LayerKV]:
    """The per-layer cache tensors declared by `kv_cache_specs`."""
    return [LayerKV(state[f"{name}.{layer}.k"], state[f"{name}.{layer}.v"]) for layer in range(shape.num_layers)]
