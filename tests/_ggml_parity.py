"""Shared pieces of the graph parity tests: torch weights into a WeightStore, the error measure."""

from __future__ import annotations

import numpy as np

from pocket_ggml.format.names import from_released, to_stored_layout
from pocket_ggml.runtime.ggml_backend import CpuBackend, WeightStore

# F32 graphs against the F32 reference differ only by summation order, libm, and ggml building RoPE
# angles by repeated multiplication: measured 1e-7..8e-7 here. 1e-4 leaves room for long sequences
# (angle error grows with position) while still catching any wrong op (errors of 1e-2 and up).
REL_TOL = 1e-4


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """||ours - ref|| / ||ref||."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def weights_from_torch(backend: CpuBackend, model, prefix: str) -> WeightStore:
    """The model's tensors under `prefix` (released names), F32, keyed by GGUF name."""
    arrays = {}
    for name, t in model.state_dict().items():
        if not name.startswith(prefix):
            continue
        row = from_released(name)
        assert row is not None, f"names.py has no row for {name}"
        a = t.detach().to("cpu").float().numpy()
        arrays[row.gguf] = np.ascontiguousarray(to_stored_layout(a, row.rule.layout))
    return WeightStore.from_arrays(backend, arrays)
