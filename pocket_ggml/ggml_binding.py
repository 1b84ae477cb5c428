"""The ggml binding: the one module of the package that holds ctypes code.

Importing it sets up the process for ggml before ggml is loaded -- GGML_NO_BACKTRACE=1, so a failed
GGML_ASSERT aborts without starting gdb; OMP_WAIT_POLICY=passive (unless already set); with glibc, a
fixed 128 KiB malloc mmap threshold (unless MALLOC_MMAP_THRESHOLD_ is set) -- and fixes the known
ggml-python 0.0.45 binding bugs (pointer restypes cut to 32 bits). Everything that imports ggml
imports this module first (or through a module that does).

Shapes are given in numpy order (outermost first); ggml's `ne` is the reverse.

API
- `Tensor` (the type of a ggml tensor pointer), `GGML_TYPE_*` aliases for the common types.
- `tensor_shape(t) -> tuple` (numpy order, trimmed to `ggml_n_dims`), `tensor_ne(t)` / `tensor_nb(t)`
    (ggml order, 4 axes), `ggml_type_of(t)`, `type_name(ggml_type)`.
- `overlapping_view_2d(ctx, t, ne0, ne1, nb1, offset)`: a view whose rows overlap (conv windows).
- `check_shape`, `ggml_type_for(dtype)`, `new_tensor(ctx, ggml_type, shape, name)`, `metadata_context(n)`,
    `address(array)`, `read_tensor(t)`: what the runtime's stores and graphs are made of.
- `as_f16(a)`: float32 -> float16 with ggml's vectorised rows.
- `quantize_rows(matrix, qtype) -> uint8 blocks`, `dequantize(raw, ggml_type, shape) -> float32`:
    ggml's own kernels (the K-quants exist only in ggml).
- `repackable(ggml_type, shape)`, `cpu_repack_buffer_type()`, `has_llamafile()`: what this build and CPU
    offer.
- `release_pages(address, nbytes)`: give back the whole pages of a read-only file mapping.
- `quiet_debug_log()`: a context without ggml's debug messages.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pocket_ggml.errors import QuantizationError
from pocket_ggml.format.ggml_types import NUMPY_TYPES, QUANT_SIZES, GGMLType, tensor_nbytes

os.environ.setdefault("GGML_NO_BACKTRACE", "1")
# libgomp reads this when ggml is loaded. Its default spins at every barrier, which turns each one into
# a scheduler tick when another process holds a core; passive waits cost little and never collapse.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024


def _fix_mmap_threshold() -> bool:
    """Keep glibc's malloc from moving its mmap threshold up (unless the user set MALLOC_MMAP_THRESHOLD_).

    glibc serves blocks above the threshold with mmap, and every such block freed raises the threshold
    to its size (up to 32 MB). Loading frees a few MB-sized temporaries, so afterwards the graph
    buffers, KV caches and kernel copies of voice cloning come from the heap, and freeing them leaves
    holes that stay in the RSS. At glibc's initial 128 KiB they are mapped and given back when freed;
    nothing allocated per frame is that large. Process-wide, as OMP_WAIT_POLICY above."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


_fix_mmap_threshold()

import ggml  # noqa: E402  (after the set-up above, which ggml reads when it loads)

# Binding bug: these return pointers but declare a NewType(int) restype, which ctypes treats as
# a C int and truncates to 32 bits; the next use of the pointer segfaults.
for _fn in (
    ggml.ggml_backend_cpu_buffer_from_ptr,
    ggml.ggml_backend_alloc_buffer,
    ggml.ggml_backend_cpu_buffer_type,
    ggml.ggml_backend_sched_get_tensor_backend,
):
    _fn.restype = ctypes.c_void_p

Tensor = Any  # ctypes.POINTER(ggml.ggml_tensor): what every ggml op takes and returns

GGML_TYPE_F32 = ggml.GGML_TYPE_F32
GGML_TYPE_F16 = ggml.GGML_TYPE_F16
GGML_TYPE_I32 = ggml.GGML_TYPE_I32
GGML_TYPE_I64 = ggml.GGML_TYPE_I64
GGML_TYPE_Q8_0 = ggml.GGML_TYPE_Q8_0
GGML_TYPE_Q4_0 = ggml.GGML_TYPE_Q4_0
GGML_TYPE_Q4_K = ggml.GGML_TYPE_Q4_K
GGML_TYPE_Q5_K = ggml.GGML_TYPE_Q5_K
GGML_TYPE_Q6_K = ggml.GGML_TYPE_Q6_K

_GGML_TYPES: dict[np.dtype, int] = {v: int(k) for k, v in NUMPY_TYPES.items()}
MAX_DIMS = 4


def numpy_type(ggml_type: int) -> np.dtype | None:
    """The numpy dtype holding values of this ggml type as they are; None for block types."""
    return NUMPY_TYPES.get(ggml_type)  # type: ignore[call-overload]


def ggml_type_for(dtype: Any) -> int:
    t = _GGML_TYPES.get(np.dtype(dtype))
    if t is None:
        raise TypeError(f"no ggml type for numpy dtype {np.dtype(dtype)}")
    return t


def type_name(ggml_type: int) -> str:
    return ggml.ggml_type_name(ggml_type).decode()


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= MAX_DIMS or any(s <= 0 for s in shape):
        raise ValueError(f"tensor shape {shape} must have 1-4 positive axes")
    return shape


def new_tensor(ctx: int, ggml_type: int, shape: tuple[int, ...], name: str | None = None) -> Tensor:
    """A tensor of numpy-order `shape` in `ctx`, named (cut to ggml's name length) if `name` is given."""
    ne = (ctypes.c_int64 * len(shape))(*reversed(shape))
    t = ggml.ggml_new_tensor(ctx, ggml_type, len(shape), ne)
    if name is not None:
        ggml.ggml_set_name(t, name.encode()[: ggml.GGML_MAX_NAME - 1])
    return t


def metadata_context(n_tensors: int) -> int:
    """A no_alloc context with room for the metadata of `n_tensors` tensors."""
    params = ggml.ggml_init_params(
        mem_size=ggml.ggml_tensor_overhead() * max(n_tensors, 1), mem_buffer=None, no_alloc=True
    )
    ctx = ggml.ggml_init(params)
    if not ctx:
        raise MemoryError("ggml_init failed")
    return ctx


def tensor_shape(t: Tensor) -> tuple[int, ...]:
    """Numpy-order shape of a ggml tensor, trimmed to `ggml_n_dims` axes."""
    n = ggml.ggml_n_dims(t)
    return tuple(int(t.contents.ne[i]) for i in reversed(range(n)))


def tensor_ne(t: Tensor) -> tuple[int, int, int, int]:
    """ggml's `ne` (innermost first, always 4 axes)."""
    return tuple(int(n) for n in t.contents.ne)  # type: ignore[return-value]


def tensor_nb(t: Tensor) -> tuple[int, int, int, int]:
    """ggml's byte strides `nb` (innermost first)."""
    return tuple(int(n) for n in t.contents.nb)  # type: ignore[return-value]


def ggml_type_of(t: Tensor) -> int:
    """The tensor's ggml type (GGML_TYPE_*)."""
    return int(t.contents.type)


def is_view(t: Tensor) -> bool:
    return bool(t.contents.view_src)


def overlapping_view_2d(ctx: int, t: Tensor, ne0: int, ne1: int, nb1: int, offset: int = 0) -> Tensor:
    """A 2-D view of a contiguous F32/F16 tensor whose rows may overlap (nb1 < ne0 * element size),
    e.g. the sliding windows of a convolution. ggml_view_2d refuses it: it checks ne0 * ne1 elements
    against the source's size, so the view is made with one row and then widened."""
    el = tensor_nb(t)[0]
    if not ggml.ggml_is_contiguous(t) or ggml.ggml_blck_size(ggml_type_of(t)) != 1:
        raise ValueError("overlapping_view_2d needs a contiguous tensor of a non-block type")
    if min(ne0, ne1, nb1) < 1 or nb1 % el or offset + (ne0 - 1) * el + (ne1 - 1) * nb1 + el > ggml.ggml_nbytes(t):
        raise ValueError(f"view [{ne0}, {ne1}] with row stride {nb1} at {offset} outside the tensor")
    v = ggml.ggml_view_2d(ctx, t, ne0, 1, nb1, offset)
    c = v.contents
    c.ne[1] = ne1
    c.nb[1] = nb1
    c.nb[2] = c.nb[3] = nb1 * ne1
    return v


def address(a: np.ndarray) -> int:
    """The data pointer of an array; `a.ctypes.data` leaves a small object behind on every call,
    which grows the heap in a per-frame loop."""
    return a.__array_interface__["data"][0]


def read_tensor(t: Tensor) -> np.ndarray:
    """A backend tensor's values as a new numpy array of its (trimmed) shape."""
    dtype = numpy_type(ggml_type_of(t))
    if dtype is None:
        raise TypeError(f"graph output of ggml type {ggml_type_of(t)} cannot be read as numpy")
    out = np.empty(tensor_shape(t), dtype=dtype)
    ggml.ggml_backend_tensor_get(t, address(out), 0, out.nbytes)
    return out


def as_f16(a: np.ndarray) -> np.ndarray:
    """float32 -> float16 with ggml's vectorised rows (numpy converts value by value, much slower);
    the same round-to-nearest-even."""
    src = np.ascontiguousarray(a, dtype=np.float32)
    out = np.empty(src.shape, np.float16)
    ggml.ggml_cpu_fp32_to_fp16(
        src.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_ushort)),
        src.size,
    )
    return out


def dequantize(raw: np.ndarray, ggml_type: int, shape: Sequence[int]) -> np.ndarray:
    """A tensor's raw bytes of any ggml type -> float32 of `shape`, with ggml's own kernel."""
    shape = check_shape(shape)
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if raw.nbytes != tensor_nbytes(ggml_type, shape):
        raise ValueError(f"{raw.nbytes} bytes given for a {type_name(ggml_type)} {shape} tensor")
    to_float = ggml.ggml_get_type_traits(ggml_type).contents.to_float
    if not to_float:
        raise TypeError(f"ggml has no to_float for {type_name(ggml_type)}")
    out = np.empty(shape, dtype=np.float32)
    to_float(ctypes.c_void_p(address(raw)), ctypes.cast(address(out), ctypes.POINTER(ctypes.c_float)), out.size)
    return out


_MIN_ROWS_PER_CHUNK = 64


def quantize_rows(matrix: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """Quantize a 2-D float32 array row by row with ggml's kernels (the `gguf` package quantizes only
    Q8_0/Q4_0); returns the raw blocks as uint8 [rows, row_bytes]. Rows must be whole blocks (checked
    here: ggml would abort the interpreter)."""
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise QuantizationError(f"quantize_rows needs a 2-D float32 array, got {matrix.dtype} {matrix.shape}")
    n_rows, n_per_row = matrix.shape
    block, type_size = QUANT_SIZES[qtype]
    if n_per_row % block:
        raise QuantizationError(f"rows of {n_per_row} are not a multiple of {qtype.name}'s block of {block}")
    if not np.isfinite(matrix).all():
        raise QuantizationError("cannot quantize a tensor holding NaN or Inf")
    src = np.ascontiguousarray(matrix)
    row_bytes = n_per_row // block * type_size
    dst = np.empty((n_rows, row_bytes), dtype=np.uint8)
    src_p = src.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    dst_p = dst.ctypes.data_as(ctypes.c_void_p)

    def chunk(first: int, count: int) -> int:
        # ctypes releases the GIL during the call, so chunks run in parallel
        return ggml.ggml_quantize_chunk(int(qtype), src_p, dst_p, first * n_per_row, count, n_per_row, None)

    n_chunks = max(1, min(os.cpu_count() or 1, n_rows // _MIN_ROWS_PER_CHUNK))
    bounds = np.linspace(0, n_rows, n_chunks + 1).astype(int)
    if n_chunks == 1:
        written = chunk(0, n_rows)
    else:
        with ThreadPoolExecutor(n_chunks) as pool:
            written = sum(pool.map(chunk, bounds[:-1], np.diff(bounds)))
    if written != dst.nbytes:
        raise QuantizationError(f"ggml wrote {written} bytes for {qtype.name}, expected {dst.nbytes}")
    return dst


def has_llamafile() -> bool:
    """Whether ggml was built with GGML_LLAMAFILE (fast F32/F16/Q8_0/Q4_0 matmuls over many columns)."""
    return bool(ggml.ggml_cpu_has_llamafile())


def repackable(ggml_type: int, shape: Sequence[int]) -> bool:
    """Whether CPU_REPACK has a kernel for this matrix on this CPU: ggml's own choice
    (`ggml_repack_get_optimal_repack_type`) for the types our mixes hold. x86 with AVX2: Q4_0 and Q4_K
    in multiples of 8 rows. ARM NEON with dotprod or i8mm: Q4_0 and Q8_0 in multiples of 4 rows, Q4_K,
    Q5_K and Q6_K in multiples of 8. Where ggml has none, tensor_set into a CPU_REPACK buffer
    dereferences a null kernel and segfaults: a Cortex-A72 (Raspberry Pi 4, NEON only), Q8_0/Q5_K/Q6_K
    on x86, F16/F32 anywhere."""
    if cpu_repack_buffer_type() is None or len(shape) != 2:
        return False
    n_rows = shape[0]
    if ggml.ggml_cpu_has_avx2():
        return ggml_type in (GGML_TYPE_Q4_0, GGML_TYPE_Q4_K) and n_rows % 8 == 0
    if ggml.ggml_cpu_has_neon() and (ggml.ggml_cpu_has_matmul_int8() or ggml.ggml_cpu_has_dotprod()):
        if ggml_type in (GGML_TYPE_Q4_0, GGML_TYPE_Q8_0):
            return n_rows % 4 == 0
        return ggml_type in (GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K) and n_rows % 8 == 0
    return False


@functools.cache
def cpu_repack_buffer_type() -> int | None:
    """ggml's CPU_REPACK buffer type (an extra buffer type of the CPU device), or None."""
    reg = ggml.ggml_backend_cpu_reg()
    proc = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not proc:
        return None
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(proc)
    bufts = get_extra(ggml.ggml_backend_reg_dev_get(reg, 0))
    i = 0
    while bufts and bufts[i]:
        if ggml.ggml_backend_buft_name(bufts[i]) == b"CPU_REPACK":
            return int(bufts[i])
        i += 1
    return None


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    """madvise(2) from the C library, where the platform has it (not Windows)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _libc_madvise()


def can_release_pages() -> bool:
    return _MADVISE is not None


def release_pages(start: int, size: int) -> None:
    """Drop the resident pages wholly inside [start, start + size) of a read-only file mapping: the
    OS reads a page back from the file (its page cache) if it is touched again. Pages shared with
    bytes outside the range are kept."""
    if _MADVISE is None:
        return
    page = mmap.PAGESIZE
    first = -(-start // page) * page
    end = (start + size) // page * page
    if end > first:
        _MADVISE(first, end - first, mmap.MADV_DONTNEED)


@contextlib.contextmanager
def quiet_debug_log() -> Iterator[None]:
    """Drop ggml's debug messages (and their continuations) meanwhile; others go to stderr as usual."""
    last = [0]

    def log(level: int, text: bytes, _user: Any) -> None:
        if level != ggml.GGML_LOG_LEVEL_CONT:
            last[0] = level
        if last[0] > ggml.GGML_LOG_LEVEL_DEBUG:
            sys.stderr.write(text.decode(errors="replace"))

    callback = ggml.ggml_log_callback(log)
    ggml.ggml_log_set(callback, None)
    try:
        yield
    finally:
        ggml.ggml_log_set(ggml.ggml_log_callback(), None)  # NULL: ggml's default logger
