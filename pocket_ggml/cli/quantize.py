"""`pocket-quantize`: released Pocket TTS safetensors (or synthetic weights) -> one GGUF."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import click
import numpy as np

from pocket_ggml.errors import CheckpointError, ConfigError, PocketError
from pocket_ggml.format.config import (
    DEFAULT_CONFIG,
    DEFAULT_MIX,
    PocketConfig,
    load_config_yaml,
    load_released_config,
    released_config_names,
)
from pocket_ggml.format.names import expected_tensors
from pocket_ggml.format.tokenizer import check_tokenizer, read_tokenizer, synthetic_tokenizer
from pocket_ggml.quantize.checkpoint import SafetensorsCheckpoint
from pocket_ggml.quantize.convert import ConversionResult, convert
from pocket_ggml.quantize.policy import MIXES, get_mix, parse_overrides
from pocket_ggml.quantize.synthetic import save_synthetic_safetensors


def _resolve_config(config: str | None, config_yaml: str | None, ckpt: SafetensorsCheckpoint | None) -> PocketConfig:
    if config and config_yaml:
        raise ConfigError("give --config or --config-yaml, not both")
    if config_yaml:
        return load_config_yaml(config_yaml)
    if config is None and ckpt is not None:
        config = ckpt.metadata.get("pocket_tts_config")
        if config is None:
            raise ConfigError("this checkpoint does not name its config: give --config NAME or --config-yaml PATH")
    return load_released_config(config or DEFAULT_CONFIG)


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


def _summary(result: ConversionResult, report: bool) -> str:
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in result.tensors:
        row = by_type[r.qtype.name]
        row[0] += 1
        row[1] += r.n_params
        row[2] += r.n_bytes
    lines = [
        f"{result.output}: {result.config.name}, {result.mix}, {result.weights_kind} weights, "
        f"encoder {'kept' if result.has_encoder else 'dropped'}, {result.seconds:.1f} s",
        "",
        "| type | tensors | parameters | bytes |",
        "|---|---:|---:|---:|",
    ]
    for name, (n, p, b) in sorted(by_type.items(), key=lambda kv: -kv[1][2]):
        lines.append(f"| {name} | {n} | {p:,} | {b:,} |")
    total_p = sum(r.n_params for r in result.tensors)
    lines.append(f"| **total** | {len(result.tensors)} | {total_p:,} | {result.output_bytes:,} (file) |")
    lines.append("")
    lines.append(
        f"file {result.output_bytes / 1e6:.1f} MB, {result.output_bytes / result.input_bytes:.3f} of the input "
        f"({result.input_bytes / 1e6:.1f} MB{', as F32' if result.weights_kind == 'synthetic' else ''})"
    )
    if report:
        lines += ["", "| tensor | type | shape | rel. RMS error |", "|---|---|---|---:|"]
        for r in result.tensors:
            err = "-" if r.rel_rms_error is None else f"{r.rel_rms_error:.2e}"
            lines.append(f"| {r.gguf_name} | {r.qtype.name} | {'x'.join(map(str, r.shape))} | {err} |")
        quantized = [r for r in result.tensors if r.rel_rms_error is not None and r.qtype.name != "F32"]
        if quantized:
            w = np.array([r.n_params for r in quantized], dtype=np.float64)
            e = np.array([r.rel_rms_error for r in quantized])
            lines.append(
                f"\nparameter-weighted mean rel. RMS error of non-F32 tensors: {float((w * e).sum() / w.sum()):.2e}"
            )
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
def main(
    checkpoint,
    config,
    config_yaml,
    tokenizer,
    output,
    mix,
    tensor_types,
    no_encoder,
    report,
    synthetic,
    seed,
    save_safetensors,
    voices,
    name,
    list_configs,
    quiet,
) -> None:
    """Convert a released Pocket TTS checkpoint (model.safetensors, with or without voice cloning;
    F32, BF16 or mixed) into one self-contained GGUF, or make a synthetic one.

    \b
      pocket-quantize model.safetensors --config english --tokenizer tokenizer.model -o english-q4_k_m.gguf
      pocket-quantize --synthetic english --seed 0 -o synth-english-f32.gguf --type F32
    """
    if list_configs:
        click.echo("\n".join(released_config_names()))
        return
    try:
        _run(
            checkpoint,
            config,
            config_yaml,
            tokenizer,
            output,
            mix,
            tensor_types,
            no_encoder,
            report,
            synthetic,
            seed,
            save_safetensors,
            voices,
            name,
            quiet,
        )
    except PocketError as e:
        click.echo(f"pocket-quantize: error: {e}", err=True)
        sys.exit(2)


def _run(
    checkpoint,
    config,
    config_yaml,
    tokenizer,
    output,
    mix_name,
    tensor_types,
    no_encoder,
    report,
    synthetic,
    seed,
    save_safetensors,
    voices,
    name,
    quiet,
) -> None:
    if output is None:
        raise click.UsageError("missing -o/--output")
    if (checkpoint is None) == (synthetic is None):
        raise click.UsageError("give a CHECKPOINT or --synthetic CONFIG (one of them)")
    if save_safetensors and synthetic is None:
        raise click.UsageError("--save-safetensors goes with --synthetic")
    mix = get_mix(mix_name)
    overrides = parse_overrides(tensor_types)
    voice_sources = _parse_voices(voices)
    ckpt = None
    if synthetic is not None:
        if config:
            raise click.UsageError("--synthetic names the config itself")
        cfg = load_config_yaml(config_yaml) if config_yaml else load_released_config(synthetic)
    else:
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"{checkpoint}: no such file")
        ckpt = SafetensorsCheckpoint(checkpoint)
        cfg = _resolve_config(config, config_yaml, ckpt)
    if tokenizer:
        tok = read_tokenizer(tokenizer, cfg.flow_lm.n_bins)
    elif synthetic is not None:
        tok = check_tokenizer(synthetic_tokenizer(cfg.flow_lm.n_bins), "sentencepiece", cfg.flow_lm.n_bins)
    else:
        raise click.UsageError("--tokenizer is required with a checkpoint")

    if save_safetensors:
        save_synthetic_safetensors(cfg, seed, Path(save_safetensors))
    n_tensors = len(expected_tensors(cfg, with_encoder=not no_encoder))
    with click.progressbar(
        length=n_tensors * (2 if voice_sources else 1),
        label="quantizing",
        file=sys.stderr,
        hidden=quiet or not sys.stderr.isatty(),
    ) as bar:

        def write(path: Path, states):
            return convert(
                cfg,
                path,
                mix,
                tok,
                checkpoint=ckpt,
                synthetic_seed=seed if synthetic is not None else None,
                keep_encoder=not no_encoder,
                overrides=overrides,
                measure_error=report,
                name=name,
                progress=lambda _name: bar.update(1),
                voices=states,
            )

        if voice_sources:
            from pocket_ggml.voices.store import convert_with_voices

            result = convert_with_voices(write, Path(output), voice_sources)
        else:
            result = write(Path(output), None)
    click.echo(_summary(result, report))


if __name__ == "__main__":
    main()
