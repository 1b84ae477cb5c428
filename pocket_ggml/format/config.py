"""Model hyperparameters: one frozen dataclass tree, the single source of every size.

Read from the released-config table (`--config NAME`), from a reference-format yaml
(`--config-yaml PATH`), or from a GGUF's metadata (runtime). Derived sizes (heads, FFN width,
SEANet channel plan, hop lengths) are properties here, so no other module recomputes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pocket_ggml.errors import ConfigError
from pocket_ggml.format.released_configs import RELEASED_CONFIGS

DEFAULT_CONFIG = "english"  # the released config a model is made from unless told otherwise
DEFAULT_MIX = "Q4_K_M"  # the quantization mix (quantize.policy.MIXES) unless told otherwise
FLOW_TYPES = ("lsd", "flow_matching", "drifting", "pointwise")
# Number of timestep embedders of each flow head type (SimpleMLPAdaLN.num_time_conds).
FLOW_TIME_CONDS = {"lsd": 2, "flow_matching": 1, "drifting": 0, "pointwise": 0}
# pocket_tts.default_parameters.DEFAULT_EOS_THRESHOLD / DEFAULT_TEMPERATURE.
DEFAULT_EOS_THRESHOLD = -4.0
DEFAULT_TEMPERATURE = 0.3


@dataclass(frozen=True)
class FlowLMConfig:
    d_model: int
    num_heads: int
    num_kv_heads: int
    attn_dim: int  # width of queries and of the attention output (d_model unless set)
    num_layers: int
    dim_feedforward: int
    max_period: float
    n_bins: int  # text vocabulary; the table has n_bins + 1 rows (last = padding, unused)
    text_dim: int
    text_rank: int | None  # low-rank table: rank-wide rows + bias-free proj to text_dim
    z_dim: int | None  # bias-free projection of the backbone output for the heads
    flow_type: str
    flow_dim: int
    flow_depth: int
    insert_bos_before_voice: bool

    @property
    def head_dim(self) -> int:
        return self.attn_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.num_kv_heads

    @property
    def cond_dim(self) -> int:
        """Width of what the flow head and EOS head read: z_dim if set, else d_model."""
        return self.z_dim or self.d_model

    @property
    def num_time_conds(self) -> int:
        return FLOW_TIME_CONDS[self.flow_type]


@dataclass(frozen=True)
class SEANetConfig:
    dimension: int
    channels: int
    n_filters: int
    n_residual_layers: int
    ratios: tuple[int, ...]
    kernel_size: int
    residual_kernel_size: int
    last_kernel_size: int
    dilation_base: int
    pad_mode: str
    compress: int

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


@dataclass(frozen=True)
class MimiTransformerConfig:
    d_model: int
    input_dimension: int
    output_dimensions: tuple[int, ...]
    num_heads: int
    num_layers: int
    layer_scale: float
    context: int
    max_period: float
    dim_feedforward: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass(frozen=True)
class MimiConfig:
    sample_rate: int
    channels: int
    frame_rate: float
    encoder_seanet: SEANetConfig
    encoder_transformer: MimiTransformerConfig
    decoder_seanet: SEANetConfig
    decoder_transformer: MimiTransformerConfig
    latent_dim: int  # quantizer.dimension: the FlowLM latent width (32)
    quantizer_output_dim: int
    inner_dim: int | None  # downsample output width (the voice latent); seanet.dimension if None
    outer_dim: int | None  # upsample input width; decoder_seanet.dimension if None

    @property
    def frame_size(self) -> int:
        """Audio samples per latent frame (1920 at 24 kHz / 12.5 Hz)."""
        return int(self.sample_rate / self.frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.encoder_seanet.hop_length

    @property
    def resample_stride(self) -> int:
        """Steps of the Mimi transformers per latent frame (16: 200 Hz inside, 12.5 Hz outside)."""
        return int(self.encoder_frame_rate / self.frame_rate)

    @property
    def speaker_dim(self) -> int:
        """Width of the encoder latents that `speaker_proj_weight` maps to d_model."""
        return self.inner_dim or self.encoder_seanet.dimension


@dataclass(frozen=True)
class TextRules:
    replace_characters: tuple[tuple[str, str], ...] = ()
    pad_with_spaces_for_short_inputs: bool = False
    remove_semicolons: bool = False
    append_terminal_punctuation: bool = True
    capitalize_first_letter: bool = True


@dataclass(frozen=True)
class GenerationDefaults:
    temperature: float = DEFAULT_TEMPERATURE
    eos_threshold: float = DEFAULT_EOS_THRESHOLD
    # None: derived from the text (1 + 2 frames, or 3 + 2 for texts of <= 4 words).
    frames_after_eos: int | None = None


@dataclass(frozen=True)
class PocketConfig:
    name: str
    flow_lm: FlowLMConfig
    mimi: MimiConfig
    text: TextRules = field(default_factory=TextRules)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)

    @classmethod
    def from_reference_dict(cls, name: str, d: dict[str, Any]) -> PocketConfig:
        """Parse the reference's yaml layout (pocket_tts.utils.config.Config)."""
        try:
            cfg = _parse_reference_dict(name, d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"config {name!r}: malformed ({type(e).__name__}: {e})") from None
        cfg.validate()
        return cfg

    def with_name(self, name: str) -> PocketConfig:
        return replace(self, name=name)

    def validate(self) -> None:
        """Reject sizes that would make graph shapes inconsistent (checked before any ggml call)."""
        f, m = self.flow_lm, self.mimi
        _positive(
            self.name,
            "flow_lm",
            f,
            (
                "d_model",
                "num_heads",
                "num_kv_heads",
                "attn_dim",
                "num_layers",
                "dim_feedforward",
                "n_bins",
                "text_dim",
                "flow_dim",
                "flow_depth",
            ),
        )
        if f.flow_type not in FLOW_TYPES:
            raise ConfigError(f"config {self.name!r}: unknown flow type {f.flow_type!r}")
        if f.attn_dim % f.num_heads or f.num_heads % f.num_kv_heads or f.head_dim % 2:
            raise ConfigError(
                f"config {self.name!r}: attn_dim {f.attn_dim} / heads {f.num_heads} / kv heads "
                f"{f.num_kv_heads} do not give an even head size shared by whole groups"
            )
        if f.text_dim != f.d_model:
            raise ConfigError(f"config {self.name!r}: text table width {f.text_dim} != d_model {f.d_model}")
        if f.max_period <= 0:
            raise ConfigError(f"config {self.name!r}: max_period must be positive")
        for side, tr in (("encoder", m.encoder_transformer), ("decoder", m.decoder_transformer)):
            _positive(
                self.name,
                f"mimi {side} transformer",
                tr,
                ("d_model", "num_heads", "num_layers", "context", "dim_feedforward"),
            )
            if tr.d_model % tr.num_heads or tr.head_dim % 2:
                raise ConfigError(f"config {self.name!r}: mimi {side} heads do not divide d_model")
        for side, sn in (("encoder", m.encoder_seanet), ("decoder", m.decoder_seanet)):
            _positive(
                self.name,
                f"mimi {side} seanet",
                sn,
                (
                    "dimension",
                    "channels",
                    "n_filters",
                    "kernel_size",
                    "residual_kernel_size",
                    "last_kernel_size",
                    "dilation_base",
                    "compress",
                ),
            )
            if not sn.ratios or any(r <= 0 for r in sn.ratios) or sn.pad_mode != "constant":
                raise ConfigError(f"config {self.name!r}: mimi {side} seanet ratios/pad_mode")
        if m.encoder_seanet.hop_length != m.decoder_seanet.hop_length:
            raise ConfigError(f"config {self.name!r}: encoder and decoder hop lengths differ")
        if m.sample_rate <= 0 or m.frame_rate <= 0 or m.channels != 1:
            raise ConfigError(f"config {self.name!r}: mimi needs mono audio at positive rates")
        if m.encoder_frame_rate / m.frame_rate != m.resample_stride or m.resample_stride < 1:
            raise ConfigError(f"config {self.name!r}: mimi frame rates need an integer stride")


def _positive(name: str, section: str, obj: object, fields: tuple[str, ...]) -> None:
    for fld in fields:
        v = getattr(obj, fld)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"config {name!r}: {section}.{fld} must be a positive integer, got {v!r}")


def _seanet(d: dict[str, Any]) -> SEANetConfig:
    return SEANetConfig(
        dimension=d["dimension"],
        channels=d["channels"],
        n_filters=d["n_filters"],
        n_residual_layers=d["n_residual_layers"],
        ratios=tuple(d["ratios"]),
        kernel_size=d["kernel_size"],
        residual_kernel_size=d["residual_kernel_size"],
        last_kernel_size=d["last_kernel_size"],
        dilation_base=d["dilation_base"],
        pad_mode=d["pad_mode"],
        compress=d["compress"],
    )


def _mimi_transformer(d: dict[str, Any]) -> MimiTransformerConfig:
    return MimiTransformerConfig(
        d_model=d["d_model"],
        input_dimension=d["input_dimension"],
        output_dimensions=tuple(d["output_dimensions"]),
        num_heads=d["num_heads"],
        num_layers=d["num_layers"],
        layer_scale=float(d["layer_scale"]),
        context=d["context"],
        max_period=float(d.get("max_period", 10000.0)),
        dim_feedforward=d["dim_feedforward"],
    )


def _parse_reference_dict(name: str, d: dict[str, Any]) -> PocketConfig:
    fl, mi = d["flow_lm"], d["mimi"]
    tr, lut, flow = fl["transformer"], fl["lookup_table"], fl["flow"]
    d_model = tr["d_model"]
    flow_lm = FlowLMConfig(
        d_model=d_model,
        num_heads=tr["num_heads"],
        num_kv_heads=tr.get("num_kv_heads") or tr["num_heads"],
        attn_dim=tr.get("attn_dim") or d_model,
        num_layers=tr["num_layers"],
        dim_feedforward=tr.get("dim_feedforward") or int(d_model * tr["hidden_scale"]),
        max_period=float(tr["max_period"]),
        n_bins=lut["n_bins"],
        text_dim=lut["dim"],
        text_rank=lut.get("rank"),
        z_dim=fl.get("z_dim"),
        flow_type=flow.get("type", "lsd"),
        flow_dim=flow["dim"],
        flow_depth=flow["depth"],
        insert_bos_before_voice=bool(fl.get("insert_bos_before_voice", False)),
    )
    enc_seanet = _seanet(mi["seanet"])
    enc_tr = _mimi_transformer(mi["transformer"])
    mimi = MimiConfig(
        sample_rate=mi["sample_rate"],
        channels=mi["channels"],
        frame_rate=float(mi["frame_rate"]),
        encoder_seanet=enc_seanet,
        encoder_transformer=enc_tr,
        decoder_seanet=_seanet(mi["decoder_seanet"]) if mi.get("decoder_seanet") else enc_seanet,
        decoder_transformer=(_mimi_transformer(mi["decoder_transformer"]) if mi.get("decoder_transformer") else enc_tr),
        latent_dim=mi["quantizer"]["dimension"],
        quantizer_output_dim=mi["quantizer"]["output_dimension"],
        inner_dim=mi.get("inner_dim"),
        outer_dim=mi.get("outer_dim"),
    )
    text = TextRules(
        replace_characters=tuple(sorted((d.get("replace_characters") or {}).items())),
        pad_with_spaces_for_short_inputs=bool(d.get("pad_with_spaces_for_short_inputs", False)),
        remove_semicolons=bool(d.get("remove_semicolons", False)),
        append_terminal_punctuation=bool(d.get("append_terminal_punctuation", True)),
        capitalize_first_letter=bool(d.get("capitalize_first_letter", True)),
    )
    generation = GenerationDefaults(
        temperature=float(d.get("default_temperature", DEFAULT_TEMPERATURE)),
        eos_threshold=float(d.get("default_eos_threshold", DEFAULT_EOS_THRESHOLD)),
        frames_after_eos=d.get("model_recommended_frames_after_eos"),
    )
    return PocketConfig(name=name, flow_lm=flow_lm, mimi=mimi, text=text, generation=generation)


def released_config_names() -> list[str]:
    return sorted(RELEASED_CONFIGS)


def load_released_config(name: str) -> PocketConfig:
    if name not in RELEASED_CONFIGS:
        raise ConfigError(f"unknown config {name!r}; released configs: {', '.join(released_config_names())}")
    return PocketConfig.from_reference_dict(name, RELEASED_CONFIGS[name])


def load_config_yaml(path: str | Path) -> PocketConfig:
    """A reference-format yaml (what pocket-tts's `load_model(config=...)` reads)."""
    import yaml

    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config yaml {str(p)!r}: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config yaml {str(p)!r} is not a mapping")
    return PocketConfig.from_reference_dict(p.stem, d)
