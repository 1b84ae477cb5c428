"""The hyperparameters of every config pocket-tts 4.0.1 ships (its packaged yaml files, with the
weight and tokenizer locations left out), in the reference's own yaml layout so that one parser
(`config.PocketConfig.from_reference_dict`) reads both this table and a user's `--config-yaml`.

The configs share most of their blocks: one Mimi (the first releases' codec, whose encoder every
config keeps), the 1024-wide FlowLM of the first releases, and the small decoders of the 2026-10
english models; each is written once below. Keys are in the yaml files' (sorted) order, replacement
tables included, as the order of replacements is the order they apply in. pocket-tts is not needed
at run time; `tests/test_config.py` checks this table against the installed reference package.
"""

from typing import Any


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _sorted(v) if isinstance(v, dict) else v for k, v in sorted(d.items())}


def _seanet(dimension: int = 512, kernel_size: int = 7, n_filters: int = 64) -> dict[str, Any]:
    return {
        "channels": 1,
        "compress": 2,
        "dilation_base": 2,
        "dimension": dimension,
        "kernel_size": kernel_size,
        "last_kernel_size": 3,
        "n_filters": n_filters,
        "n_residual_layers": 1,
        "pad_mode": "constant",
        "ratios": [6, 5, 4],
        "residual_kernel_size": 3,
    }


def _mimi_transformer(
    d_model: int = 512, context: int = 250, dim_feedforward: int = 2048, num_heads: int = 8, num_layers: int = 2
) -> dict[str, Any]:
    return {
        "context": context,
        "d_model": d_model,
        "dim_feedforward": dim_feedforward,
        "input_dimension": d_model,
        "layer_scale": 0.01,
        "num_heads": num_heads,
        "num_layers": num_layers,
        "output_dimensions": [d_model],
    }


def _mimi(inner_dim: int = 32) -> dict[str, Any]:
    """The Mimi of the first releases: encoder and decoder alike."""
    return {
        "channels": 1,
        "dtype": "float32",
        "frame_rate": 12.5,
        "inner_dim": inner_dim,
        "outer_dim": 512,
        "quantizer": {"dimension": 32, "output_dimension": 512},
        "sample_rate": 24000,
        "seanet": _seanet(),
        "transformer": _mimi_transformer(),
    }


def _mimi_small_decoder(n_filters: int, num_layers: int) -> dict[str, Any]:
    """The first Mimi's encoder with a 128-wide decoder (the 2026-10 english models)."""
    return {
        **_mimi(),
        "decoder_seanet": _seanet(dimension=128, kernel_size=3, n_filters=n_filters),
        "decoder_transformer": _mimi_transformer(
            128, context=50, dim_feedforward=384, num_heads=4, num_layers=num_layers
        ),
        "outer_dim": 128,
        "quantizer": {"dimension": 32, "output_dimension": 128},
    }


def _flow_lm(num_layers: int = 6, flow_type: str | None = None, insert_bos_before_voice: bool = True) -> dict[str, Any]:
    """The 1024-wide FlowLM of the first releases."""
    flow: dict[str, Any] = {"depth": 6, "dim": 512}
    if flow_type is not None:
        flow["type"] = flow_type
    return {
        "dtype": "float32",
        "flow": flow,
        "insert_bos_before_voice": insert_bos_before_voice,
        "lookup_table": {"dim": 1024, "n_bins": 4000, "tokenizer": "tokenizers"},
        "transformer": {
            "d_model": 1024,
            "hidden_scale": 4,
            "max_period": 10000,
            "num_heads": 16,
            "num_layers": num_layers,
        },
    }


def _small_flow_lm(
    d_model: int, flow: dict[str, Any], lookup_table: dict[str, Any], transformer: dict[str, Any]
) -> dict[str, Any]:
    """A FlowLM of the 2026-10 english models (sentencepiece tokenizer, z_proj)."""
    return {
        "dtype": "float32",
        "flow": flow,
        "insert_bos_before_voice": True,
        "lookup_table": {"dim": d_model, "n_bins": 4000, **lookup_table, "tokenizer": "sentencepiece"},
        "transformer": {"d_model": d_model, "hidden_scale": 1, "max_period": 10000, **transformer},
        "z_dim": 64,
    }


_QUOTES = {'"': "", "«": "", "»": "", "“": "", "”": "", "„": "", "‘": "'", "’": "'"}
_BRACKETS = {"(": "", ")": "", "[": "", "]": ""}
_EUROPEAN = {**_QUOTES, **_BRACKETS, "–": ","}
_APOSTROPHES = {"‘": "'", "’": "'"}
_DASHES = {"–": ",", "—": ","}


def _config(flow_lm: dict[str, Any], mimi: dict[str, Any], replace: dict[str, str], **rules: Any) -> dict[str, Any]:
    return _sorted({"flow_lm": flow_lm, "mimi": mimi, "replace_characters": replace, **rules})


_ENGLISH_2026_10 = {"default_eos_threshold": -1.0, "default_temperature": 0.3}
_SHARED: dict[tuple[str, ...], dict[str, Any]] = {
    ("dutch", "italian", "portuguese"): _config(_flow_lm(), _mimi(), _EUROPEAN),
    ("dutch_24l", "italian_24l", "portuguese_24l"): _config(_flow_lm(24), _mimi(), _EUROPEAN),
    ("english", "english_2026-04", "english_2026-09", "english_2026-09_2", "english_2026-10"): _config(
        _flow_lm(), _mimi(), _APOSTROPHES, default_temperature=0.3
    ),
    ("english_18m_2026-10", "english_18m_refl_2026-10"): _config(
        _small_flow_lm(
            512,
            {"depth": 4, "dim": 192, "type": "drifting"},
            {"rank": None},
            {"attn_dim": None, "num_heads": 8, "num_kv_heads": None, "num_layers": 8},
        ),
        _mimi_small_decoder(n_filters=32, num_layers=12),
        {**_DASHES, **_APOSTROPHES},
        **_ENGLISH_2026_10,
    ),
    ("english_2026-01",): _config(
        _flow_lm(insert_bos_before_voice=False),
        _mimi(inner_dim=512),
        _APOSTROPHES,
        pad_with_spaces_for_short_inputs=True,
    ),
    ("english_2026-04_24l", "english_2026-09_24l"): _config(
        _flow_lm(24), _mimi(), _APOSTROPHES, default_temperature=0.3
    ),
    ("english_2m_2026-10", "english_2m_refl_2026-10"): _config(
        _small_flow_lm(
            112,
            {"depth": 4, "dim": 64, "type": "pointwise"},
            {"rank": 32},
            {"attn_dim": 192, "dim_feedforward": 96, "num_heads": 3, "num_kv_heads": 1, "num_layers": 8},
        ),
        _mimi_small_decoder(n_filters=24, num_layers=4),
        {**_DASHES, **_APOSTROPHES},
        **_ENGLISH_2026_10,
    ),
    ("english_7m_2026-10", "english_7m_refl_2026-10"): _config(
        _small_flow_lm(
            224,
            {"depth": 4, "dim": 192, "type": "drifting"},
            {"rank": 64},
            {"attn_dim": 512, "num_heads": 8, "num_kv_heads": 2, "num_layers": 8},
        ),
        _mimi_small_decoder(n_filters=32, num_layers=12),
        {**_DASHES, **_APOSTROPHES},
        **_ENGLISH_2026_10,
    ),
    ("english_drifting_26-09",): _config(
        _flow_lm(flow_type="drifting"), _mimi(), _APOSTROPHES, default_temperature=0.3
    ),
    ("french",): _config(_flow_lm(), _mimi(), {**_EUROPEAN, ":": ","}, remove_semicolons=True),
    ("french_24l",): _config(_flow_lm(24), _mimi(), {**_EUROPEAN, ":": ","}, remove_semicolons=True),
    ("german",): _config(_flow_lm(), _mimi(), {**_EUROPEAN, "—": ","}, remove_semicolons=True),
    ("german_24l",): _config(_flow_lm(24), _mimi(), {**_EUROPEAN, "—": ","}, remove_semicolons=True),
    ("spanish",): _config(_flow_lm(), _mimi(), {**_EUROPEAN, "¡": "", "¿": ""}),
    ("spanish_24l",): _config(_flow_lm(24), _mimi(), {**_EUROPEAN, "¡": "", "¿": ""}),
}
RELEASED_CONFIGS: dict[str, dict[str, Any]] = {name: hp for names, hp in _SHARED.items() for name in names}
