"""The numbers a GGUF file stores for tensor types, metadata value types and `general.file_type`.

The same names, numbers and block sizes as gguf-py's `GGMLQuantizationType`, `GGML_QUANT_SIZES`,
`GGUFValueType` and `LlamaFileType` (tests/test_ggml_types.py checks that they agree). They are
defined here so that loading a model and speaking never import gguf-py: importing it is a noticeable
share of a run's start time and memory, and only writing a GGUF needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import numpy as np


class GGMLType(IntEnum):
    """A tensor's ggml type (ggml.h's `enum ggml_type`; numbers 4, 5 and 31-33 were removed)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


T = GGMLType
# (values per block, bytes per block) of each type: a row's length must be a whole number of blocks
QUANT_SIZES: dict[GGMLType, tuple[int, int]] = {
    T.F32: (1, 4),
    T.F16: (1, 2),
    T.Q4_0: (32, 18),
    T.Q4_1: (32, 20),
    T.Q5_0: (32, 22),
    T.Q5_1: (32, 24),
    T.Q8_0: (32, 34),
    T.Q8_1: (32, 40),
    T.Q2_K: (256, 84),
    T.Q3_K: (256, 110),
    T.Q4_K: (256, 144),
    T.Q5_K: (256, 176),
    T.Q6_K: (256, 210),
    T.Q8_K: (256, 292),
    T.IQ2_XXS: (256, 66),
    T.IQ2_XS: (256, 74),
    T.IQ3_XXS: (256, 98),
    T.IQ1_S: (256, 50),
    T.IQ4_NL: (32, 18),
    T.IQ3_S: (256, 110),
    T.IQ2_S: (256, 82),
    T.IQ4_XS: (256, 136),
    T.I8: (1, 1),
    T.I16: (1, 2),
    T.I32: (1, 4),
    T.I64: (1, 8),
    T.F64: (1, 8),
    T.IQ1_M: (256, 56),
    T.BF16: (1, 2),
    T.TQ1_0: (256, 54),
    T.TQ2_0: (256, 66),
    T.MXFP4: (32, 17),
    T.NVFP4: (64, 36),
    T.Q1_0: (128, 18),
}


# the types whose values numpy holds as they are (a block type is read as raw bytes)
NUMPY_TYPES: dict[GGMLType, np.dtype] = {
    T.F32: np.dtype(np.float32),
    T.F16: np.dtype(np.float16),
    T.I8: np.dtype(np.int8),
    T.I32: np.dtype(np.int32),
    T.I64: np.dtype(np.int64),
}

# the K-quants: 256-value super-blocks (a row must hold whole ones), and no llamafile kernel
K_QUANTS = (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)

# the types a weight of a pocket-tts GGUF may have, by the names `--tensor-type` accepts
TENSOR_TYPES: dict[str, GGMLType] = {
    "F32": T.F32,
    "F16": T.F16,
    "Q8_0": T.Q8_0,
    "Q4_K": T.Q4_K,
    "Q5_K": T.Q5_K,
    "Q6_K": T.Q6_K,
}


def tensor_nbytes(ggml_type: int, shape: Sequence[int]) -> int:
    """Bytes of a contiguous tensor of numpy-order `shape`; rows must be whole blocks of the type."""
    block, type_size = QUANT_SIZES[GGMLType(ggml_type)]
    row = int(shape[-1]) if len(shape) else 1
    if row % block:
        raise ValueError(f"row length {row} is not a multiple of the block size {block}")
    n = 1
    for d in shape:
        n *= int(d)
    return n // block * type_size


class GGUFValueType(IntEnum):
    """The type of a metadata value (the GGUF spec's `gguf_metadata_value_type`)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


class FileType(IntEnum):
    """`general.file_type` of the mixes pocket-quantize writes (llama.cpp's `llama_ftype` numbers)."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q8_0 = 7
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
