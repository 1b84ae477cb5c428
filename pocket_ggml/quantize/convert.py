"""Released checkpoint (or synthetic weights) -> one self-contained pocket-tts GGUF.

Everything is checked before the first byte is written (config, every tensor's presence and shape,
tokenizer vocabulary, destination); tensors are then converted one at a time (memory stays at about
one tensor), into a temporary file beside the destination that is renamed over it only when
complete, so an interrupted run leaves nothing at the destination and a previous file intact.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pocket_ggml.errors import OutputError
from pocket_ggml.files import atomic_write
from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.ggml_types import GGMLType, tensor_nbytes
from pocket_ggml.format.gguf_keys import ARCH, TOKENIZER_TENSOR, VOICE_NAME_RX, FileInfo, voice_tensor_name
from pocket_ggml.format.names import expected_tensors, from_released, stored_shape, to_stored_layout
from pocket_ggml.format.tokenizer import TokenizerRecord
from pocket_ggml.quantize.checkpoint import SafetensorsCheckpoint, check_against_config
from pocket_ggml.quantize.gguf_format import write_metadata
from pocket_ggml.quantize.policy import Mix, choose_type
from pocket_ggml.quantize.synthetic import synthetic_tensors

T = GGMLType
_LAYER_RX = re.compile(r"^lm\.blk\.(\d+)\.")


@dataclass
class TensorRecord:
    gguf_name: str
    released_name: str
    qtype: GGMLType
    shape: tuple[int, ...]  # as stored
    n_params: int
    n_bytes: int
    rel_rms_error: float | None = None


@dataclass
class ConversionResult:
    output: Path
    config: PocketConfig
    mix: str
    has_encoder: bool
    weights_kind: str
    tensors: list[TensorRecord] = field(default_factory=list)
    input_bytes: int = 0
    output_bytes: int = 0
    seconds: float = 0.0


ProgressFn = Callable[[str], None]


def _check_destination(output: Path) -> None:
    if output.is_dir():
        raise OutputError(f"destination {str(output)!r} is a directory")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"destination folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"destination folder {str(parent)!r} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise OutputError(f"destination {str(output)!r} is not writable")


def _encode(array: np.ndarray, qtype: GGMLType) -> np.ndarray:
    if qtype == T.F32:
        return np.ascontiguousarray(array, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(array, dtype=np.float16)
    from pocket_ggml.ggml_binding import quantize_rows

    return quantize_rows(np.ascontiguousarray(array.reshape(-1, array.shape[-1]), dtype=np.float32), qtype)


def rel_rms_error(original: np.ndarray, encoded: np.ndarray, qtype: GGMLType) -> float:
    if qtype in (T.F32, T.F16):
        decoded = encoded.astype(np.float32)
    else:
        from gguf import GGMLQuantizationType, quants

        decoded = quants.dequantize(encoded, GGMLQuantizationType(qtype))
    ref = np.linalg.norm(original.ravel())
    err = np.linalg.norm(decoded.ravel() - original.ravel())
    return float(err / ref) if ref > 0 else float(err)


def convert(
    cfg: PocketConfig,
    output: str | Path,
    mix: Mix,
    tokenizer: TokenizerRecord,
    *,
    checkpoint: SafetensorsCheckpoint | None = None,
    synthetic_seed: int | None = None,
    keep_encoder: bool = True,
    overrides: Iterable[tuple[re.Pattern[str], GGMLType]] = (),
    measure_error: bool = False,
    name: str | None = None,
    progress: ProgressFn | None = None,
    voices: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> ConversionResult:
    """Write `cfg`'s weights from `checkpoint` (or synthetic ones made with `synthetic_seed`), and
    the named voice states `voices` (FlowLM K and V caches, each (layers, rows, kv_dim) F32)."""
    voices = dict(voices or {})
    for vname, (k, v) in voices.items():
        if not VOICE_NAME_RX.fullmatch(vname) or k.shape != v.shape or k.ndim != 3:
            raise ValueError(f"bad voice {vname!r}: names are [A-Za-z0-9_-]{{1,40}}, K and V (layers, rows, kv_dim)")
    if (checkpoint is None) == (synthetic_seed is None):
        raise ValueError("give exactly one of checkpoint and synthetic_seed")
    t0 = time.perf_counter()
    output = Path(output)
    _check_destination(output)
    has_encoder = check_against_config(checkpoint, cfg) if checkpoint is not None else True
    with_encoder = has_encoder and keep_encoder
    shapes = expected_tensors(cfg, with_encoder=with_encoder)
    overrides = list(overrides)
    weights_kind = "synthetic" if checkpoint is None else "released"

    records: list[TensorRecord] = []
    for released, shape in shapes.items():
        tn = from_released(released)
        assert tn is not None, released  # expected_tensors only yields names of the table
        sshape = stored_shape(shape, tn.rule.layout)
        m = _LAYER_RX.match(tn.gguf)
        qtype = choose_type(
            mix, tn.gguf, tn.rule.role, sshape, int(m.group(1)) if m else None, cfg.flow_lm.num_layers, overrides
        )
        n = int(np.prod(sshape))
        records.append(TensorRecord(tn.gguf, released, qtype, sshape, n, tensor_nbytes(qtype, sshape)))

    info = FileInfo(
        name=name or f"pocket-tts {cfg.name} {mix.name}" + (" (synthetic weights)" if checkpoint is None else ""),
        quant_mix=mix.name,
        weights_kind=weights_kind,
        synthetic_seed=synthetic_seed,
        has_encoder=with_encoder,
        tokenizer_kind=tokenizer.kind,
        voice_names=tuple(voices),
    )
    from gguf import GGMLQuantizationType, GGUFWriter  # only here: loading a model never imports gguf-py

    writer = GGUFWriter(path=None, arch=ARCH)
    write_metadata(writer, cfg, info, int(mix.file_type))
    for r in records:
        writer.add_tensor_info(
            r.gguf_name, r.shape, np.dtype(np.float32), r.n_bytes, raw_dtype=GGMLQuantizationType(r.qtype)
        )
    writer.add_tensor_info(TOKENIZER_TENSOR, (len(tokenizer.data),), np.dtype(np.int8), len(tokenizer.data))
    for vname, (k, v) in voices.items():
        for kind, arr in (("k", k), ("v", v)):
            writer.add_tensor_info(voice_tensor_name(vname, kind), arr.shape, np.dtype(np.float32), arr.size * 4)

    source = (
        ((n, checkpoint.tensor(n)) for n in shapes)
        if checkpoint is not None
        else synthetic_tensors(cfg, synthetic_seed, with_encoder=with_encoder)  # type: ignore[arg-type]
    )
    with atomic_write(output) as tmp:
        try:
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for rec, (released, array) in zip(records, source, strict=True):
                assert rec.released_name == released
                tn = from_released(released)
                stored = to_stored_layout(array, tn.rule.layout).reshape(rec.shape)
                encoded = _encode(stored, rec.qtype)
                if measure_error:
                    rec.rel_rms_error = rel_rms_error(stored, encoded, rec.qtype)
                writer.write_tensor_data(encoded)
                if progress:
                    progress(rec.gguf_name)
            writer.write_tensor_data(np.frombuffer(tokenizer.data, dtype=np.int8))
            for k, v in voices.values():
                writer.write_tensor_data(np.ascontiguousarray(k, dtype=np.float32))
                writer.write_tensor_data(np.ascontiguousarray(v, dtype=np.float32))
            writer.flush()
            writer.close()
        except BaseException:
            writer.close()
            raise
    result = ConversionResult(output, cfg, mix.name, with_encoder, weights_kind, records)
    result.input_bytes = (
        checkpoint.path.stat().st_size if checkpoint is not None else 4 * sum(r.n_params for r in records)
    )
    result.output_bytes = output.stat().st_size
    result.seconds = time.perf_counter() - t0
    return result
