"""The pocket-tts GGUF format: its metadata keys (one table for the writer and the reader), and the
names of the tensors it holds beyond the weights.

Conventions follow llama.cpp: `general.architecture`, `general.name`, `general.file_type`, then
`pocket-tts.*` keys for every hyperparameter. Real numbers are FLOAT64 so that the config read back
is exactly the config written (0.3 as float32 is 0.30000001).

Every config field is stored under one `ConfigKey` of `CONFIG_KEYS`, which says where the value lives
in a `PocketConfig` and how it is stored; `quantize.gguf_format.write_metadata` writes the table in
its order and `runtime.gguf_metadata.read_metadata` reads it back, so a new hyperparameter is one
row here (a new `Keys` member, or a field in `SEANET_FIELDS` / `MIMI_TRANSFORMER_FIELDS`).

Non-weight payloads are tensors, so they are memory-mapped rather than parsed element by element:
- `tokenizer.data` (I8): the tokenizer file's bytes (SentencePiece `.model`, or `tokenizer.json`),
  its kind in `pocket-tts.tokenizer.kind`;
- `voice.{name}.k` / `.v`: named voice states (`pocket-tts.voices.names` lists them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, final

from pocket_ggml.format.config import PocketConfig

ARCH = "pocket-tts"
FORMAT_VERSION = 1
QUANTIZATION_VERSION = 2  # ggml's block layouts (llama.cpp's GGML_QNT_VERSION)
TOKENIZER_TENSOR = "tokenizer.data"
TOKENIZER_KINDS = ("sentencepiece", "tokenizers")
WEIGHTS_KINDS = ("released", "synthetic")

VOICE_TENSOR_PREFIX = "voice."
VOICE_NAME_RX = re.compile(r"[A-Za-z0-9_-]{1,40}")
VOICE_TENSOR_RX = re.compile(re.escape(VOICE_TENSOR_PREFIX) + r"(?P<voice>.*)\.(?P<kind>[kv])")


def voice_tensor_name(voice: str, kind: str) -> str:
    """`voice.{name}.k` / `.v`: a stored voice state's FlowLM K / V cache, (layers, rows, kv_dim) F32."""
    return f"{VOICE_TENSOR_PREFIX}{voice}.{kind}"


class Kind(Enum):
    """How a config value is stored."""

    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT64 = "float64"
    BOOL = "bool"
    STRING = "string"
    INT_ARRAY = "array of integers"
    REPLACEMENTS = "character replacements"  # two string arrays: this key (from) and Keys.REPLACE_TO


@final
class ConfigKey(str):
    """A metadata key (the string itself) that stores the config field at dotted path `field`.

    `absent` is the number stored for a field that is None: 0 for optional widths, -1 for
    `frames_after_eos` (where any negative number reads as None)."""

    field: str
    kind: Kind
    absent: int | None

    def __new__(cls, key: str, field: str, kind: Kind, absent: int | None = None) -> ConfigKey:
        self = super().__new__(cls, key)
        self.field, self.kind, self.absent = field, kind, absent
        return self

    def stored(self, cfg: PocketConfig) -> Any:
        """The value written for `cfg`."""
        value: Any = cfg
        for part in self.field.split("."):
            value = getattr(value, part)
        return self.absent if value is None else value

    def loaded(self, value: Any) -> Any:
        """The config value of a stored `value` (already of the kind's Python type)."""
        if self.absent is not None and (value < 0 if self.absent < 0 else value == self.absent):
            return None
        if self.kind is Kind.INT_ARRAY:
            return tuple(int(x) for x in value)
        return value


def _lm(key: str, field: str = "", kind: Kind = Kind.UINT32, absent: int | None = None) -> ConfigKey:
    """`pocket-tts.{key}`, storing the config field `field` (by default the one at the key's own path)."""
    return ConfigKey(f"{ARCH}.{key}", field or key, kind, absent)


class Keys:
    """Every metadata key a pocket-tts GGUF holds; the `ConfigKey` members in the order they are written."""

    ARCHITECTURE = "general.architecture"
    NAME = "general.name"
    FILE_TYPE = "general.file_type"
    QUANT_VERSION = "general.quantization_version"
    ALIGNMENT = "general.alignment"
    FORMAT_VERSION = f"{ARCH}.format_version"
    CONFIG_NAME = f"{ARCH}.config_name"
    QUANT_MIX = f"{ARCH}.quant_mix"
    WEIGHTS_KIND = f"{ARCH}.weights_kind"  # one of WEIGHTS_KINDS
    SYNTHETIC_SEED = f"{ARCH}.synthetic_seed"
    HAS_ENCODER = f"{ARCH}.has_encoder"
    TOKENIZER_KIND = f"{ARCH}.tokenizer.kind"
    VOICE_NAMES = f"{ARCH}.voices.names"
    VOICE_COUNT = f"{ARCH}.voices.count"
    # FlowLM, the flow head, Mimi's own sizes (its SEANets and transformers: `mimi_side_keys`)
    LM_D_MODEL = _lm("flow_lm.embedding_length", "flow_lm.d_model")
    LM_HEADS = _lm("flow_lm.attention.head_count", "flow_lm.num_heads")
    LM_KV_HEADS = _lm("flow_lm.attention.head_count_kv", "flow_lm.num_kv_heads")
    LM_ATTN_DIM = _lm("flow_lm.attention.width", "flow_lm.attn_dim")
    LM_LAYERS = _lm("flow_lm.block_count", "flow_lm.num_layers")
    LM_FFN = _lm("flow_lm.feed_forward_length", "flow_lm.dim_feedforward")
    LM_N_BINS = _lm("flow_lm.text.n_bins", "flow_lm.n_bins")
    LM_TEXT_DIM = _lm("flow_lm.text.dim", "flow_lm.text_dim")
    LM_TEXT_RANK = _lm("flow_lm.text.rank", "flow_lm.text_rank", absent=0)  # 0: full-width table
    LM_Z_DIM = _lm("flow_lm.z_dim", absent=0)  # 0: no z_proj
    FLOW_DIM = _lm("flow.dim", "flow_lm.flow_dim")
    FLOW_DEPTH = _lm("flow.depth", "flow_lm.flow_depth")
    MIMI_SAMPLE_RATE = _lm("mimi.sample_rate")
    MIMI_CHANNELS = _lm("mimi.channels")
    MIMI_LATENT_DIM = _lm("mimi.latent_dim")
    MIMI_QUANT_OUT_DIM = _lm("mimi.quantizer_output_dim")
    MIMI_INNER_DIM = _lm("mimi.inner_dim", absent=0)  # 0: not set
    MIMI_OUTER_DIM = _lm("mimi.outer_dim", absent=0)  # 0: not set
    LM_ROPE_PERIOD = _lm("flow_lm.rope.max_period", "flow_lm.max_period", Kind.FLOAT64)
    LM_BOS_BEFORE_VOICE = _lm("flow_lm.insert_bos_before_voice", kind=Kind.BOOL)
    FLOW_TYPE = _lm("flow.type", "flow_lm.flow_type", Kind.STRING)
    MIMI_FRAME_RATE = _lm("mimi.frame_rate", kind=Kind.FLOAT64)
    # generation defaults and text rules
    TEMPERATURE = _lm("generation.temperature", kind=Kind.FLOAT64)
    EOS_THRESHOLD = _lm("generation.eos_threshold", kind=Kind.FLOAT64)
    FRAMES_AFTER_EOS = _lm("generation.frames_after_eos", kind=Kind.INT32, absent=-1)
    REPLACE_FROM = _lm("text.replace_from", "text.replace_characters", Kind.REPLACEMENTS)
    REPLACE_TO = f"{ARCH}.text.replace_to"
    PAD_SHORT = _lm("text.pad_with_spaces_for_short_inputs", kind=Kind.BOOL)
    REMOVE_SEMICOLONS = _lm("text.remove_semicolons", kind=Kind.BOOL)
    TERMINAL_PUNCTUATION = _lm("text.append_terminal_punctuation", kind=Kind.BOOL)
    CAPITALIZE = _lm("text.capitalize_first_letter", kind=Kind.BOOL)


MIMI_SIDES = ("encoder", "decoder")
# (field, kind) of each SEANet and each Mimi transformer, stored once per side
SEANET_FIELDS: tuple[tuple[str, Kind], ...] = (
    *((f, Kind.UINT32) for f in ("dimension", "channels", "n_filters", "n_residual_layers", "kernel_size")),
    *((f, Kind.UINT32) for f in ("residual_kernel_size", "last_kernel_size", "dilation_base", "compress")),
    ("ratios", Kind.INT_ARRAY),
    ("pad_mode", Kind.STRING),
)
MIMI_TRANSFORMER_FIELDS: tuple[tuple[str, Kind], ...] = (
    *((f, Kind.UINT32) for f in ("d_model", "input_dimension", "num_heads", "num_layers", "context")),
    ("dim_feedforward", Kind.UINT32),
    ("output_dimensions", Kind.INT_ARRAY),
    ("layer_scale", Kind.FLOAT64),
    ("max_period", Kind.FLOAT64),
)


def mimi_side_keys(side: str) -> tuple[ConfigKey, ...]:
    """The keys of one side's SEANet (`pocket-tts.mimi.{side}.seanet.*`) and transformer
    (`pocket-tts.mimi.{side}.transformer.*`)."""
    return (
        *(_lm(f"mimi.{side}.seanet.{f}", f"mimi.{side}_seanet.{f}", kind) for f, kind in SEANET_FIELDS),
        *(
            _lm(f"mimi.{side}.transformer.{f}", f"mimi.{side}_transformer.{f}", kind)
            for f, kind in MIMI_TRANSFORMER_FIELDS
        ),
    )


def _config_keys() -> tuple[ConfigKey, ...]:
    members = [v for v in vars(Keys).values() if isinstance(v, ConfigKey)]
    model = [k for k in members if k.field.startswith(("flow_lm.", "mimi."))]
    rest = [k for k in members if k not in model]
    return (*model, *(k for side in MIMI_SIDES for k in mimi_side_keys(side)), *rest)


# every config field's key, in the order they are written
CONFIG_KEYS: tuple[ConfigKey, ...] = _config_keys()


def config_key(field: str) -> ConfigKey:
    """The key of the config field at dotted path `field` (e.g. "mimi.decoder_seanet.ratios")."""
    for k in CONFIG_KEYS:
        if k.field == field:
            return k
    raise KeyError(field)


@dataclass(frozen=True)
class FileInfo:
    """What a GGUF says about itself beyond the hyperparameters."""

    name: str
    quant_mix: str
    weights_kind: str  # one of WEIGHTS_KINDS
    synthetic_seed: int | None
    has_encoder: bool
    tokenizer_kind: str  # one of TOKENIZER_KINDS
    voice_names: tuple[str, ...]
