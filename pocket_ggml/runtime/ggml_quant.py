"""Row quantization through ggml's own kernels (`ggml_quantize_chunk`).

The `gguf` package quantizes only Q8_0/Q4_0 in numpy; the K-quants (Q4_K, Q5_K, Q6_K) exist only in
ggml. Callers pass a C-contiguous float32 matrix whose rows are a multiple of the type's block size
(checked here, since ggml would abort the interpreter on a bad row size).
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from pocket_ggml.errors import QuantizationError

_MIN_ROWS_PER_CHUNK = 64


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
    src_p = src.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    dst_p = dst.ctypes.data_as(ctypes.c_void_p)

    def chunk(first: int, count: int) -> int:
        # ctypes releases the GIL during the call, so chunks run in parallel
        return ggml.ggml_quantize_chunk(int(qtype), src_p, dst_p, first * n_per_row, count, n_per_row, None)

    n_chunks = max(1, min(os.cpu_count() or 1, rows // _MIN_ROWS_PER_CHUNK))
    bounds = np.linspace(0, rows, n_chunks + 1).astype(int)
    if n_chunks == 1:
        written = chunk(0, rows)
    else:
        with ThreadPoolExecutor(n_chunks) as pool:
            written = sum(pool.map(chunk, bounds[:-1], np.diff(bounds)))
    if written != dst.nbytes:
        raise QuantizationError(f"ggml wrote {written} bytes for {qtype.name}, expected {dst.nbytes}")
    return dst
