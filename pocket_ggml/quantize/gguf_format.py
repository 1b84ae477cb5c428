"""Writing a pocket-tts GGUF's metadata: the file's own description, then every key of the
`CONFIG_KEYS` table in its order (`pocket_ggml.format.gguf_keys`; the runtime reads the same table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.gguf_keys import CONFIG_KEYS, FORMAT_VERSION, QUANTIZATION_VERSION, FileInfo, Keys, Kind

if TYPE_CHECKING:  # gguf-py is imported only where a file is written (see ggml_types)
    from gguf import GGUFWriter

_ADD_SCALAR = {
    Kind.UINT32: "add_uint32",
    Kind.INT32: "add_int32",
    Kind.FLOAT64: "add_float64",
    Kind.BOOL: "add_bool",
    Kind.STRING: "add_string",
}


def write_metadata(w: GGUFWriter, cfg: PocketConfig, info: FileInfo, file_type: int) -> None:
    w.add_name(info.name)
    w.add_file_type(file_type)
    w.add_quantization_version(QUANTIZATION_VERSION)
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
    for key in CONFIG_KEYS:
        value = key.stored(cfg)
        if key.kind is Kind.INT_ARRAY:
            w.add_array(key, list(value))
        elif key.kind is Kind.REPLACEMENTS:
            if value:
                w.add_array(key, [a for a, _ in value])
                # gguf-py cannot write an empty string inside an array; a deletion is stored as "\0"
                w.add_array(Keys.REPLACE_TO, [b or "\0" for _, b in value])
        else:
            getattr(w, _ADD_SCALAR[key.kind])(key, value)
