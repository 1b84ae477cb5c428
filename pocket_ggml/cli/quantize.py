"""`pocket-quantize`: released Pocket TTS safetensors (or synthetic weights) -> one GGUF."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from pocket_ggml.cli.common import CONTEXT_SETTINGS, exit_on_pocket_error
from pocket_ggml.errors import CheckpointError, ConfigError
from pocket_ggml.format.config import (
    DEFAULT_CONFIG,
    DEFAULT_MIX,
    PocketConfig,
    load_config_yaml,
    load_released_config,
    released_config_names,
)
from pocket_ggml.format.names import expected_tensors
from pocket_ggml.format.tokenizer import TokenizerRecord, read_tokenizer, synthetic_tokenizer_record
from pocket_ggml.quantize.checkpoint import SafetensorsCheckpoint
from pocket_ggml.quantize.convert import convert
from pocket_ggml.quantize.policy import MIXES, get_mix, parse_overrides
from pocket_ggml.quantize.summary import conversion_summary
from pocket_ggml.quantize.synthetic import save_synthetic_safetensors


@dataclass(frozen=True)
class QuantizeOptions:
    """One pocket-quantize command line, as click parsed it (the fields are the options' names)."""

    checkpoint: str | None
    config: str | None
    config_yaml: str | None
    tokenizer: str | None
    output: str | None
    mix: str
    tensor_types: tuple[str, ...]
    no_encoder: bool
    report: bool
    synthetic: str | None
    seed: int
    save_safetensors: str | None
    voices: tuple[str, ...]
    name: str | None
    list_configs: bool
    quiet: bool


def _resolve_config(options: QuantizeOptions, ckpt: SafetensorsCheckpoint | None) -> PocketConfig:
    """--config-yaml, else --synthetic's or --config's name, else the one the checkpoint names."""
    if options.synthetic is not None:
        if options.config:
            raise click.UsageError("--synthetic names the config itself")
        return load_config_yaml(options.config_yaml) if options.config_yaml else load_released_config(options.synthetic)
    if options.config and options.config_yaml:
        raise ConfigError("give --config or --config-yaml, not both")
    if options.config_yaml:
        return load_config_yaml(options.config_yaml)
    config = options.config
    if config is None and ckpt is not None:
        config = ckpt.metadata.get("pocket_tts_config")
        if config is None:
            raise ConfigError("this checkpoint does not name its config: give --config NAME or --config-yaml PATH")
    return load_released_config(config or DEFAULT_CONFIG)


def _resolve_tokenizer(options: QuantizeOptions, cfg: PocketConfig) -> TokenizerRecord:
    if options.tokenizer:
        return read_tokenizer(options.tokenizer, cfg.flow_lm.n_bins)
    if options.synthetic is not None:
        return synthetic_tokenizer_record(cfg.flow_lm.n_bins)
    raise click.UsageError("--tokenizer is required with a checkpoint")


def _parse_voices(specs: tuple[str, ...]) -> dict[str, str]:
    from pocket_ggml.format.gguf_keys import VOICE_NAME_RX

    out = {}
    for spec in specs:
        vname, sep, path = spec.partition("=")
        if not sep or not VOICE_NAME_RX.fullmatch(vname):
            raise click.UsageError(f"--voice {spec!r}: expected NAME=FILE with NAME of [A-Za-z0-9_-], 1-40 characters")
        if not Path(path).is_file():
            raise CheckpointError(f"--voice {spec!r}: no such file")
        out[vname] = path
    return out


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--config", "config", metavar="NAME", help=f"released config (default: the file's own, else {DEFAULT_CONFIG})"
)
@click.option("--config-yaml", metavar="PATH", help="a reference-format config yaml instead of --config")
@click.option("--tokenizer", metavar="PATH", help="SentencePiece .model or tokenizer.json (required for a checkpoint)")
@click.option("-o", "--output", required=False, metavar="OUT.gguf", help="the GGUF to write")
@click.option(
    "--type", "mix", default=DEFAULT_MIX, show_default=True, metavar="TYPE", help=f"quantization: {', '.join(MIXES)}"
)
@click.option(
    "--tensor-type",
    "tensor_types",
    multiple=True,
    metavar="REGEX=TYPE",
    help="override the type of tensors whose GGUF name matches REGEX (F32 F16 Q8_0 Q4_K Q5_K Q6_K)",
)
@click.option("--no-encoder", is_flag=True, help="drop the Mimi encoder (needed only for voice cloning)")
@click.option("--report", is_flag=True, help="per-tensor relative RMS quantization error")
@click.option(
    "--synthetic", metavar="CONFIG", help="seeded random weights of a released config instead of a checkpoint"
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of --synthetic")
@click.option(
    "--save-safetensors", metavar="PATH", help="with --synthetic: also write the weights in the released layout"
)
@click.option(
    "--voice",
    "voices",
    multiple=True,
    metavar="NAME=FILE",
    help="store a voice: an audio file to clone (needs the encoder) or a voice-state .safetensors",
)
@click.option("--name", help="general.name of the GGUF")
@click.option("--list-configs", is_flag=True, help="list the released configs and exit")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def main(**params) -> None:
    """Convert a released Pocket TTS checkpoint (model.safetensors, with or without voice cloning;
    F32, BF16 or mixed) into one self-contained GGUF, or make a synthetic one.

    \b
      pocket-quantize model.safetensors --config english --tokenizer tokenizer.model -o english-q4_k_m.gguf
      pocket-quantize --synthetic english --seed 0 -o synth-english-f32.gguf --type F32
    """
    options = QuantizeOptions(**params)
    if options.list_configs:
        click.echo("\n".join(released_config_names()))
        return
    with exit_on_pocket_error("pocket-quantize: error: "):
        _run(options)


def _run(options: QuantizeOptions) -> None:
    if options.output is None:
        raise click.UsageError("missing -o/--output")
    if (options.checkpoint is None) == (options.synthetic is None):
        raise click.UsageError("give a CHECKPOINT or --synthetic CONFIG (one of them)")
    if options.save_safetensors and options.synthetic is None:
        raise click.UsageError("--save-safetensors goes with --synthetic")
    mix = get_mix(options.mix)
    overrides = parse_overrides(options.tensor_types)
    voice_sources = _parse_voices(options.voices)
    ckpt = None
    if options.checkpoint is not None:
        if not Path(options.checkpoint).is_file():
            raise CheckpointError(f"{options.checkpoint}: no such file")
        ckpt = SafetensorsCheckpoint(options.checkpoint)
    cfg = _resolve_config(options, ckpt)
    tok = _resolve_tokenizer(options, cfg)

    if options.save_safetensors:
        save_synthetic_safetensors(cfg, options.seed, Path(options.save_safetensors))
    n_tensors = len(expected_tensors(cfg, with_encoder=not options.no_encoder))
    with click.progressbar(
        length=n_tensors * (2 if voice_sources else 1),
        label="quantizing",
        file=sys.stderr,
        hidden=options.quiet or not sys.stderr.isatty(),
    ) as bar:

        def write(path: Path, states):
            return convert(
                cfg,
                path,
                mix,
                tok,
                checkpoint=ckpt,
                synthetic_seed=options.seed if options.synthetic is not None else None,
                keep_encoder=not options.no_encoder,
                overrides=overrides,
                measure_error=options.report,
                name=options.name,
                progress=lambda _name: bar.update(1),
                voices=states,
            )

        if voice_sources:
            from pocket_ggml.voices.store import convert_with_voices

            result = convert_with_voices(write, Path(options.output), voice_sources)
        else:
            result = write(Path(options.output), None)
    click.echo(conversion_summary(result, options.report))


if __name__ == "__main__":
    main()
