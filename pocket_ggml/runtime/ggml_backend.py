"""GGML CPU backend objects: the backend, weight and state stores, and the graph runner.

The ctypes-level helpers they are made of live in `pocket_ggml.ggml_binding`; graph builders
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
- `GraphRunner(backend)`: `.run(build, inputs, key=None) -> {name: np.ndarray}` builds `build(graph)`
    (a `pocket_ggml.ggml_graphs.graph.Graph`, which returns `{name: tensor}`) in a no_alloc context,
    allocates it with gallocr, sets the inputs, computes with ggml_backend_graph_compute and returns
    the outputs. An output's numpy shape is the reversed `ne` up to `ggml_n_dims` (leading size-1 axes
    are dropped). With a `key` the graph is kept and the next call with the same key only sets inputs
    and computes. `.release()` frees the kept graph, `.close()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pocket_ggml.format.ggml_types import tensor_nbytes
from pocket_ggml.ggml_binding import (
    GGML_TYPE_F32,
    Tensor,
    address,
    as_f16,
    can_release_pages,
    check_shape,
    cpu_repack_buffer_type,
    ggml,
    ggml_type_for,
    is_view,
    metadata_context,
    new_tensor,
    numpy_type,
    quiet_debug_log,
    read_tensor,
    release_pages,
    repackable,
    type_name,
)
from pocket_ggml.ggml_graphs.graph import Graph

_HOST_ALIGNMENT = 32  # ggml's TENSOR_ALIGNMENT, asserted by ggml_backend_cpu_buffer_from_ptr


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
        dtype = numpy_type(ggml_type)
        n = tensor_nbytes(ggml_type, shape)
        out = np.empty(shape if dtype is not None else (n,), dtype=dtype or np.uint8)
        self._read_into(name, out)
        return out

    def _read_into(self, name: str, out: np.ndarray) -> None:
        ggml.ggml_backend_tensor_get(self._tensors[name], address(out), 0, out.nbytes)

    def _declare(self, specs: Sequence[tuple[str, int, tuple[int, ...]]]) -> None:
        self._ctx = metadata_context(len(specs))
        for name, ggml_type, shape in specs:
            self._tensors[name] = new_tensor(self._ctx, ggml_type, shape, name)
            self._shapes[name] = shape
            self._types[name] = ggml_type

    def _alloc_packed(self, backend: CpuBackend, usage: int) -> None:
        """One backend buffer holding every tensor at aligned offsets."""
        align = backend.alignment
        offsets, size = {}, 0
        for name in self._tensors:
            offsets[name] = size
            size += -(-tensor_nbytes(self._types[name], self._shapes[name]) // align) * align
        self._buffer = ggml.ggml_backend_alloc_buffer(backend.handle, max(size, align))
        if not self._buffer:
            raise MemoryError(f"cannot allocate a {size}-byte backend buffer")
        ggml.ggml_backend_buffer_set_usage(self._buffer, usage)
        base = ggml.ggml_backend_buffer_get_base(self._buffer)
        for name, t in self._tensors.items():
            ggml.ggml_backend_tensor_alloc(self._buffer, t, base + offsets[name])

    def _write(self, name: str, data: np.ndarray) -> None:
        expected = tensor_nbytes(self._types[name], self._shapes[name])
        data = np.ascontiguousarray(data)
        if data.nbytes != expected:
            raise ValueError(f"{name}: {data.nbytes} bytes given, tensor holds {expected}")
        ggml.ggml_backend_tensor_set(self._tensors[name], address(data), 0, expected)

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
        if getattr(memory, "filename", None) is None or getattr(memory, "mode", None) != "r" or not can_release_pages():
            return  # anonymous or writable memory would lose its contents
        base = memory.ctypes.data  # type: ignore[union-attr]
        for name in names:
            offset = self._offsets.get(name)
            if offset is not None:
                release_pages(base + offset, tensor_nbytes(self._types[name], self._shapes[name]))

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
        staging = np.empty(max((tensor_nbytes(t, shape) for _, t, shape in specs), default=0), np.uint8)

        def read(name: str) -> np.ndarray:
            out = staging[: tensor_nbytes(self._types[name], self._shapes[name])]
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
                raise ValueError(f"{name}: {type_name(ggml_type)} {shape} cannot go to CPU_REPACK")
        if not specs:
            return
        ctx = metadata_context(len(specs))
        tensors = {name: new_tensor(ctx, ggml_type, shape) for name, ggml_type, shape in specs}
        buft = cpu_repack_buffer_type() if repack else ggml.ggml_backend_get_default_buffer_type(backend.handle)
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
        with quiet_debug_log():  # the repack logs one line per tensor
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
            end = s.offset + tensor_nbytes(s.ggml_type, check_shape(s.shape))
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
        ggml_type, shape, data = a.ggml_type, check_shape(a.shape), a.data
    else:
        ggml_type, shape, data = ggml_type_for(a.dtype), check_shape(a.shape), a
    n = tensor_nbytes(ggml_type, shape)
    if data.nbytes != n:
        raise ValueError(f"{name}: {data.nbytes} bytes given for a tensor of {n}")
    return ggml_type, shape, data


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
            shape = check_shape(shape)  # type: ignore[arg-type]
            tensor_nbytes(ggml_type, shape)
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
        dtype = numpy_type(ggml_type)
        if dtype == np.float16 and array.dtype == np.float32:
            array = as_f16(array)
        self._write(name, np.asarray(array, dtype=dtype) if dtype is not None else array)


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
        # Every graph's context (tensor and node metadata, MBs at 16384 nodes) lives in this one
        # buffer, reused by each build: a fresh malloc per build would come from the heap once glibc
        # has raised its mmap threshold, and a long stream's rebuilds would grow the RSS.
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
            start = -address(raw) % 64
            self._ctx_memory = raw[start : start + self._ctx_size]
        params = ggml.ggml_init_params(mem_size=self._ctx_size, mem_buffer=address(self._ctx_memory), no_alloc=True)
        ctx = ggml.ggml_init(params)
        if not ctx:
            raise MemoryError("ggml_init failed")
        try:
            g = Graph(ctx, ggml.ggml_new_graph_custom(ctx, self.max_nodes, False))
            outputs = dict(build(g))
            for name, t in outputs.items():
                # A view does not keep its parent alive in gallocr, which may hand the parent's memory
                # to later nodes: outputs that are views are copied out.
                if is_view(t) or not ggml.ggml_is_contiguous(t):
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
            ggml.ggml_backend_tensor_set(g.inputs[name][0], address(a), 0, a.nbytes)
        status = ggml.ggml_backend_graph_compute(self.backend.handle, g.cgraph)
        if status != ggml.GGML_STATUS_SUCCESS:
            raise RuntimeError(f"ggml_backend_graph_compute failed with status {status}")
        return {name: read_tensor(t) for name, t in built.outputs.items()}

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
