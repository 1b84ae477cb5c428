"""The pocket-tts GGUF format: metadata keys, and the config <-> metadata mapping both ways.

Conventions follow llama.cpp: `general.architecture`, `general.name`, `general.file_type`, then
`pocket-tts.*` keys for every hyperparameter. Keys are constants here and are written and read only
through `write_metadata` / `read_metadata`. Real numbers are FLOAT64 so that the config read back is
exactly the config written (0.3 as float32 is 0.30000001).

Non-weight payloads are tensors, so they are memory-mapped rather than parsed element by element:
- `tokenizer.data` (I8): the tokenizer file's bytes (SentencePiece `.model`, or `tokenizer.json`),
  its kind in `pocket-tts.tokenizer.kind`;
- `voice.{name}.*`: named voice states (`pocket-tts.voices.names` lists them; filled by #4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pocket_ggml.errors import ModelFileError
from pocket_ggml.format.config import (
    FlowLMConfig,
    GenerationDefaults,
    MimiConfig,
    MimiTransformerConfig,
    PocketConfig,
    SEANetConfig,
    TextRules,
)

if TYPE_CHECKING:  # gguf-py is imported only where a file is written (see ggml_types)
    from gguf import GGUFWriter

ARCH = "pocket-tts"
FORMAT_VERSION = 1
TOKENIZER_TENSOR = "tokenizer.data"
VOICE_TENSOR_PREFIX = "voice."
VOICE_NAME_RX = re.compile(r"[A-Za-z0-9_-]{1,40}")


def voice_tensor_name(voice: str, kind: str) -> str:
    """`voice.{name}.k` / `.v`: a stored voice state's FlowLM K / V cache, (layers, rows, kv_dim) F32."""
    return f"{VOICE_TENSOR_PREFIX}{voice}.{kind}"


class Keys:
    ARCHITECTURE = "general.architecture"
    NAME = "general.name"
    FILE_TYPE = "general.file_type"
    QUANT_VERSION = "general.quantization_version"
    FORMAT_VERSION = f"{ARCH}.format_version"
    CONFIG_NAME = f"{ARCH}.config_name"
    QUANT_MIX = f"{ARCH}.quant_mix"
    WEIGHTS_KIND = f"{ARCH}.weights_kind"  # "released" or "synthetic"
    SYNTHETIC_SEED = f"{ARCH}.synthetic_seed"
    HAS_ENCODER = f"{ARCH}.has_encoder"
    TOKENIZER_KIND = f"{ARCH}.tokenizer.kind"
    VOICE_NAMES = f"{ARCH}.voices.names"
    VOICE_COUNT = f"{ARCH}.voices.count"
    # FlowLM
    LM_D_MODEL = f"{ARCH}.flow_lm.embedding_length"
    LM_HEADS = f"{ARCH}.flow_lm.attention.head_count"
    LM_KV_HEADS = f"{ARCH}.flow_lm.attention.head_count_kv"
    LM_ATTN_DIM = f"{ARCH}.flow_lm.attention.width"
    LM_LAYERS = f"{ARCH}.flow_lm.block_count"
    LM_FFN = f"{ARCH}.flow_lm.feed_forward_length"
    LM_ROPE_PERIOD = f"{ARCH}.flow_lm.rope.max_period"
    LM_N_BINS = f"{ARCH}.flow_lm.text.n_bins"
    LM_TEXT_DIM = f"{ARCH}.flow_lm.text.dim"
    LM_TEXT_RANK = f"{ARCH}.flow_lm.text.rank"  # 0: full-width table
    LM_Z_DIM = f"{ARCH}.flow_lm.z_dim"  # 0: no z_proj
    LM_BOS_BEFORE_VOICE = f"{ARCH}.flow_lm.insert_bos_before_voice"
    FLOW_TYPE = f"{ARCH}.flow.type"
    FLOW_DIM = f"{ARCH}.flow.dim"
    FLOW_DEPTH = f"{ARCH}.flow.depth"
    # Mimi
    MIMI_SAMPLE_RATE = f"{ARCH}.mimi.sample_rate"
    MIMI_CHANNELS = f"{ARCH}.mimi.channels"
    MIMI_FRAME_RATE = f"{ARCH}.mimi.frame_rate"
    MIMI_LATENT_DIM = f"{ARCH}.mimi.latent_dim"
    MIMI_QUANT_OUT_DIM = f"{ARCH}.mimi.quantizer_output_dim"
    MIMI_INNER_DIM = f"{ARCH}.mimi.inner_dim"  # 0: not set
    MIMI_OUTER_DIM = f"{ARCH}.mimi.outer_dim"  # 0: not set
    # generation defaults and text rules
    TEMPERATURE = f"{ARCH}.generation.temperature"
    EOS_THRESHOLD = f"{ARCH}.generation.eos_threshold"
    FRAMES_AFTER_EOS = f"{ARCH}.generation.frames_after_eos"  # -1: derived from the text
    REPLACE_FROM = f"{ARCH}.text.replace_from"
    REPLACE_TO = f"{ARCH}.text.replace_to"
    PAD_SHORT = f"{ARCH}.text.pad_with_spaces_for_short_inputs"
    REMOVE_SEMICOLONS = f"{ARCH}.text.remove_semicolons"
    TERMINAL_PUNCTUATION = f"{ARCH}.text.append_terminal_punctuation"
    CAPITALIZE = f"{ARCH}.text.capitalize_first_letter"


def _seanet_key(side: str, field: str) -> str:
    return f"{ARCH}.mimi.{side}.seanet.{field}"


def _mimi_tr_key(side: str, field: str) -> str:
    return f"{ARCH}.mimi.{side}.transformer.{field}"


_SEANET_INT_FIELDS = (
    "dimension",
    "channels",
    "n_filters",
    "n_residual_layers",
    "kernel_size",
    "residual_kernel_size",
    "last_kernel_size",
    "dilation_base",
    "compress",
)
_MIMI_TR_INT_FIELDS = ("d_model", "input_dimension", "num_heads", "num_layers", "context", "dim_feedforward")


@dataclass(frozen=True)
class FileInfo:
    """What a GGUF says about itself beyond the hyperparameters."""

    name: str
    quant_mix: str
    weights_kind: str  # "released" or "synthetic"
    synthetic_seed: int | None
    has_encoder: bool
    tokenizer_kind: str
    voice_names: tuple[str, ...]


def write_metadata(w: GGUFWriter, cfg: PocketConfig, info: FileInfo, file_type: int) -> None:
    f, m, t, g = cfg.flow_lm, cfg.mimi, cfg.text, cfg.generation
    w.add_name(info.name)
    w.add_file_type(file_type)
    w.add_quantization_version(2)
    w.add_uint32(Keys.FORMAT_VERSION, FORMAT_VERSION)
    w.add_string(Keys.CONFIG_NAME, cfg.name)
    w.add_string(Keys.QUANT_MIX, info.quant_mix)
    w.add_string(Keys.WEIGHTS_KIND, info.weights_kind)
    if info.synthetic_seed is not None:
        w.add_int64(Keys.SYNTHETIC_SEED, info.synthetic_seed)
    w.add_bool(Keys.HAS_ENCODER, info.has_encoder)
    w.add_string(Keys.TOKENIZER_KIND, info.tokenizer_kind)
    w.add_uint32(Keys.VOICE_COUNT, len(info.voice_names))
    if info.voice_names:
        w.add_array(Keys.VOICE_NAMES, list(info.voice_names))

    for key, value in (
        (Keys.LM_D_MODEL, f.d_model),
        (Keys.LM_HEADS, f.num_heads),
        (Keys.LM_KV_HEADS, f.num_kv_heads),
        (Keys.LM_ATTN_DIM, f.attn_dim),
        (Keys.LM_LAYERS, f.num_layers),
        (Keys.LM_FFN, f.dim_feedforward),
        (Keys.LM_N_BINS, f.n_bins),
        (Keys.LM_TEXT_DIM, f.text_dim),
        (Keys.LM_TEXT_RANK, f.text_rank or 0),
        (Keys.LM_Z_DIM, f.z_dim or 0),
        (Keys.FLOW_DIM, f.flow_dim),
        (Keys.FLOW_DEPTH, f.flow_depth),
        (Keys.MIMI_SAMPLE_RATE, m.sample_rate),
        (Keys.MIMI_CHANNELS, m.channels),
        (Keys.MIMI_LATENT_DIM, m.latent_dim),
        (Keys.MIMI_QUANT_OUT_DIM, m.quantizer_output_dim),
        (Keys.MIMI_INNER_DIM, m.inner_dim or 0),
        (Keys.MIMI_OUTER_DIM, m.outer_dim or 0),
    ):
        w.add_uint32(key, value)
    w.add_float64(Keys.LM_ROPE_PERIOD, f.max_period)
    w.add_bool(Keys.LM_BOS_BEFORE_VOICE, f.insert_bos_before_voice)
    w.add_string(Keys.FLOW_TYPE, f.flow_type)
    w.add_float64(Keys.MIMI_FRAME_RATE, m.frame_rate)
    for side, sn, tr in (
        ("encoder", m.encoder_seanet, m.encoder_transformer),
        ("decoder", m.decoder_seanet, m.decoder_transformer),
    ):
        for field in _SEANET_INT_FIELDS:
            w.add_uint32(_seanet_key(side, field), getattr(sn, field))
        w.add_array(_seanet_key(side, "ratios"), list(sn.ratios))
        w.add_string(_seanet_key(side, "pad_mode"), sn.pad_mode)
        for field in _MIMI_TR_INT_FIELDS:
            w.add_uint32(_mimi_tr_key(side, field), getattr(tr, field))
        w.add_array(_mimi_tr_key(side, "output_dimensions"), list(tr.output_dimensions))
        w.add_float64(_mimi_tr_key(side, "layer_scale"), tr.layer_scale)
        w.add_float64(_mimi_tr_key(side, "max_period"), tr.max_period)

    w.add_float64(Keys.TEMPERATURE, g.temperature)
    w.add_float64(Keys.EOS_THRESHOLD, g.eos_threshold)
    w.add_int32(Keys.FRAMES_AFTER_EOS, -1 if g.frames_after_eos is None else g.frames_after_eos)
    if t.replace_characters:
        w.add_array(Keys.REPLACE_FROM, [a for a, _ in t.replace_characters])
        # gguf-py cannot write an empty string inside an array; a deletion is stored as "\0"
        w.add_array(Keys.REPLACE_TO, [b or "\0" for _, b in t.replace_characters])
    w.add_bool(Keys.PAD_SHORT, t.pad_with_spaces_for_short_inputs)
    w.add_bool(Keys.REMOVE_SEMICOLONS, t.remove_semicolons)
    w.add_bool(Keys.TERMINAL_PUNCTUATION, t.append_terminal_punctuation)
    w.add_bool(Keys.CAPITALIZE, t.capitalize_first_letter)


class _Fields:
    """Typed access to metadata fields (anything with `.contents()`: gguf-py's ReaderField, the runtime's
    KVInfo) with one clear error for anything missing or mistyped."""

    def __init__(self, fields: dict[str, Any], where: str):
        self.fields, self.where = fields, where

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        field = self.fields.get(key)
        if field is None:
            if default is ...:
                raise ModelFileError(f"{self.where}: metadata key {key!r} is missing")
            return default
        try:
            value = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{self.where}: metadata key {key!r} is unreadable ({e})") from None
        if kind is list:
            if not isinstance(value, list):
                raise ModelFileError(f"{self.where}: metadata key {key!r} should be an array")
            return value
        if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if kind is float and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            return float(value)
        if kind is bool and isinstance(value, (bool, np.bool_)):
            return bool(value)
        if kind is str and isinstance(value, str):
            return value
        raise ModelFileError(f"{self.where}: metadata key {key!r} has the wrong type ({type(value).__name__})")


def read_metadata(fields: dict[str, Any], where: str) -> tuple[PocketConfig, FileInfo, int]:
    """Config, file info and file_type from a GGUF's metadata fields; the config is validated."""
    r = _Fields(fields, where)
    arch = r.get(Keys.ARCHITECTURE, str)
    if arch != ARCH:
        raise ModelFileError(f"{where}: architecture is {arch!r}, not {ARCH!r}")
    version = r.get(Keys.FORMAT_VERSION, int)
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{where}: pocket-tts GGUF format version {version}, this runtime reads {FORMAT_VERSION}")

    def seanet(side: str) -> SEANetConfig:
        ints = {fld: r.get(_seanet_key(side, fld), int) for fld in _SEANET_INT_FIELDS}
        ratios = tuple(int(x) for x in r.get(_seanet_key(side, "ratios"), list))
        return SEANetConfig(**ints, ratios=ratios, pad_mode=r.get(_seanet_key(side, "pad_mode"), str))

    def mimi_tr(side: str) -> MimiTransformerConfig:
        ints = {fld: r.get(_mimi_tr_key(side, fld), int) for fld in _MIMI_TR_INT_FIELDS}
        return MimiTransformerConfig(
            **ints,
            output_dimensions=tuple(int(x) for x in r.get(_mimi_tr_key(side, "output_dimensions"), list)),
            layer_scale=r.get(_mimi_tr_key(side, "layer_scale"), float),
            max_period=r.get(_mimi_tr_key(side, "max_period"), float),
        )

    tok_kind = r.get(Keys.TOKENIZER_KIND, str)
    flow_lm = FlowLMConfig(
        d_model=r.get(Keys.LM_D_MODEL, int),
        num_heads=r.get(Keys.LM_HEADS, int),
        num_kv_heads=r.get(Keys.LM_KV_HEADS, int),
        attn_dim=r.get(Keys.LM_ATTN_DIM, int),
        num_layers=r.get(Keys.LM_LAYERS, int),
        dim_feedforward=r.get(Keys.LM_FFN, int),
        max_period=r.get(Keys.LM_ROPE_PERIOD, float),
        n_bins=r.get(Keys.LM_N_BINS, int),
        text_dim=r.get(Keys.LM_TEXT_DIM, int),
        text_rank=r.get(Keys.LM_TEXT_RANK, int) or None,
        z_dim=r.get(Keys.LM_Z_DIM, int) or None,
        flow_type=r.get(Keys.FLOW_TYPE, str),
        flow_dim=r.get(Keys.FLOW_DIM, int),
        flow_depth=r.get(Keys.FLOW_DEPTH, int),
        insert_bos_before_voice=r.get(Keys.LM_BOS_BEFORE_VOICE, bool),
    )
    mimi = MimiConfig(
        sample_rate=r.get(Keys.MIMI_SAMPLE_RATE, int),
        channels=r.get(Keys.MIMI_CHANNELS, int),
        frame_rate=r.get(Keys.MIMI_FRAME_RATE, float),
        encoder_seanet=seanet("encoder"),
        encoder_transformer=mimi_tr("encoder"),
        decoder_seanet=seanet("decoder"),
        decoder_transformer=mimi_tr("decoder"),
        latent_dim=r.get(Keys.MIMI_LATENT_DIM, int),
        quantizer_output_dim=r.get(Keys.MIMI_QUANT_OUT_DIM, int),
        inner_dim=r.get(Keys.MIMI_INNER_DIM, int) or None,
        outer_dim=r.get(Keys.MIMI_OUTER_DIM, int) or None,
    )
    rep_from = r.get(Keys.REPLACE_FROM, list, [])
    rep_to = [s.replace("\0", "") for s in r.get(Keys.REPLACE_TO, list, [])]
    if len(rep_from) != len(rep_to):
        raise ModelFileError(f"{where}: character replacement lists differ in length")
    text = TextRules(
        replace_characters=tuple(zip(rep_from, rep_to)),
        pad_with_spaces_for_short_inputs=r.get(Keys.PAD_SHORT, bool),
        remove_semicolons=r.get(Keys.REMOVE_SEMICOLONS, bool),
        append_terminal_punctuation=r.get(Keys.TERMINAL_PUNCTUATION, bool),
        capitalize_first_letter=r.get(Keys.CAPITALIZE, bool),
    )
    frames_after_eos = r.get(Keys.FRAMES_AFTER_EOS, int)
    generation = GenerationDefaults(
        temperature=r.get(Keys.TEMPERATURE, float),
        eos_threshold=r.get(Keys.EOS_THRESHOLD, float),
        frames_after_eos=None if frames_after_eos < 0 else frames_after_eos,
    )
    cfg = PocketConfig(name=r.get(Keys.CONFIG_NAME, str), flow_lm=flow_lm, mimi=mimi, text=text, generation=generation)
    try:
        cfg.validate()
    except Exception as e:  # ConfigError: the file's hyperparameters are out of range
        raise ModelFileError(f"{where}: {e}") from None
    seed = r.get(Keys.SYNTHETIC_SEED, int, None)
    info = FileInfo(
        name=r.get(Keys.NAME, str),
        quant_mix=r.get(Keys.QUANT_MIX, str),
        weights_kind=r.get(Keys.WEIGHTS_KIND, str),
        synthetic_seed=seed,
        has_encoder=r.get(Keys.HAS_ENCODER, bool),
        tokenizer_kind=tok_kind,
        voice_names=tuple(r.get(Keys.VOICE_NAMES, list, [])),
    )
    return cfg, info, r.get(Keys.FILE_TYPE, int)
