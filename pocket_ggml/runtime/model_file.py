"""Opening a pocket-tts GGUF: memory-mapped, and checked against its own metadata before any use.

`ModelFile(path)` accepts a file only if every part of it is consistent, and raises `ModelFileError`
for anything else -- any file at all gives a valid model or that one exception, never another
exception type, a crash or an allocation beyond what the file holds. In order:

1. `scan_gguf` reads the header with every count, length and offset bounds-checked (magic, version,
   metadata pairs, array lengths, tensor infos, data offsets within the file, no overlapping data);
2. the metadata is read into a `PocketConfig` (`read_metadata`, which validates it), then checked for
   what the graphs and the runtime state assume beyond that: finite reals, sizes and counts within
   caps, the Mimi widths chaining from one stage to the next, bounded state for the context windows;
3. every tensor the config implies is present with the stored shape and a type the graphs accept,
   nothing unknown is there, stored voices fit the FlowLM cache, and the embedded tokenizer parses
   and has the model's vocabulary size.

Only then are tensors handed out (as read-only views of the mapped file, no copy). Loading parses
data only; nothing in the file is executed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pocket_ggml.errors import ModelFileError, PocketError
from pocket_ggml.format.config import MimiConfig, MimiTransformerConfig, PocketConfig, SEANetConfig
from pocket_ggml.format.ggml_types import NUMPY_TYPES, QUANT_SIZES, TENSOR_TYPES, GGMLType, GGUFValueType
from pocket_ggml.format.gguf_keys import (
    CONFIG_KEYS,
    TOKENIZER_KINDS,
    TOKENIZER_TENSOR,
    VOICE_NAME_RX,
    VOICE_TENSOR_PREFIX,
    VOICE_TENSOR_RX,
    WEIGHTS_KINDS,
    FileInfo,
    Keys,
    Kind,
)
from pocket_ggml.format.names import (
    Role,
    expected_tensors,
    from_gguf,
    from_released,
    stored_shape,
    to_released_layout,
)
from pocket_ggml.format.tokenizer import TokenizerRecord, check_tokenizer
from pocket_ggml.ggml_binding import dequantize
from pocket_ggml.runtime.ggml_backend import CpuBackend, TensorSpec, WeightStore
from pocket_ggml.runtime.gguf_header import GGUFHeader, TensorInfo, scan_gguf
from pocket_ggml.runtime.gguf_metadata import read_metadata

T = GGMLType
_WEIGHT_TYPES = set(TENSOR_TYPES.values())

# Caps on hyperparameters, far above any released config (english: d_model 1024, 6 layers, vocab
# 4001, 24 kHz, Mimi context 250). Sizes that appear in tensor shapes are also bounded by the file
# itself; the caps matter for what does not (contexts, rates, dilations) and keep every number that
# reaches ggml well inside its int32/int64 parameters.
MAX_SIZE = 1 << 20  # any width, vocabulary, rate, kernel or ratio
MAX_LAYERS = 1024  # transformer layers, flow-head blocks
MAX_RESIDUAL_LAYERS = 64
MAX_RATIOS = 16
MAX_CONTEXT = 1 << 16  # Mimi attention window (steps at 200 Hz)
MAX_STATE_BYTES = 1 << 30  # one Mimi transformer's ring KV cache
MAX_CONV_HISTORY = 1 << 16  # steps a dilated SEANet conv keeps
MAX_TEMPERATURE = 100.0
_MIMI_KV_ROWS = 16 * 12  # rows a Mimi cache holds beyond the context (stride x frames per call, generously)
# Marks a ModelFileError that wraps an exception no check anticipated (the corpus tests look for it).
UNANTICIPATED = "unanticipated"
MAX_MESSAGE = 800  # characters of a ModelFileError message (one line, for the CLIs)

_INT_TYPES = {
    GGUFValueType.UINT8,
    GGUFValueType.INT8,
    GGUFValueType.UINT16,
    GGUFValueType.INT16,
    GGUFValueType.UINT32,
    GGUFValueType.INT32,
    GGUFValueType.UINT64,
    GGUFValueType.INT64,
}
MAX_VOICES = 1024  # 2 tensors each
MAX_REPLACEMENTS = 4096
# read_metadata checks scalar types itself; these are the arrays it reads, with the item types it
# assumes and how many items may reach it (validate() multiplies the ratios: 65536 ratios of 2^63
# take a minute to multiply).
_ARRAYS = {
    **{key: (_INT_TYPES, MAX_RATIOS) for key in CONFIG_KEYS if key.kind is Kind.INT_ARRAY},
    Keys.REPLACE_FROM: ({GGUFValueType.STRING}, MAX_REPLACEMENTS),
    Keys.REPLACE_TO: ({GGUFValueType.STRING}, MAX_REPLACEMENTS),
    Keys.VOICE_NAMES: ({GGUFValueType.STRING}, MAX_VOICES),
}


def _one_line(msg: str) -> str:
    """The message with every non-printable character (newlines included) escaped, and cut in the
    middle if a name read from the file made it long."""
    msg = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
    if len(msg) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2 - 3
        msg = f"{msg[:half]} ... {msg[-half:]}"
    return msg


class ModelFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        where = str(self.path)
        try:
            if not self.path.is_file():
                raise ModelFileError(f"{where}: {'not a regular file' if self.path.exists() else 'no such file'}")
            self._open(where)
        except ModelFileError as e:
            msg = str(e)
            if msg.isprintable() and len(msg) <= MAX_MESSAGE:
                raise
            raise ModelFileError(_one_line(msg)) from None  # names read from the file may hold newlines
        except PocketError as e:
            raise ModelFileError(_one_line(f"{where}: {e}")) from None
        except Exception as e:  # a gap in the checks below: still a ModelFileError, but marked
            msg = f"{where}: {UNANTICIPATED} {type(e).__name__} while reading the model: {e}"
            raise ModelFileError(_one_line(msg)) from None

    def _open(self, where: str) -> None:
        self.header: GGUFHeader = scan_gguf(self.path, where)
        self._check_metadata_types(where)
        self.config, self.info, self.file_type = read_metadata(self.header.kv, where)
        check_config(self.config, where, n_tensors=len(self.header.tensors))
        self._check_info(where)
        self.tensors: dict[str, TensorInfo] = {t.name: t for t in self.header.tensors}
        # the mapped length is the scanned one: every tensor lies within it
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.header.file_size,))
        self._check_tensors(where)
        self._check_voices(where)
        self.tokenizer: TokenizerRecord = self._check_tokenizer(where)

    def _check_metadata_types(self, where: str) -> None:
        for key, (allowed, max_count) in _ARRAYS.items():
            kv = self.header.kv.get(key)
            if kv is None or kv.value_type != GGUFValueType.ARRAY:
                continue  # missing or not an array: read_metadata says so
            if kv.item_type not in allowed:
                raise ModelFileError(f"{where}: metadata array {key!r} holds {kv.item_type.name} items")  # type: ignore[union-attr]
            if kv.count > max_count:  # type: ignore[operator]
                raise ModelFileError(f"{where}: metadata array {key!r} has {kv.count} items, at most {max_count}")

    def _check_info(self, where: str) -> None:
        info: FileInfo = self.info
        if info.tokenizer_kind not in TOKENIZER_KINDS:
            raise ModelFileError(f"{where}: unknown tokenizer kind {info.tokenizer_kind!r}")
        if info.weights_kind not in WEIGHTS_KINDS:
            raise ModelFileError(f"{where}: unknown weights kind {info.weights_kind!r}")
        names = info.voice_names
        if len(set(names)) != len(names) or not all(isinstance(n, str) and VOICE_NAME_RX.fullmatch(n) for n in names):
            raise ModelFileError(f"{where}: stored voice names must be unique and match [A-Za-z0-9_-]{{1,40}}")
        count = self.header.kv.get(Keys.VOICE_COUNT)
        if count is not None and count.value != len(names):
            raise ModelFileError(f"{where}: {count.value} voices counted, {len(names)} named")

    def _check_tensors(self, where: str) -> None:
        expected = {
            from_released(n).gguf: stored_shape(s, from_released(n).rule.layout)  # type: ignore[union-attr]
            for n, s in expected_tensors(self.config, with_encoder=self.info.has_encoder).items()
        }
        for name, shape in expected.items():
            if not all(0 < d <= MAX_SIZE * MAX_SIZE for d in shape):
                raise ModelFileError(f"{where}: the metadata implies tensor {name} of shape {shape}")
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
            if t.ggml_type not in _WEIGHT_TYPES:
                raise ModelFileError(f"{where}: tensor {name} has unsupported type {t.ggml_type.name}")
            rule = from_gguf(name).rule  # type: ignore[union-attr]
            if (rule.role in (Role.VECTOR, Role.MIMI_UPSAMPLE)) and t.ggml_type != T.F32:
                raise ModelFileError(f"{where}: tensor {name} must be F32, is {t.ggml_type.name}")
            if shape[-1] % QUANT_SIZES[t.ggml_type][0]:
                raise ModelFileError(f"{where}: tensor {name} rows of {shape[-1]} do not fit {t.ggml_type.name}")
        tok = self.tensors.get(TOKENIZER_TENSOR)
        if tok is None or tok.ggml_type != T.I8 or len(tok.shape) != 1:
            raise ModelFileError(f"{where}: no tokenizer in the file")

    def _check_voices(self, where: str) -> None:
        """Stored voices (`voice.{name}.k` / `.v`): F32 FlowLM caches (layers, rows, kv_dim), K and V alike,
        exactly the voices the metadata names."""
        f = self.config.flow_lm
        shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, t in self.tensors.items():
            if not name.startswith(VOICE_TENSOR_PREFIX):
                continue
            m = VOICE_TENSOR_RX.fullmatch(name)
            if m is None or not VOICE_NAME_RX.fullmatch(m["voice"]):
                raise ModelFileError(f"{where}: unexpected tensor {name}")
            shape = self.stored_shape(name)
            if t.ggml_type != T.F32 or len(shape) != 3 or shape[0] != f.num_layers or shape[2] != f.kv_dim:
                raise ModelFileError(
                    f"{where}: stored voice tensor {name} is {t.ggml_type.name} {shape}, not F32 "
                    f"({f.num_layers}, rows, {f.kv_dim})"
                )
            shapes.setdefault(m["voice"], {})[m["kind"]] = shape
        for voice, kv in shapes.items():
            if set(kv) != {"k", "v"} or kv["k"] != kv["v"]:
                raise ModelFileError(f"{where}: stored voice {voice!r} needs K and V of one shape")
        if set(shapes) != set(self.info.voice_names):
            raise ModelFileError(
                f"{where}: the metadata names voices {sorted(self.info.voice_names)}, the file holds {sorted(shapes)}"
            )

    def _check_tokenizer(self, where: str) -> TokenizerRecord:
        try:
            return check_tokenizer(self.tokenizer_bytes(), self.info.tokenizer_kind, self.config.flow_lm.n_bins)
        except (PocketError, RecursionError) as e:  # RecursionError: JSON nested beyond the parser's depth
            raise ModelFileError(f"{where}: embedded tokenizer: {e or type(e).__name__}") from None

    def weight_names(self) -> list[str]:
        """GGUF names of the model's weights (not the tokenizer or stored voices), in file order."""
        return [n for n in self.tensors if n != TOKENIZER_TENSOR and not n.startswith(VOICE_TENSOR_PREFIX)]

    def load_weights(self, backend: CpuBackend) -> WeightStore:
        """Every weight as a ggml tensor pointing into the mapped file: no copy is made, and the pages
        are read from disk only when a graph first touches them."""
        specs = [
            TensorSpec(n, int(self.tensors[n].ggml_type), self.stored_shape(n), self.tensors[n].offset)
            for n in self.weight_names()
        ]
        try:
            return WeightStore.from_host_memory(backend, specs, self._map)
        except (ValueError, MemoryError) as e:  # the checks above make this unreachable
            raise ModelFileError(f"{self.path}: cannot map the weights ({e})") from None

    def stored_shape(self, gguf_name: str) -> tuple[int, ...]:
        return self.tensors[gguf_name].shape

    def tokenizer_bytes(self) -> bytes:
        return self.raw(TOKENIZER_TENSOR).tobytes()

    def raw(self, gguf_name: str) -> np.ndarray:
        """The stored values of a tensor (F32, F16, I8: in its stored shape) or its bytes (block types:
        one row of bytes per row), as a read-only view of the mapped file."""
        t = self.tensors[gguf_name]
        data = self._map[t.offset : t.offset + t.nbytes]
        dtype = NUMPY_TYPES.get(t.ggml_type)
        if dtype is not None:
            return data.view(dtype).reshape(t.shape)
        return data.reshape(*t.shape[:-1], -1)

    def tensor_type(self, gguf_name: str) -> GGMLType:
        return self.tensors[gguf_name].ggml_type

    def dequantized(self, gguf_name: str) -> np.ndarray:
        """A tensor as float32 in its stored shape."""
        t = self.tensors[gguf_name]
        if t.ggml_type in (T.F32, T.F16):
            return np.asarray(self.raw(gguf_name), dtype=np.float32)
        return dequantize(self.raw(gguf_name), int(t.ggml_type), t.shape)

    def released_state_dict(self) -> dict[str, np.ndarray]:
        """Every weight as float32 under its released name and shape (the reference's layout)."""
        out = {}
        for released, shape in expected_tensors(self.config, with_encoder=self.info.has_encoder).items():
            tn = from_released(released)
            out[released] = to_released_layout(self.dequantized(tn.gguf), tn.rule.layout, shape)  # type: ignore[union-attr]
        return out


def check_config(cfg: PocketConfig, where: str, n_tensors: int | None = None) -> None:
    """What the graphs and the runtime state assume of a config beyond `PocketConfig.validate()`.

    `n_tensors` (the file's tensor count) bounds the layer counts before the expected tensors are
    listed, so a claimed billion layers is rejected at once rather than enumerated."""

    def fail(msg: str) -> ModelFileError:
        return ModelFileError(f"{where}: metadata out of range: {msg}")

    _check_numbers(cfg, fail)
    _check_layer_counts(cfg, MAX_LAYERS if n_tensors is None else min(MAX_LAYERS, n_tensors), fail)
    m = cfg.mimi
    for side, sn, tr in (
        ("encoder", m.encoder_seanet, m.encoder_transformer),
        ("decoder", m.decoder_seanet, m.decoder_transformer),
    ):
        _check_mimi_side(side, sn, tr, m.channels, fail)
    _check_mimi_widths(m, fail)
    if not 0.0 <= cfg.generation.temperature <= MAX_TEMPERATURE:
        raise fail(f"default temperature {cfg.generation.temperature}")
    for a, _ in cfg.text.replace_characters:
        if len(a) != 1:
            raise fail(f"text replacement of {a!r}: only single characters are replaced")


_Fail = Callable[[str], ModelFileError]


def _check_numbers(cfg: PocketConfig, fail: _Fail) -> None:
    """Every integer of the config within 0..MAX_SIZE, every real finite."""
    f, m = cfg.flow_lm, cfg.mimi
    for section, obj in (
        ("flow_lm", f),
        ("mimi", m),
        ("mimi encoder seanet", m.encoder_seanet),
        ("mimi decoder seanet", m.decoder_seanet),
        ("mimi encoder transformer", m.encoder_transformer),
        ("mimi decoder transformer", m.decoder_transformer),
        ("generation", cfg.generation),
    ):
        for fld in dataclasses.fields(obj):
            v = getattr(obj, fld.name)
            values = v if isinstance(v, tuple) else (v,)
            for x in values:
                if isinstance(x, bool) or x is None or isinstance(x, str):
                    continue
                if isinstance(x, int) and not 0 <= x <= MAX_SIZE:
                    raise fail(f"{section}.{fld.name} = {v} (0 to {MAX_SIZE})")
                if isinstance(x, float) and not math.isfinite(x):
                    raise fail(f"{section}.{fld.name} = {v} is not finite")


def _check_layer_counts(cfg: PocketConfig, layer_cap: int, fail: _Fail) -> None:
    f, m = cfg.flow_lm, cfg.mimi
    for what, n in (
        ("flow_lm.num_layers", f.num_layers),
        ("flow_lm.flow_depth", f.flow_depth),
        ("mimi encoder transformer layers", m.encoder_transformer.num_layers),
        ("mimi decoder transformer layers", m.decoder_transformer.num_layers),
    ):
        if n > layer_cap:
            raise fail(f"{what} = {n}, the file has room for at most {layer_cap}")


def _check_mimi_side(side: str, sn: SEANetConfig, tr: MimiTransformerConfig, channels: int, fail: _Fail) -> None:
    """One side's SEANet and transformer: bounded state, and widths that chain."""
    if sn.n_residual_layers > MAX_RESIDUAL_LAYERS or len(sn.ratios) > MAX_RATIOS:
        raise fail(f"mimi {side} seanet: {sn.n_residual_layers} residual layers, {len(sn.ratios)} ratios")
    if sn.channels != channels:
        raise fail(f"mimi {side} seanet has {sn.channels} audio channels, mimi {channels}")
    dilation = sn.dilation_base ** max(sn.n_residual_layers - 1, 0)
    if (sn.residual_kernel_size - 1) * dilation >= MAX_CONV_HISTORY:
        raise fail(f"mimi {side} seanet: kernel {sn.residual_kernel_size} at dilation {dilation}")
    if sn.n_filters * 2 ** len(sn.ratios) > MAX_SIZE:
        raise fail(f"mimi {side} seanet: {sn.n_filters} filters doubled {len(sn.ratios)} times")
    # The transformer reads the SEANet's (or the upsample's) channels and hands back the same width.
    if tr.input_dimension != sn.dimension or tr.output_dimensions != (sn.dimension,):
        raise fail(
            f"mimi {side} transformer maps {tr.input_dimension} -> {tr.output_dimensions}, "
            f"the seanet needs {sn.dimension} -> ({sn.dimension},)"
        )
    if not tr.max_period > 0:
        raise fail(f"mimi {side} transformer max_period {tr.max_period}")
    if tr.context > MAX_CONTEXT:
        raise fail(f"mimi {side} transformer context {tr.context} (at most {MAX_CONTEXT})")
    kv_bytes = 2 * 4 * (tr.context + _MIMI_KV_ROWS) * tr.d_model * tr.num_layers
    if kv_bytes > MAX_STATE_BYTES:
        raise fail(f"mimi {side} transformer KV cache of {kv_bytes} bytes (at most {MAX_STATE_BYTES})")


def _check_mimi_widths(m: MimiConfig, fail: _Fail) -> None:
    """The quantizer and the upsample feed the decoder its width; the runtime needs an upsample."""
    dec = m.decoder_seanet.dimension
    if m.quantizer_output_dim != dec or (m.outer_dim or dec) != dec:
        raise fail(f"mimi quantizer output {m.quantizer_output_dim} / outer dim {m.outer_dim} != decoder width {dec}")
    if m.resample_stride < 2:
        raise fail(f"mimi resample stride {m.resample_stride}: this runtime needs an upsample (stride >= 2)")
    if m.sample_rate < 1:
        raise fail(f"mimi sample rate {m.sample_rate}")
