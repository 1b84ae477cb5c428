"""A strict, bounded GGUF header reader: the runtime's only parser of the files it loads.

gguf-py's `GGUFReader` trusts the counts it reads: an array count of 2^60 makes it loop (and append a
numpy view per element) until the process dies, a string or dimension count past the end of the file
yields short views that fail later with assorted exceptions, and nothing checks that tensor data lies
in the file or that tensors do not overlap; it also builds a numpy view per field part, which is slow
for a pocket-tts file. `scan_gguf(path)` reads the header with every count, length and offset checked
against the bytes that follow it and against fixed caps, decodes the metadata values, and raises
`ModelFileError` at the first inconsistency. Nothing is allocated in proportion to a count the file
claims, only to bytes it actually holds.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count;
kv_count x (string key, u32 value type, value); tensor_count x (string name, u32 n_dims,
n_dims x u64 ne, u32 ggml type, u64 offset); padding to `general.alignment` (32); tensor data.
A string is a u64 byte length and the bytes; an array a u32 item type, a u64 count and the items.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from pocket_ggml.errors import ModelFileError
from pocket_ggml.format.ggml_types import QUANT_SIZES, GGMLType, GGUFValueType, tensor_nbytes
from pocket_ggml.format.gguf_keys import Keys

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # same layout; gguf-py reads both
DEFAULT_ALIGNMENT = 32
GGML_TENSOR_ALIGNMENT = 32  # ggml's TENSOR_ALIGNMENT: where zero-copy weights may start
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME (64) minus the terminating NUL
MAX_KEY = 65535  # the GGUF spec's limit on key length
# Caps on what is read item by item (a pocket-tts model has ~100 keys, a few small arrays and some
# hundreds of tensors; the released english model has ~600 tensors).
MAX_KV = 4096
MAX_TENSORS = 8192
MAX_ARRAY_ITEMS = 1 << 16  # over all arrays together

_SCALAR_FORMATS: dict[int, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "B",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class KVInfo:
    """One metadata pair: its value type, for arrays the item type and count, and the decoded value
    (int, float, bool or str; a list of those for an array)."""

    key: str
    offset: int
    value_type: GGUFValueType
    item_type: GGUFValueType | None = None
    count: int | None = None
    value: int | float | bool | str | list | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]  # numpy order (outermost first): the reverse of GGUF's ne
    offset: int  # absolute, in the file
    nbytes: int


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    file_size: int
    alignment: int
    data_offset: int  # absolute start of the tensor data section
    kv: dict[str, KVInfo]
    tensors: list[TensorInfo]


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; every failure is a ModelFileError."""

    def __init__(self, buf, size: int, where: str) -> None:
        self.buf, self.size, self.where, self.pos = buf, size, where, 0

    def fail(self, msg: str) -> ModelFileError:
        return ModelFileError(f"{self.where}: {msg}")

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise self.fail(
                f"{what} at byte {self.pos} needs {n} bytes, the file has {max(self.size - self.pos, 0)} left "
                "(truncated or corrupt)"
            )

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize("<" + fmt)
        self.need(n, what)
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return self.unpack("I", what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", what)

    def raw_string(self, what: str, max_len: int | None = None) -> bytes:
        n = self.u64(f"length of {what}")
        if max_len is not None and n > max_len:
            raise self.fail(f"{what} at byte {self.pos - 8} is {n} bytes long, at most {max_len} allowed")
        self.need(n, what)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def text(self, what: str, max_len: int | None) -> str:
        data = self.raw_string(what, max_len)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {self.pos - len(data)} is not valid UTF-8") from None


def _value_type(raw: int, c: _Cursor, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise c.fail(f"{what} has unknown value type {raw}") from None


def scan_gguf(path: str | Path, where: str | None = None) -> GGUFHeader:
    """Walk the header of the GGUF at `path`, checking every count, length and offset."""
    path = Path(path)
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise ModelFileError(f"{where}: the file is empty")
            if size < 24:
                raise ModelFileError(f"{where}: {size} bytes is too short for a GGUF header (24 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _scan(_Cursor(buf, len(buf), where))  # the mapped length, should the file change
    except OSError as e:
        raise ModelFileError(f"{where}: cannot read the file ({e.strerror or e})") from None


def _scan(c: _Cursor) -> GGUFHeader:
    version, n_tensors, n_kv = _read_preamble(c)
    kv = _read_metadata(c, n_kv)
    alignment = _alignment(c, kv)
    infos = _read_tensor_infos(c, n_tensors)
    data_offset = -(-c.pos // alignment) * alignment
    if data_offset > c.size:
        raise c.fail(f"the tensor data section would start at byte {data_offset}, past the end ({c.size} bytes)")
    tensors = _place_tensors(c, infos, data_offset, alignment)
    return GGUFHeader(version, c.size, alignment, data_offset, kv, tensors)


def _read_preamble(c: _Cursor) -> tuple[int, int, int]:
    """Magic and version, then the tensor and metadata counts, each bounded by the bytes left."""
    magic = bytes(c.buf[0:4])
    if magic != GGUF_MAGIC:
        raise c.fail(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    c.pos = 4
    version = c.u32("version")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise c.fail("a big-endian GGUF file; this runtime reads little-endian files only")
        raise c.fail(f"GGUF version {version}; this runtime reads versions {', '.join(map(str, SUPPORTED_VERSIONS))}")
    n_tensors = c.u64("tensor count")
    n_kv = c.u64("metadata count")
    # Each pair takes at least 8 (key length) + 4 (type) + 1 (value) bytes; each tensor info
    # 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
    rest = c.size - c.pos
    if n_kv > MAX_KV or n_kv * 13 > rest:
        raise c.fail(f"{n_kv} metadata pairs claimed; at most {min(MAX_KV, rest // 13)} fit (corrupt header)")
    if n_tensors > MAX_TENSORS or n_tensors * 32 > rest:
        raise c.fail(f"{n_tensors} tensors claimed; at most {min(MAX_TENSORS, rest // 32)} fit (corrupt header)")
    return version, n_tensors, n_kv


def _read_metadata(c: _Cursor, n_kv: int) -> dict[str, KVInfo]:
    """The metadata pairs, decoded; array items count against MAX_ARRAY_ITEMS over all arrays."""
    kv: dict[str, KVInfo] = {}
    array_items = 0
    for i in range(n_kv):
        at = c.pos
        key = c.text(f"metadata key #{i}", MAX_KEY)
        if key in kv:
            raise c.fail(f"metadata key {key!r} appears twice")
        vtype = _value_type(c.u32(f"type of {key!r}"), c, repr(key))
        if vtype == GGUFValueType.STRING:
            kv[key] = KVInfo(key, at, vtype, value=c.text(f"value of {key!r}", None))
        elif vtype == GGUFValueType.ARRAY:
            kv[key] = _read_array(c, key, at, MAX_ARRAY_ITEMS - array_items)
            array_items += kv[key].count  # type: ignore[operator]
        else:
            kv[key] = KVInfo(key, at, vtype, value=_read_scalar(c, key, vtype))
    return kv


def _read_scalar(c: _Cursor, key: str, vtype: GGUFValueType) -> int | float | bool:
    value = c.unpack(_SCALAR_FORMATS[vtype], f"value of {key!r}")
    if vtype == GGUFValueType.BOOL:
        if value not in (0, 1):
            raise c.fail(f"metadata key {key!r}: boolean byte {value} is neither 0 nor 1")
        value = bool(value)
    return value


def _read_array(c: _Cursor, key: str, at: int, items_left: int) -> KVInfo:
    """An array value of at most `items_left` items (none nested)."""
    itype = _value_type(c.u32(f"item type of {key!r}"), c, f"array {key!r}")
    count = c.u64(f"item count of {key!r}")
    if itype == GGUFValueType.ARRAY:
        raise c.fail(f"metadata key {key!r} is a nested array (not used by pocket-tts files)")
    item_min = 8 if itype == GGUFValueType.STRING else struct.calcsize("<" + _SCALAR_FORMATS[itype])
    if count > items_left or count * item_min > c.size - c.pos:
        raise c.fail(
            f"array {key!r} claims {count} items; the file holds at most {(c.size - c.pos) // item_min} "
            f"(and metadata arrays at most {MAX_ARRAY_ITEMS} items in all)"
        )
    if itype == GGUFValueType.STRING:
        items: list = [c.text(f"item {j} of {key!r}", None) for j in range(count)]
    else:
        fmt = f"<{count}{_SCALAR_FORMATS[itype]}"
        c.need(count * item_min, f"items of {key!r}")
        items = list(struct.unpack_from(fmt, c.buf, c.pos))
        c.pos += count * item_min
        if itype == GGUFValueType.BOOL:
            if any(v not in (0, 1) for v in items):
                raise c.fail(f"array {key!r}: a boolean byte is neither 0 nor 1")
            items = [bool(v) for v in items]
    return KVInfo(key, at, GGUFValueType.ARRAY, itype, count, items)


def _alignment(c: _Cursor, kv: dict[str, KVInfo]) -> int:
    """`general.alignment` (a power of two), or the default."""
    align_kv = kv.get(Keys.ALIGNMENT)
    if align_kv is None:
        return DEFAULT_ALIGNMENT
    if align_kv.value_type != GGUFValueType.UINT32:
        raise c.fail(f"{Keys.ALIGNMENT} must be a UINT32")
    alignment = int(align_kv.value)  # type: ignore[arg-type]
    if alignment <= 0 or alignment & (alignment - 1):
        raise c.fail(f"{Keys.ALIGNMENT} {alignment} is not a power of two")
    return alignment


def _read_tensor_infos(c: _Cursor, n_tensors: int) -> list[tuple[str, GGMLType, tuple[int, ...], int, int]]:
    """(name, type, numpy-order shape, offset in the data section, byte size) of each tensor."""
    infos = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = c.text(f"name of tensor #{i}", MAX_TENSOR_NAME)
        if name in names:
            raise c.fail(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = c.u32(f"dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise c.fail(f"tensor {name!r} has {n_dims} dimensions; 1 to {MAX_DIMS} allowed")
        ne = [c.u64(f"dimension {d} of {name!r}") for d in range(n_dims)]
        raw_type = c.u32(f"type of {name!r}")
        try:
            ggml_type = GGMLType(raw_type)
            block = QUANT_SIZES[ggml_type][0]
        except (ValueError, KeyError):
            raise c.fail(f"tensor {name!r} has unknown ggml type {raw_type}") from None
        rel = c.u64(f"data offset of {name!r}")
        if any(d < 1 for d in ne):
            raise c.fail(f"tensor {name!r} has an empty dimension (ne {ne})")
        if ne[0] % block:
            raise c.fail(f"tensor {name!r}: rows of {ne[0]} are not whole {ggml_type.name} blocks of {block}")
        shape = tuple(reversed(ne))  # Python ints: no overflow, however large the claimed dimensions
        infos.append((name, ggml_type, shape, rel, tensor_nbytes(ggml_type, shape)))
    return infos


def _place_tensors(
    c: _Cursor, infos: list[tuple[str, GGMLType, tuple[int, ...], int, int]], data_offset: int, alignment: int
) -> list[TensorInfo]:
    """Each tensor's data aligned, within the file, and overlapping no other's."""
    tensors = []
    for name, ggml_type, shape, rel, nbytes in infos:
        if rel % alignment:
            raise c.fail(f"tensor {name!r}: data offset {rel} is not a multiple of the alignment {alignment}")
        start = data_offset + rel
        if start % GGML_TENSOR_ALIGNMENT:  # only bites when general.alignment < 32
            raise c.fail(f"tensor {name!r}: data at byte {start} is not {GGML_TENSOR_ALIGNMENT}-byte aligned")
        if nbytes > c.size - start:
            raise c.fail(
                f"tensor {name!r}: {nbytes} bytes at byte {start} run past the end of the file ({c.size} bytes; "
                "truncated or corrupt)"
            )
        tensors.append(TensorInfo(name, ggml_type, shape, start, nbytes))
    by_offset = sorted(tensors, key=lambda t: t.offset)
    for a, b in zip(by_offset, by_offset[1:]):
        if a.offset + a.nbytes > b.offset:
            raise c.fail(f"the data of tensors {a.name!r} and {b.name!r} overlap")
    return tensors
