"""`Graph`: a compute graph under construction, what every builder of this package receives.

The runtime's `GraphRunner` makes one in a no_alloc context, calls the builder, then allocates,
fills the declared inputs and computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pocket_ggml.ggml_binding import Tensor, check_shape, ggml, ggml_type_for, new_tensor


class Graph:
    """A compute graph under construction: build ops on `ctx`, declare inputs with `input`."""

    def __init__(self, ctx: int, cgraph: Any) -> None:
        self.ctx = ctx
        self.cgraph = cgraph
        self.inputs: dict[str, tuple[Tensor, tuple[int, ...], np.dtype]] = {}
        self.fed: dict[str, np.ndarray] = {}

    def input(self, name: str, shape: Sequence[int], dtype: Any = np.float32) -> Tensor:
        """A new input tensor; `GraphRunner.run` fills it from `inputs[name]` (numpy order)."""
        if name in self.inputs:
            raise ValueError(f"graph input {name!r} declared twice")
        shape = check_shape(shape)
        dtype = np.dtype(dtype)
        t = new_tensor(self.ctx, ggml_type_for(dtype), shape, name)
        ggml.ggml_set_input(t)
        self.inputs[name] = (t, shape, dtype)
        return t

    def feed(self, name: str, value: np.ndarray) -> Tensor:
        """An input whose value is already known while building (positions, masks, indices)."""
        value = np.ascontiguousarray(value)
        t = self.input(name, value.shape, value.dtype)
        self.fed[name] = value
        return t

    def expand(self, t: Tensor) -> None:
        """Add `t` and what it depends on to the graph now (nodes run in the order added)."""
        ggml.ggml_build_forward_expand(self.cgraph, t)
