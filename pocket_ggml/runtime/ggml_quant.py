"""Row quantization through ggml's own kernels (`ggml_quantize_chunk`).

The `gguf` package quantizes only Q8_0/Q4_0 in numpy; the K-quants (Q4_K, Q5_K, Q6_K) exist only in
ggml. Callers pass a C-contiguous float32 matrix whose rows are a multiple of the type's block size
(checked here, since ggml would abort the interpreter on a bad row size).
"""

from __future__ import annotations

import ctypes

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from pocket_ggml.errors import QuantizationError


def quantize_rows(matrix: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Quantize a 2-D float32 array row by row; returns the raw blocks as uint8 [rows, row_bytes]."""
    import ggml  # imported here: `pocket-quantize --type F32` never loads the shared library

    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise QuantizationError(f"quantize_rows needs a 2-D float32 array, got {matrix.dtype} {matrix.shape}")
    rows, n_per_row = matrix.shape
    block, type_size = GGML_QUANT_SIZES[qtype]
    if n_per_row % block:
        raise QuantizationError(f"rows of {n_per_row} are not a multiple of {qtype.name}'s block of {block}")
    if not np.isfinite(matrix).all():
        raise QuantizationError("cannot quantize a tensor holding NaN or Inf")
    src = np.ascontiguousarray(matrix)
    row_bytes = n_per_row // block * type_size
    dst = np.empty((rows, row_bytes), dtype=np.uint8)
    written = ggml.ggml_quantize_chunk(
        int(qtype),
        src.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        dst.ctypes.data_as(ctypes.c_void_p),
        0,
        rows,
        n_per_row,
        None,
    )
    if written != dst.nbytes:
        raise QuantizationError(f"ggml wrote {written} bytes for {qtype.name}, expected {dst.nbytes}")
    return dst
