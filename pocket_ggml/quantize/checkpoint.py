"""Reading released Pocket TTS checkpoints (safetensors), checked against a config before use.

The `safetensors` package cannot hand BF16 to numpy (numpy has no bfloat16), and released files may
mix F32 and BF16 tensors, so the header is parsed here (the format is 8 bytes of little-endian
header length, a JSON header, then raw little-endian data) and tensors are memory-mapped lazily:
only one tensor at a time is ever converted to float32.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocket_ggml.errors import CheckpointError
from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.names import encoder_tensor_names, expected_tensors

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsCheckpoint:
    """A safetensors file opened read-only; `tensor(name)` returns float32 numpy."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{self.path}: not a safetensors file (too short)")
                (n,) = struct.unpack("<Q", head)
                if n <= 1 or n > min(_MAX_HEADER, size - 8):
                    raise CheckpointError(f"{self.path}: not a safetensors file (bad header length)")
                header = json.loads(fh.read(n).decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: not a safetensors file (header is not an object)")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        data_start, data_len = 8 + n, size - 8 - n
        self._entries: dict[str, _Entry] = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: malformed entry for tensor {name!r}") from None
            if dtype not in _DTYPES:
                raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
            count = int(np.prod(shape, dtype=np.int64))
            if not (0 <= begin <= end <= data_len) or end - begin != count * _DTYPES[dtype].itemsize:
                raise CheckpointError(f"{self.path}: tensor {name!r} lies outside the file or has a wrong size")
            self._entries[name] = _Entry(dtype, shape, data_start + begin, data_start + end)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > 0 else None

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def dtype(self, name: str) -> str:
        return self._entries[name].dtype

    def tensor(self, name: str) -> np.ndarray:
        e = self._entries[name]
        raw = np.frombuffer(
            self._map, dtype=_DTYPES[e.dtype], count=(e.end - e.begin) // _DTYPES[e.dtype].itemsize, offset=e.begin
        )
        if e.dtype == "BF16":  # bfloat16 is the top half of a float32
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32)
        return out.reshape(e.shape)

    def close(self) -> None:
        self._map = None

    def __enter__(self) -> SafetensorsCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_against_config(ckpt: SafetensorsCheckpoint, cfg: PocketConfig) -> bool:
    """Every tensor present with its shape and nothing extra. Returns whether the Mimi encoder
    (voice cloning) is in the file: released files come with it or without it as a whole."""
    names = set(ckpt.names())
    encoder = encoder_tensor_names(cfg)
    has_encoder = bool(names & encoder)
    expected = expected_tensors(cfg, with_encoder=has_encoder)
    missing = [n for n in expected if n not in names]
    extra = sorted(names - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} not in config {cfg.name!r} (e.g. {', '.join(extra[:3])})")
    misshaped = [f"{n} {ckpt.shape(n)} != {s}" for n, s in expected.items() if n in names and ckpt.shape(n) != s]
    if misshaped:
        problems.append(f"{len(misshaped)} misshaped (e.g. {'; '.join(misshaped[:3])})")
    if problems:
        raise CheckpointError(f"{ckpt.path}: does not match config {cfg.name!r}: " + "; ".join(problems))
    return has_encoder
