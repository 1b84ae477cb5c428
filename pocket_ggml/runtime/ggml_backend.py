"""GGML CPU backend plumbing: the only module that touches ctypes and ggml's backend API.

Importing it fixes the known ggml-python 0.0.45 binding bugs (pointer restypes cut to 32 bits) and sets
GGML_NO_BACKTRACE=1, so a failed GGML_ASSERT aborts without starting gdb, OMP_WAIT_POLICY=passive
(unless already set) and, with glibc, a fixed 128 KiB malloc mmap threshold (unless MALLOC_MMAP_THRESHOLD_
is set); see below for why. Graph builders
(`pocket_ggml.ggml_graphs`) use `ggml.ggml_*` ops on `Graph.ctx` and never call the backend directly.

Shapes are given in numpy order (outermost first); ggml's `ne` is the reverse.

API
- `CpuBackend(n_threads=1)`: `.n_threads` (settable), `.handle`, `.close()`.
- `RawTensor(ggml_type, shape, data)`: bytes of a tensor of any ggml type (e.g. Q8_0, Q4_K blocks).
- `TensorSpec(name, ggml_type, shape, offset)`: where a tensor lies in a host memory blob.
- `WeightStore`: read-only named weights in one backend buffer; a `Mapping[str, ggml tensor]`.
    `WeightStore.from_arrays(backend, {name: np.ndarray | RawTensor})` copies (F32/F16 arrays or raw).
    `WeightStore.from_host_memory(backend, specs, memory)` is zero-copy over e.g. a GGUF np.memmap.
    `.shape(name)`, `.ggml_type(name)`, `.get(name) -> np.ndarray` (a copy), `.close()`.
- `StateStore(backend, {name: shape | (shape, ggml_type)})`: persistent tensors (KV caches, conv
    history) in their own buffer, zero-initialised, surviving across computes; a `Mapping`.
    `.set(name, array)`, `.get(name) -> np.ndarray`, `.reset()` (all zeros), `.close()`.
- `Graph`: a graph under construction (`.ctx` for ops); `.input(name, shape, dtype)` declares an
    input filled at run time, `.feed(name, array)` an input whose value is known while building,
    `.expand(tensor)` schedules a node now (for writes whose result nobody reads).
- `GraphRunner(backend)`: `.run(build, inputs, key=None) -> {name: np.ndarray}` builds `build(graph)`
    (which returns `{name: tensor}`) in a no_alloc context, allocates it with gallocr, sets the inputs,
    computes with ggml_backend_graph_compute and returns the outputs. An output's numpy shape is the
    reversed `ne` up to `ggml_n_dims` (leading size-1 axes are dropped). With a `key` the graph is
    kept and the next call with the same key only sets inputs and computes. `.release()` frees the
    kept graph, `.close()`.
- `quantize_rows(matrix, qtype) -> uint8 blocks`: ggml's own quantizers (the K-quants exist only
    in ggml), one chunk of rows per core.
- `overlapping_view_2d(ctx, t, ne0, ne1, nb1, offset)`: a view whose rows overlap (conv windows).
- `tensor_shape(t) -> tuple` (numpy order, trimmed to `ggml_n_dims`), `tensor_ne(t)` / `tensor_nb(t)`
    (ggml order, 4 axes), `ggml_type_of(t)`,
    `GGML_TYPE_*` aliases for the common types, `Tensor` (the type of a ggml tensor pointer).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
import platform
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from pocket_ggml.errors import QuantizationError
from pocket_ggml.format.ggml_types import QUANT_SIZES, GGMLType

os.environ.setdefault("GGML_NO_BACKTRACE", "1")
# libgomp reads this when ggml is loaded. Its default spins at every barrier, which turns each one
# into a 4 ms scheduler tick when another process holds a core (FlowLM steps of 11-300 ms with 2
# threads on a busy 2-core machine); passive waits cost ~1 ms per step and never collapse.
# pocket_ggml.ggml_graphs sets it too: it may load ggml first.
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

import ggml  # noqa: E402

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

_NUMPY_TYPES: dict[int, np.dtype] = {
    GGML_TYPE_F32: np.dtype(np.float32),
    GGML_TYPE_F16: np.dtype(np.float16),
    GGML_TYPE_I32: np.dtype(np.int32),
    GGML_TYPE_I64: np.dtype(np.int64),
}
_GGML_TYPES: dict[np.dtype, int] = {v: k for k, v in _NUMPY_TYPES.items()}
_MAX_DIMS = 4
_HOST_ALIGNMENT = 32  # ggml's TENSOR_ALIGNMENT, asserted by ggml_backend_cpu_buffer_from_ptr


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


def _ggml_type_for(dtype: np.dtype) -> int:
    t = _GGML_TYPES.get(np.dtype(dtype))
    if t is None:
        raise TypeError(f"no ggml type for numpy dtype {np.dtype(dtype)}")
    return t


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= _MAX_DIMS or any(s <= 0 for s in shape):
        raise ValueError(f"tensor shape {shape} must have 1-4 positive axes")
    return shape


def _new_tensor(ctx: int, ggml_type: int, shape: tuple[int, ...]) -> Tensor:
    ne = (ctypes.c_int64 * len(shape))(*reversed(shape))
    return ggml.ggml_new_tensor(ctx, ggml_type, len(shape), ne)


def _nbytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a contiguous tensor; also rejects rows that are not whole quantization blocks."""
    block = ggml.ggml_blck_size(ggml_type)
    if shape[-1] % block:
        raise ValueError(f"row length {shape[-1]} is not a multiple of the block size {block}")
    return ggml.ggml_row_size(ggml_type, shape[-1]) * int(np.prod(shape[:-1], dtype=np.int64))


def _metadata_context(n_tensors: int) -> int:
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


def ggml_type_of(t: Tensor) -> int:
    """The tensor's ggml type (GGML_TYPE_*)."""
    return int(t.contents.type)


class CpuBackend:
    """The ggml CPU backend with an explicit thread count (ggml's default of 4 is never used)."""

    def __init__(self, n_threads: int = 1) -> None:
        handle = ggml.ggml_backend_cpu_init()
        if not handle:
            raise RuntimeError("ggml_backend_cpu_init failed")
        self.handle: int = handle
        self._n_threads = 0
        self.n_threads = n_threads

    @property
    def n_threads(self) -> int:
        return self._n_threads

    @n_threads.setter
    def n_threads(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n_threads must be a positive integer, got {n!r}")
        ggml.ggml_backend_cpu_set_n_threads(self.handle, n)
        self._n_threads = n

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        """Compute with `n` threads inside the block, then with the thread count set before."""
        before = self.n_threads
        self.n_threads = n
        try:
            yield
        finally:
            self.n_threads = before

    @property
    def alignment(self) -> int:
        return int(ggml.ggml_backend_get_alignment(self.handle))

    def close(self) -> None:
        if getattr(self, "handle", 0):
            ggml.ggml_backend_free(self.handle)
            self.handle = 0

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class RawTensor:
    """A tensor given as its raw ggml bytes (any type, e.g. quantized blocks)."""

    ggml_type: int
    shape: tuple[int, ...]
    data: np.ndarray  # uint8, exactly the tensor's ggml bytes


@dataclass(frozen=True)
class TensorSpec:
    """A tensor that lies `offset` bytes into a host memory blob (e.g. a GGUF data section)."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    offset: int


class _TensorStore(Mapping[str, Tensor]):
    """Named tensors of one metadata context, all in one backend buffer."""

    def __init__(self) -> None:
        self._ctx = 0
        self._buffer = 0
        self._tensors: dict[str, Tensor] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._types: dict[str, int] = {}

    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        """Numpy-order shape as declared (all axes kept)."""
        return self._shapes[name]

    def ggml_type(self, name: str) -> int:
        return self._types[name]

    def get(self, name: str) -> np.ndarray:
        """A numpy copy (raw uint8 bytes for quantized types)."""
        shape, ggml_type = self._shapes[name], self._types[name]
        dtype = _NUMPY_TYPES.get(ggml_type)
        n = _nbytes(ggml_type, shape)
        out = np.empty(shape if dtype is not None else (n,), dtype=dtype or np.uint8)
        self._read_into(name, out)
        return out

    def _read_into(self, name: str, out: np.ndarray) -> None:
        ggml.ggml_backend_tensor_get(self._tensors[name], _address(out), 0, out.nbytes)

    def _declare(self, specs: Sequence[tuple[str, int, tuple[int, ...]]]) -> None:
        self._ctx = _metadata_context(len(specs))
        for name, ggml_type, shape in specs:
            t = _new_tensor(self._ctx, ggml_type, shape)
            ggml.ggml_set_name(t, name.encode()[: ggml.GGML_MAX_NAME - 1])
            self._tensors[name] = t
            self._shapes[name] = shape
            self._types[name] = ggml_type

    def _alloc_packed(self, backend: CpuBackend, usage: int) -> None:
        """One backend buffer holding every tensor at aligned offsets."""
        align = backend.alignment
        offsets, size = {}, 0
        for name in self._tensors:
            offsets[name] = size
            size += -(-_nbytes(self._types[name], self._shapes[name]) // align) * align
        self._buffer = ggml.ggml_backend_alloc_buffer(backend.handle, max(size, align))
        if not self._buffer:
            raise MemoryError(f"cannot allocate a {size}-byte backend buffer")
        ggml.ggml_backend_buffer_set_usage(self._buffer, usage)
        base = ggml.ggml_backend_buffer_get_base(self._buffer)
        for name, t in self._tensors.items():
            ggml.ggml_backend_tensor_alloc(self._buffer, t, base + offsets[name])

    def _write(self, name: str, data: np.ndarray) -> None:
        expected = _nbytes(self._types[name], self._shapes[name])
        data = np.ascontiguousarray(data)
        if data.nbytes != expected:
            raise ValueError(f"{name}: {data.nbytes} bytes given, tensor holds {expected}")
        ggml.ggml_backend_tensor_set(self._tensors[name], _address(data), 0, expected)

    def close(self) -> None:
        if getattr(self, "_buffer", 0):
            ggml.ggml_backend_buffer_free(self._buffer)
            self._buffer = 0
        if getattr(self, "_ctx", 0):
            ggml.ggml_free(self._ctx)
            self._ctx = 0
            self._tensors.clear()

    def __del__(self) -> None:
        self.close()


class WeightStore(_TensorStore):
    """Immutable named weights (any ggml type), looked up by GGUF name: one backend buffer, plus one
    per `put` (converted or re-laid-out copies that replace or add tensors)."""

    _memory: np.ndarray | None = None  # the host blob a zero-copy store points into

    def __init__(self) -> None:
        super().__init__()
        self._offsets: dict[str, int] = {}  # zero-copy tensors: byte offset in `_memory`
        self._extra: list[tuple[int, int]] = []  # (ctx, buffer) of each `put`
        self._repacked: set[str] = set()

    def _read_into(self, name: str, out: np.ndarray) -> None:
        if name in self._repacked:  # ggml cannot read a CPU_REPACK tensor back (it would abort)
            raise ValueError(f"{name} was repacked for CPU_REPACK: its bytes cannot be read back")
        offset = self._offsets.get(name)
        filename = getattr(self._memory, "filename", None)
        if offset is None or filename is None:
            return super()._read_into(name, out)
        # Read the file, not the mapping: the mapped pages stay out of the process's RSS (a tensor
        # converted by `put` would otherwise be resident twice).
        start = self._memory.offset + offset  # type: ignore[union-attr]
        with open(filename, "rb", buffering=0) as f:
            f.seek(start)
            if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != out.nbytes:
                raise OSError(f"{filename}: short read of {name}")

    def release_pages(self, names: Sequence[str]) -> None:
        """Drop the resident pages of these tensors where they are mapped read-only from a file: the
        process's memory shrinks, and the OS reads a page back from the file (its page cache) if a graph
        touches it again. Tensors in memory of their own, or partly sharing a page with others, keep
        those pages."""
        memory = self._memory
        if getattr(memory, "filename", None) is None or getattr(memory, "mode", None) != "r" or _MADVISE is None:
            return  # anonymous or writable memory would lose its contents
        page = mmap.PAGESIZE
        base = memory.ctypes.data  # type: ignore[union-attr]
        for name in names:
            offset = self._offsets.get(name)
            if offset is None:
                continue
            start = -(-(base + offset) // page) * page
            end = (base + offset + _nbytes(self._types[name], self._shapes[name])) // page * page
            if end > start:
                _MADVISE(start, end - start, mmap.MADV_DONTNEED)

    def put(self, backend: CpuBackend, arrays: Mapping[str, np.ndarray | RawTensor], repack: bool = False) -> None:
        """Add or replace tensors with copies of `arrays` (F32/F16/I32 arrays or raw tensors) in a new buffer.

        With `repack`, the buffer is ggml's CPU_REPACK type, whose matmul kernels for Q4_0/Q4_K read
        an interleaved layout: every tensor must pass `repackable` and be used only as a mul_mat
        weight (get_rows or any other op would read the interleaved bytes as plain ones).
        """
        specs, data = [], {}
        for name, a in arrays.items():
            ggml_type, shape, data[name] = _raw_spec(name, a)
            specs.append((name, ggml_type, shape))
        self._install(backend, specs, data.__getitem__, repack)

    def repack(self, backend: CpuBackend, names: Sequence[str]) -> None:
        """Move these tensors (each `repackable`, each used only as a mul_mat weight) to one CPU_REPACK
        buffer, one at a time through one staging buffer: the load never holds a second copy of all."""
        specs = [(name, self._types[name], self._shapes[name]) for name in names]
        staging = np.empty(max((_nbytes(t, shape) for _, t, shape in specs), default=0), np.uint8)

        def read(name: str) -> np.ndarray:
            out = staging[: _nbytes(self._types[name], self._shapes[name])]
            self._read_into(name, out)
            return out

        self._install(backend, specs, read, repack=True)

    def _install(
        self,
        backend: CpuBackend,
        specs: Sequence[tuple[str, int, tuple[int, ...]]],
        source: Callable[[str], np.ndarray],
        repack: bool,
    ) -> None:
        """A new buffer for `specs`; each tensor's bytes come from `source(name)`, called before the
        store's entry for that name is replaced (so a source may read the tensor's current bytes)."""
        for name, ggml_type, shape in specs:
            if repack and not repackable(ggml_type, shape):
                raise ValueError(f"{name}: {ggml.ggml_type_name(ggml_type).decode()} {shape} cannot go to CPU_REPACK")
        if not specs:
            return
        ctx = _metadata_context(len(specs))
        tensors = {name: _new_tensor(ctx, ggml_type, shape) for name, ggml_type, shape in specs}
        buft = _cpu_repack_buffer_type() if repack else ggml.ggml_backend_get_default_buffer_type(backend.handle)
        align = ggml.ggml_backend_buft_get_alignment(buft)
        sizes = {
            name: -(-ggml.ggml_backend_buft_get_alloc_size(buft, t) // align) * align for name, t in tensors.items()
        }
        buffer = ggml.ggml_backend_buft_alloc_buffer(buft, max(sum(sizes.values()), align))
        if not buffer:
            ggml.ggml_free(ctx)
            raise MemoryError(f"cannot allocate a {sum(sizes.values())}-byte backend buffer")
        self._extra.append((ctx, buffer))
        ggml.ggml_backend_buffer_set_usage(buffer, ggml.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        address = ggml.ggml_backend_buffer_get_base(buffer)
        with _quiet_debug_log():  # the repack logs one line per tensor
            for name, ggml_type, shape in specs:
                data = source(name)
                t = tensors[name]
                ggml.ggml_set_name(t, name.encode()[: ggml.GGML_MAX_NAME - 1])
                ggml.ggml_backend_tensor_alloc(buffer, t, address)
                address += sizes[name]
                self._tensors[name], self._shapes[name], self._types[name] = t, shape, ggml_type
                self._offsets.pop(name, None)
                self._repacked.discard(name)
                self._write(name, data)
        if repack:
            self._repacked.update(tensors)

    def close(self) -> None:
        for ctx, buffer in getattr(self, "_extra", ()):
            ggml.ggml_backend_buffer_free(buffer)
            ggml.ggml_free(ctx)
        self._extra = []
        super().close()

    @classmethod
    def from_arrays(cls, backend: CpuBackend, arrays: Mapping[str, np.ndarray | RawTensor]) -> WeightStore:
        """Copy numpy arrays (F32/F16/I32) or raw tensors into a new backend buffer."""
        specs, data = [], {}
        for name, a in arrays.items():
            ggml_type, shape, data[name] = _raw_spec(name, a)
            specs.append((name, ggml_type, shape))
        store = cls()
        store._declare(specs)
        store._alloc_packed(backend, ggml.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        for name, a in data.items():
            store._write(name, a)
        return store

    @classmethod
    def from_host_memory(cls, backend: CpuBackend, specs: Sequence[TensorSpec], memory: np.ndarray) -> WeightStore:
        """Zero-copy: tensors point into `memory` (uint8, e.g. a read-only np.memmap of a GGUF).

        `memory` must stay alive as long as the store; the store keeps a reference to it.
        """
        if memory.dtype != np.uint8 or memory.ndim != 1 or not memory.flags.c_contiguous:
            raise ValueError("memory must be a contiguous 1-D uint8 array")
        if memory.ctypes.data % _HOST_ALIGNMENT:
            raise ValueError(f"memory must start at a multiple of {_HOST_ALIGNMENT} bytes (mmaps do)")
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("tensor names must be unique")
        for s in specs:
            end = s.offset + _nbytes(s.ggml_type, _check_shape(s.shape))
            if s.offset < 0 or end > memory.nbytes:
                raise ValueError(f"{s.name}: bytes {s.offset}..{end} outside a {memory.nbytes}-byte blob")
        store = cls()
        store._memory = memory
        store._offsets = {s.name: s.offset for s in specs}
        store._declare([(s.name, s.ggml_type, tuple(s.shape)) for s in specs])
        base = memory.ctypes.data
        store._buffer = ggml.ggml_backend_cpu_buffer_from_ptr(base, max(memory.nbytes, 1))
        if not store._buffer:
            raise MemoryError("ggml_backend_cpu_buffer_from_ptr failed")
        ggml.ggml_backend_buffer_set_usage(store._buffer, ggml.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        for s in specs:
            ggml.ggml_backend_tensor_alloc(store._buffer, store[s.name], base + s.offset)
        return store


def _raw_spec(name: str, a: np.ndarray | RawTensor) -> tuple[int, tuple[int, ...], np.ndarray]:
    """(ggml type, shape, bytes or values) of an array or raw tensor, its size checked."""
    if isinstance(a, RawTensor):
        ggml_type, shape, data = a.ggml_type, _check_shape(a.shape), a.data
    else:
        ggml_type, shape, data = _ggml_type_for(a.dtype), _check_shape(a.shape), a
    n = _nbytes(ggml_type, shape)
    if data.nbytes != n:
        raise ValueError(f"{name}: {data.nbytes} bytes given for a tensor of {n}")
    return ggml_type, shape, data


@contextlib.contextmanager
def _quiet_debug_log() -> Iterator[None]:
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


def dequantize(raw: np.ndarray, ggml_type: int, shape: Sequence[int]) -> np.ndarray:
    """A tensor's raw bytes of any ggml type -> float32 of `shape`, with ggml's own kernel."""
    shape = _check_shape(shape)
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if raw.nbytes != _nbytes(ggml_type, shape):
        raise ValueError(f"{raw.nbytes} bytes given for a {ggml.ggml_type_name(ggml_type).decode()} {shape} tensor")
    to_float = ggml.ggml_get_type_traits(ggml_type).contents.to_float
    if not to_float:
        raise TypeError(f"ggml has no to_float for {ggml.ggml_type_name(ggml_type).decode()}")
    out = np.empty(shape, dtype=np.float32)
    to_float(ctypes.c_void_p(_address(raw)), ctypes.cast(_address(out), ctypes.POINTER(ctypes.c_float)), out.size)
    return out


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
    if _cpu_repack_buffer_type() is None or len(shape) != 2:
        return False
    rows = shape[0]
    if ggml.ggml_cpu_has_avx2():
        return ggml_type in (GGML_TYPE_Q4_0, GGML_TYPE_Q4_K) and rows % 8 == 0
    if ggml.ggml_cpu_has_neon() and (ggml.ggml_cpu_has_matmul_int8() or ggml.ggml_cpu_has_dotprod()):
        if ggml_type in (GGML_TYPE_Q4_0, GGML_TYPE_Q8_0):
            return rows % 4 == 0
        return ggml_type in (GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K) and rows % 8 == 0
    return False


@functools.cache
def _cpu_repack_buffer_type() -> int | None:
    """ggml's CPU_REPACK buffer type (an extra buffer type of the CPU device), or None."""
    reg = ggml.ggml_backend_cpu_reg()
    address = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    bufts = get_extra(ggml.ggml_backend_reg_dev_get(reg, 0))
    i = 0
    while bufts and bufts[i]:
        if ggml.ggml_backend_buft_name(bufts[i]) == b"CPU_REPACK":
            return int(bufts[i])
        i += 1
    return None


class StateStore(_TensorStore):
    """Persistent tensors (KV caches, conv history) that survive across graph computes.

    They live in their own backend buffer, so gallocr never reuses their memory. All start at zero.
    """

    def __init__(self, backend: CpuBackend, specs: Mapping[str, Sequence[int] | tuple[Sequence[int], int]]) -> None:
        super().__init__()
        declared = []
        for name, spec in specs.items():
            if len(spec) == 2 and not isinstance(spec[0], int):
                shape, ggml_type = spec  # type: ignore[misc]
            else:
                shape, ggml_type = spec, GGML_TYPE_F32
            shape = _check_shape(shape)  # type: ignore[arg-type]
            _nbytes(ggml_type, shape)
            declared.append((name, int(ggml_type), shape))
        self._declare(declared)
        self._alloc_packed(backend, ggml.GGML_BACKEND_BUFFER_USAGE_ANY)
        self.reset()

    def reset(self) -> None:
        ggml.ggml_backend_buffer_clear(self._buffer, 0)

    def set(self, name: str, array: np.ndarray) -> None:
        """Overwrite a state tensor from numpy (same shape; dtype converted for F32/F16/I32)."""
        shape, ggml_type = self._shapes[name], self._types[name]
        if tuple(array.shape) != shape:
            raise ValueError(f"{name}: shape {tuple(array.shape)} given, state holds {shape}")
        dtype = _NUMPY_TYPES.get(ggml_type)
        if dtype == np.float16 and array.dtype == np.float32:
            array = as_f16(array)
        self._write(name, np.asarray(array, dtype=dtype) if dtype is not None else array)


def as_f16(a: np.ndarray) -> np.ndarray:
    """float32 -> float16 with ggml's vectorised rows (numpy converts value by value, ~8x slower);
    the same round-to-nearest-even."""
    src = np.ascontiguousarray(a, dtype=np.float32)
    out = np.empty(src.shape, np.float16)
    ggml.ggml_cpu_fp32_to_fp16(
        src.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_ushort)),
        src.size,
    )
    return out


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
        shape = _check_shape(shape)
        dtype = np.dtype(dtype)
        t = _new_tensor(self.ctx, _ggml_type_for(dtype), shape)
        ggml.ggml_set_name(t, name.encode()[: ggml.GGML_MAX_NAME - 1])
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


@dataclass
class _BuiltGraph:
    """A graph built and allocated by a GraphRunner: its context, inputs and (contiguous) outputs."""

    ctx: int
    graph: Graph
    outputs: dict[str, Tensor]
    key: Hashable | None = None


class GraphRunner:
    """Builds, allocates (gallocr), and computes graphs on one backend; one per thread.

    A call with a `key` keeps its graph: the next call with the same key skips building and
    allocating (~2 us per node) and only sets the inputs. A kept graph's inputs must all be passed
    to every call (`Graph.feed` is refused), so its shapes must not depend on the call. The runner
    keeps one graph: any other call frees it, as gallocr may move its buffer for the new graph.
    """

    def __init__(self, backend: CpuBackend, max_nodes: int = 16384) -> None:
        self.backend = backend
        self.max_nodes = max_nodes
        self._kept: _BuiltGraph | None = None
        # Every graph's context (tensor and node metadata, ~6 MB at 16384 nodes) lives in this one
        # buffer, reused by each build: a fresh malloc per build comes, after glibc has raised its
        # mmap threshold, from the heap, and a long stream's rebuilds grew the RSS by MBs.
        self._ctx_size = ggml.ggml_tensor_overhead() * max_nodes + ggml.ggml_graph_overhead_custom(max_nodes, False)
        self._ctx_memory: np.ndarray | None = None
        self._galloc = ggml.ggml_gallocr_new(ggml.ggml_backend_get_default_buffer_type(backend.handle))
        if not self._galloc:
            raise MemoryError("ggml_gallocr_new failed")

    def run(
        self,
        build: Callable[[Graph], Mapping[str, Tensor]],
        inputs: Mapping[str, np.ndarray],
        key: Hashable | None = None,
    ) -> dict[str, np.ndarray]:
        """Compute `build(graph)`'s outputs for `inputs`; with `key`, reuse the graph of the last
        call if it had the same key (`build` is then not called)."""
        if key is not None and self._kept is not None and self._kept.key == key:
            return self._compute(self._kept, self._check_inputs(self._kept.graph, inputs))
        self.release()
        built = self._build(build)
        try:
            g = built.graph
            if key is not None and g.fed:
                raise ValueError(f"a kept graph cannot have fed inputs ({sorted(g.fed)}): pass them to run")
            if set(inputs) & set(g.fed):
                raise ValueError(f"inputs {sorted(set(inputs) & set(g.fed))} were fed while building")
            arrays = self._check_inputs(g, {**g.fed, **inputs})
            out = self._compute(built, arrays)
        except BaseException:
            ggml.ggml_free(built.ctx)
            raise
        if key is None:
            ggml.ggml_free(built.ctx)
        else:
            built.key = key
            self._kept = built
        return out

    def _build(self, build: Callable[[Graph], Mapping[str, Tensor]]) -> _BuiltGraph:
        if self._ctx_memory is None:  # ggml_init asserts GGML_MEM_ALIGN (16); start on a cache line
            raw = np.empty(self._ctx_size + 64, np.uint8)
            start = -_address(raw) % 64
            self._ctx_memory = raw[start : start + self._ctx_size]
        params = ggml.ggml_init_params(mem_size=self._ctx_size, mem_buffer=_address(self._ctx_memory), no_alloc=True)
        ctx = ggml.ggml_init(params)
        if not ctx:
            raise MemoryError("ggml_init failed")
        try:
            g = Graph(ctx, ggml.ggml_new_graph_custom(ctx, self.max_nodes, False))
            outputs = dict(build(g))
            for name, t in outputs.items():
                # A view does not keep its parent alive in gallocr, which may hand the parent's memory
                # to later nodes: outputs that are views are copied out.
                if t.contents.view_src or not ggml.ggml_is_contiguous(t):
                    t = outputs[name] = ggml.ggml_cont(ctx, t)
                ggml.ggml_set_output(t)
                g.expand(t)
            if not ggml.ggml_gallocr_alloc_graph(self._galloc, g.cgraph):
                raise MemoryError("ggml_gallocr_alloc_graph failed")
        except BaseException:
            ggml.ggml_free(ctx)
            raise
        return _BuiltGraph(ctx, g, outputs)

    def _compute(self, built: _BuiltGraph, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = built.graph
        for name, a in arrays.items():
            ggml.ggml_backend_tensor_set(g.inputs[name][0], _address(a), 0, a.nbytes)
        status = ggml.ggml_backend_graph_compute(self.backend.handle, g.cgraph)
        if status != ggml.GGML_STATUS_SUCCESS:
            raise RuntimeError(f"ggml_backend_graph_compute failed with status {status}")
        return {name: _read(t) for name, t in built.outputs.items()}

    @staticmethod
    def _check_inputs(g: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(inputs) != set(g.inputs):
            raise ValueError(f"graph inputs {sorted(g.inputs)} but {sorted(inputs)} given")
        arrays = {}
        for name, (_, shape, dtype) in g.inputs.items():
            a = np.ascontiguousarray(inputs[name], dtype=dtype)
            if a.shape != shape:
                raise ValueError(f"input {name!r}: shape {a.shape} given, graph expects {shape}")
            arrays[name] = a
        return arrays

    def release(self) -> None:
        """Free the kept graph; needed when tensors it reads (e.g. a StateStore) are freed."""
        if self._kept is not None:
            ggml.ggml_free(self._kept.ctx)
            self._kept = None

    def close(self) -> None:
        self.release()
        if getattr(self, "_galloc", 0):
            ggml.ggml_gallocr_free(self._galloc)
            self._galloc = 0

    def __del__(self) -> None:
        self.close()


def _address(a: np.ndarray) -> int:
    """The data pointer of an array; `a.ctypes.data` leaves a small object behind on every call,
    which grows the heap by a few KB per hundred frames in a per-frame loop."""
    return a.__array_interface__["data"][0]


def _read(t: Tensor) -> np.ndarray:
    dtype = _NUMPY_TYPES.get(ggml_type_of(t))
    if dtype is None:
        raise TypeError(f"graph output of ggml type {ggml_type_of(t)} cannot be read as numpy")
    out = np.empty(tensor_shape(t), dtype=dtype)
    ggml.ggml_backend_tensor_get(t, _address(out), 0, out.nbytes)
    return out


_MIN_ROWS_PER_CHUNK = 64


def quantize_rows(matrix: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """Quantize a 2-D float32 array row by row with ggml's kernels (the `gguf` package quantizes only
    Q8_0/Q4_0); returns the raw blocks as uint8 [rows, row_bytes]. Rows must be whole blocks (checked
    here: ggml would abort the interpreter)."""
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise QuantizationError(f"quantize_rows needs a 2-D float32 array, got {matrix.dtype} {matrix.shape}")
    rows, n_per_row = matrix.shape
    block, type_size = QUANT_SIZES[qtype]
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
