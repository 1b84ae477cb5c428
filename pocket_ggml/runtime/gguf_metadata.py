"""Reading a pocket-tts GGUF's metadata back into a `PocketConfig` and a `FileInfo`: the
`CONFIG_KEYS` table of `pocket_ggml.format.gguf_keys`, the one the writer follows."""

from __future__ import annotations

import typing
from typing import Any

from pocket_ggml.errors import ModelFileError
from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.gguf_keys import ARCH, CONFIG_KEYS, FORMAT_VERSION, FileInfo, Keys, Kind
from pocket_ggml.runtime.gguf_header import KVInfo

_PYTHON_TYPES: dict[Kind, type] = {
    Kind.UINT32: int,
    Kind.INT32: int,
    Kind.FLOAT64: float,
    Kind.BOOL: bool,
    Kind.STRING: str,
    Kind.INT_ARRAY: list,
    Kind.REPLACEMENTS: list,
}


class _Fields:
    """Typed access to the decoded metadata pairs, with one clear error for anything missing or mistyped."""

    def __init__(self, fields: dict[str, KVInfo], where: str):
        self.fields, self.where = fields, where

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        field = self.fields.get(key)
        if field is None:
            if default is ...:
                raise ModelFileError(f"{self.where}: metadata key {key!r} is missing")
            return default
        value = field.value
        if kind is list:
            if not isinstance(value, list):
                raise ModelFileError(f"{self.where}: metadata key {key!r} should be an array")
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is bool and isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str):
            return value
        raise ModelFileError(f"{self.where}: metadata key {key!r} has the wrong type ({type(value).__name__})")


def _replacements(r: _Fields, where: str) -> tuple[tuple[str, str], ...]:
    rep_from = r.get(Keys.REPLACE_FROM, list, [])
    rep_to = [s.replace("\0", "") for s in r.get(Keys.REPLACE_TO, list, [])]
    if len(rep_from) != len(rep_to):
        raise ModelFileError(f"{where}: character replacement lists differ in length")
    return tuple(zip(rep_from, rep_to, strict=True))


def _build(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from {field: value}, nested dataclasses from {field: {...}}."""
    hints = typing.get_type_hints(cls)
    return cls(**{name: _build(hints[name], v) if isinstance(v, dict) else v for name, v in values.items()})


def read_config(r: _Fields, where: str) -> PocketConfig:
    """Every `CONFIG_KEYS` value, as a validated config."""
    tree: dict[str, Any] = {"name": r.get(Keys.CONFIG_NAME, str)}
    for key in CONFIG_KEYS:
        if key.kind is Kind.REPLACEMENTS:
            value = _replacements(r, where)
        else:
            value = key.loaded(r.get(key, _PYTHON_TYPES[key.kind]))
        *path, name = key.field.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value
    cfg = _build(PocketConfig, tree)
    try:
        cfg.validate()
    except Exception as e:  # ConfigError: the file's hyperparameters are out of range
        raise ModelFileError(f"{where}: {e}") from None
    return cfg


def read_metadata(fields: dict[str, KVInfo], where: str) -> tuple[PocketConfig, FileInfo, int]:
    """Config, file info and file_type from a GGUF's metadata pairs; the config is validated."""
    r = _Fields(fields, where)
    arch = r.get(Keys.ARCHITECTURE, str)
    if arch != ARCH:
        raise ModelFileError(f"{where}: architecture is {arch!r}, not {ARCH!r}")
    version = r.get(Keys.FORMAT_VERSION, int)
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{where}: pocket-tts GGUF format version {version}, this runtime reads {FORMAT_VERSION}")
    cfg = read_config(r, where)
    info = FileInfo(
        name=r.get(Keys.NAME, str),
        quant_mix=r.get(Keys.QUANT_MIX, str),
        weights_kind=r.get(Keys.WEIGHTS_KIND, str),
        synthetic_seed=r.get(Keys.SYNTHETIC_SEED, int, None),
        has_encoder=r.get(Keys.HAS_ENCODER, bool),
        tokenizer_kind=r.get(Keys.TOKENIZER_KIND, str),
        voice_names=tuple(r.get(Keys.VOICE_NAMES, list, [])),
    )
    return cfg, info, r.get(Keys.FILE_TYPE, int)
