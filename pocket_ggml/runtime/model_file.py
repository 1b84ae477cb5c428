"""Opening a pocket-tts GGUF: memory-mapped, and checked against its own metadata before any use.

`ModelFile(path)` reads the metadata into a `PocketConfig`, then checks that every tensor the config
implies is present, with the stored shape and a type the graphs accept, and that nothing unknown is
there; only then are tensors handed out (as read-only views of the mapped file, no copy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, quants

from pocket_ggml.errors import ModelFileError
from pocket_ggml.quantize.gguf_format import TOKENIZER_TENSOR, VOICE_TENSOR_PREFIX, read_metadata
from pocket_ggml.quantize.names import (
    Role,
    expected_tensors,
    from_gguf,
    from_released,
    stored_shape,
    to_released_layout,
)
from pocket_ggml.quantize.policy import TENSOR_TYPES
from pocket_ggml.runtime.ggml_backend import CpuBackend, TensorSpec, WeightStore

T = GGMLQuantizationType
_WEIGHT_TYPES = set(TENSOR_TYPES.values())


class ModelFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise ModelFileError(f"{where}: no such file")
        try:
            self._reader = GGUFReader(self.path, "r")
        except Exception as e:  # gguf-py raises ValueError/IndexError/KeyError/... on damaged files
            raise ModelFileError(f"{where}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        self.config, self.info, self.file_type = read_metadata(self._reader.fields, where)
        self.tensors = {t.name: t for t in self._reader.tensors}
        self._check_tensors(where)

    def _check_tensors(self, where: str) -> None:
        expected = {
            from_released(n).gguf: stored_shape(s, from_released(n).rule.layout)  # type: ignore[union-attr]
            for n, s in expected_tensors(self.config, with_encoder=self.info.has_encoder).items()
        }
        names = set(self.tensors)
        missing = sorted(set(expected) - names)
        if missing:
            raise ModelFileError(f"{where}: {len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
        extra = sorted(
            n for n in names - set(expected) if n != TOKENIZER_TENSOR and not n.startswith(VOICE_TENSOR_PREFIX)
        )
        if extra:
            raise ModelFileError(f"{where}: unexpected tensors for this config (e.g. {', '.join(extra[:3])})")
        for name, shape in expected.items():
            t = self.tensors[name]
            got = self.stored_shape(name)
            if got != shape:
                raise ModelFileError(f"{where}: tensor {name} has shape {got}, the config implies {shape}")
            if t.tensor_type not in _WEIGHT_TYPES:
                raise ModelFileError(f"{where}: tensor {name} has unsupported type {t.tensor_type.name}")
            rule = from_gguf(name).rule  # type: ignore[union-attr]
            if (rule.role in (Role.VECTOR, Role.MIMI_UPSAMPLE)) and t.tensor_type != T.F32:
                raise ModelFileError(f"{where}: tensor {name} must be F32, is {t.tensor_type.name}")
            if shape[-1] % GGML_QUANT_SIZES[t.tensor_type][0]:
                raise ModelFileError(f"{where}: tensor {name} rows of {shape[-1]} do not fit {t.tensor_type.name}")
        tok = self.tensors.get(TOKENIZER_TENSOR)
        if tok is None or tok.tensor_type != T.I8 or len(tok.shape) != 1:
            raise ModelFileError(f"{where}: no tokenizer in the file")

    def weight_names(self) -> list[str]:
        """GGUF names of the model's weights (not the tokenizer or stored voices), in file order."""
        return [n for n in self.tensors if n != TOKENIZER_TENSOR and not n.startswith(VOICE_TENSOR_PREFIX)]

    def load_weights(self, backend: CpuBackend) -> WeightStore:
        """Every weight as a ggml tensor pointing into the mapped file: no copy is made, and the pages
        are read from disk only when a graph first touches them."""
        specs = [
            TensorSpec(n, int(self.tensors[n].tensor_type), self.stored_shape(n), int(self.tensors[n].data_offset))
            for n in self.weight_names()
        ]
        return WeightStore.from_host_memory(backend, specs, self._reader.data)

    def stored_shape(self, gguf_name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(self.tensors[gguf_name].shape.tolist()))

    def tokenizer_bytes(self) -> bytes:
        return self.tensors[TOKENIZER_TENSOR].data.tobytes()

    def raw(self, gguf_name: str) -> np.ndarray:
        """The stored bytes/values of a tensor (a read-only view of the mapped file)."""
        return self.tensors[gguf_name].data

    def tensor_type(self, gguf_name: str) -> GGMLQuantizationType:
        return self.tensors[gguf_name].tensor_type

    def dequantized(self, gguf_name: str) -> np.ndarray:
        """A tensor as float32 in its stored shape."""
        t = self.tensors[gguf_name]
        shape = self.stored_shape(gguf_name)
        if t.tensor_type in (T.F32, T.F16):
            return np.asarray(t.data, dtype=np.float32).reshape(shape)
        return quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)

    def released_state_dict(self) -> dict[str, np.ndarray]:
        """Every weight as float32 under its released name and shape (the reference's layout)."""
        out = {}
        for released, shape in expected_tensors(self.config, with_encoder=self.info.has_encoder).items():
            tn = from_released(released)
            out[released] = to_released_layout(self.dequantized(tn.gguf), tn.rule.layout, shape)  # type: ignore[union-attr]
        return out
