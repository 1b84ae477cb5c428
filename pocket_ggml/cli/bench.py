"""`pocket-bench`: realtime factor, latency, per-stage timings, memory and throughput of pocket-ggml,
optionally side by side with the official pocket-tts (PyTorch) on the identical weights.

Markdown on stdout, progress on stderr, everything in `--json PATH`. Each configuration runs in a
fresh process of its own (see `runner`), so process start-up is never inside a speed figure and each
peak RSS is that configuration's own.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import click

from pocket_ggml.errors import PocketError

DEFAULT_FRAMES = 125  # 10 s of audio at 12.5 frames/s
DEFAULT_RUNS = 3


def _threads_list(value: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give thread counts separated by commas, e.g. 1,2") from None
    if not out or any(not 1 <= t <= 64 for t in out):
        raise click.BadParameter(f"{value!r}: thread counts must be 1-64")
    return list(dict.fromkeys(out))


def _finite(obj: object) -> object:
    """JSON-safe: non-finite floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _progress(msg: str) -> None:
    click.echo(f"pocket-bench: {msg}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    metavar="PATH|NAME",
    help="a .gguf, a released model.safetensors, or a released name (default: the embedded synthetic english model)",
)
@click.option(
    "--type",
    "mix",
    metavar="MIX",
    help="quantization mix: the synthetic english (or --model .safetensors) "
    "quantized on the fly and cached [default: Q4_K_M]",
)
@click.option("--config", metavar="NAME", help="config of a --model .safetensors that does not name its own")
@click.option("--tokenizer", metavar="PATH", help="tokenizer of a --model .safetensors")
@click.option(
    "--threads",
    "threads_arg",
    default="1",
    show_default=True,
    metavar="N[,N...]",
    help="ggml threads of the FlowLM and of the Mimi decoder, each at most half the CPUs (they run side "
    "by side); a list is a sweep "
    "(the reference: torch.set_num_threads, shared by its FlowLM and Mimi threads)",
)
@click.option(
    "--mimi-threads",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Mimi decoder threads when they should differ from --threads",
)
@click.option(
    "--cores",
    type=click.IntRange(1, 4096),
    metavar="N",
    help="pin every process to the first N CPUs (sched_setaffinity) before loading",
)
@click.option(
    "--frames",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_FRAMES,
    show_default=True,
    help="latent frames per run (80 ms each); exact: EOS is disabled and the length fixed",
)
@click.option("--text", help="text to speak [default: a passage about as long as the frames]")
@click.option("--voice", metavar="AUDIO", help="voice prompt audio file [default: the synthetic voice as a wav]")
@click.option(
    "--runs",
    type=click.IntRange(1, 1000),
    default=DEFAULT_RUNS,
    show_default=True,
    help="warm runs (median and min-max), after one cold run",
)
@click.option(
    "--reference",
    is_flag=True,
    help="also run the official pocket-tts 4.0.1 (fp32 and int8) on the "
    "identical weights, in subprocesses, and print our/ref ratios",
)
@click.option(
    "--reference-python",
    metavar="PYTHON",
    default=sys.executable,
    show_default="this interpreter",
    help="interpreter that has torch and pocket-tts, for --reference",
)
@click.option("--json", "json_path", metavar="PATH", help="write every figure as JSON")
@click.option(
    "--plot",
    "plot_path",
    metavar="FILE.png",
    help="draw the realtime factors and where a frame's time goes (needs matplotlib: pocket-ggml[plot])",
)
@click.option("--info", is_flag=True, help="print the CPU features the installed ggml build uses, and exit")
@click.option(
    "--feed-wps",
    type=click.FloatRange(0.1, 1000),
    metavar="N",
    help="instead: first audio of the text fed word by word at N words/s (each sentence's last word -> its "
    "first chunk), and of the whole text at once with and without --first-chunk-tokens, in this process",
)
@click.option(
    "--first-chunk-tokens",
    type=click.IntRange(1, 10_000),
    default=8,
    show_default=True,
    metavar="N",
    help="with --feed-wps: the first_chunk_tokens of the one-shot figure",
)
def main(
    model: str | None,
    mix: str | None,
    config: str | None,
    tokenizer: str | None,
    threads_arg: str,
    mimi_threads: int | None,
    cores: int | None,
    frames: int,
    text: str | None,
    voice: str | None,
    runs: int,
    reference: bool,
    reference_python: str,
    json_path: str | None,
    plot_path: str | None,
    info: bool,
    feed_wps: float | None,
    first_chunk_tokens: int,
) -> None:
    """Benchmark pocket-ggml (FlowLM and the Mimi transformer on a worker thread, the SEANet decoder in
    the consumer, as the product runs) through the public TTSModel API, with the voice state computed
    before timing.

    \b
      pocket-bench                                   # synthetic english Q4_K_M, 125 frames, 1 thread
      pocket-bench --reference --threads 1,2 --runs 3
      pocket-bench --reference --cores 1
      pocket-bench --type Q8_0 --json q8.json
      pocket-bench --reference --plot bench.png
      pocket-bench --info
      pocket-bench --feed-wps 3 --runs 3             # first audio of text arriving word by word
    """
    if info:
        from pocket_ggml.bench.hardware import ggml_features, ggml_features_line, repack_line
        from pocket_ggml.runtime.build_check import slow_build_note

        click.echo(ggml_features_line(ggml_features()))
        click.echo(repack_line())
        note = slow_build_note()
        if note:
            click.echo(f"SLOW BUILD: {note}")
        return
    threads = _threads_list(threads_arg)
    if feed_wps is not None:
        try:
            doc = run_feed_benchmark(
                model,
                mix,
                config,
                tokenizer,
                threads[0],
                mimi_threads,
                cores,
                frames,
                text,
                voice,
                runs,
                feed_wps,
                first_chunk_tokens,
            )
        except PocketError as e:
            click.echo(f"pocket-bench: error: {e}", err=True)
            sys.exit(2)
        from pocket_ggml.bench.feed import markdown as feed_markdown

        _publish(feed_markdown(doc), doc, json_path)
        return
    try:
        if plot_path:
            from pocket_ggml.bench.plot import require_matplotlib
            from pocket_ggml.errors import PlotUnavailable

            require_matplotlib()
            if not Path(plot_path).resolve().parent.is_dir():
                raise PlotUnavailable(f"--plot {plot_path}: its folder does not exist")
        doc = run_benchmark(
            model=model,
            mix=mix,
            config=config,
            tokenizer=tokenizer,
            threads=threads,
            mimi_threads=mimi_threads,
            cores=cores,
            frames=frames,
            text=text,
            voice=voice,
            runs=runs,
            reference=reference,
            reference_python=reference_python,
        )
    except PocketError as e:
        click.echo(f"pocket-bench: error: {e}", err=True)
        sys.exit(2)
    from pocket_ggml.bench.report import markdown

    _publish(markdown(doc), doc, json_path)
    if plot_path:
        from pocket_ggml.bench.plot import plot_report

        try:
            plot_report(doc, plot_path)
        except (PocketError, OSError) as e:
            click.echo(f"pocket-bench: error: cannot draw {plot_path}: {e}", err=True)
            sys.exit(2)
        _progress(f"wrote {plot_path}")


def _publish(report: str, doc: dict, json_path: str | None) -> None:
    """The report on stdout, and the document as JSON where asked."""
    click.echo(report)
    if json_path:
        Path(json_path).write_text(json.dumps(_finite(doc), indent=1) + "\n")
        _progress(f"wrote {json_path}")


def run_feed_benchmark(
    model: str | None,
    mix: str | None,
    config: str | None,
    tokenizer: str | None,
    threads: int,
    mimi_threads: int | None,
    cores: int | None,
    frames: int,
    text: str | None,
    voice: str | None,
    runs: int,
    wps: float,
    first_chunk_tokens: int,
) -> dict[str, object]:
    """`--feed-wps`: see `pocket_ggml.bench.feed`."""
    from pocket_ggml.bench import assets, hardware
    from pocket_ggml.bench.feed import run_feed

    try:
        pinned = hardware.pin_first_cores(cores) if cores else sorted(os.sched_getaffinity(0))
    except ValueError as e:
        raise assets.BenchSetupError(str(e)) from None
    _progress("preparing the model (made and cached on first use)")
    gguf = assets.resolve_gguf(model, mix, config, tokenizer)
    cfg = assets.model_facts(gguf).config
    wav = assets.voice_wav(voice, cfg.mimi.sample_rate)
    text = text if text is not None else assets.default_text(frames, cfg.mimi.frame_rate)
    doc = run_feed(
        gguf,
        wav,
        text,
        wps=wps,
        threads=threads,
        mimi_threads=mimi_threads or threads,
        runs=runs,
        first_chunk_tokens=first_chunk_tokens,
        progress=_progress,
    )
    return {
        "command": " ".join(["pocket-bench", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": {**hardware.cpu_info(), "ggml_features": hardware.ggml_features()},
        "cores": pinned,
        **doc,
    }


def run_benchmark(
    *,
    model: str | None,
    mix: str | None,
    config: str | None,
    tokenizer: str | None,
    threads: list[int],
    mimi_threads: int | None,
    cores: int | None,
    frames: int,
    text: str | None,
    voice: str | None,
    runs: int,
    reference: bool,
    reference_python: str,
) -> dict[str, object]:
    """Every measurement of one pocket-bench invocation, as the JSON document."""
    from pocket_ggml.bench import assets, hardware, runner
    from pocket_ggml.bench.flops import count_flops
    from pocket_ggml.bench.report import SCHEMA, make_record, ratios
    from pocket_ggml.runtime.build_check import slow_build_note

    load_start = hardware.load_average()
    try:
        pinned = hardware.pin_first_cores(cores) if cores else sorted(os.sched_getaffinity(0))
    except ValueError as e:
        raise assets.BenchSetupError(str(e)) from None
    if cores:
        _progress(f"pinned to CPUs {pinned}")
    ref_versions: dict[str, str | None] = {}
    if reference:
        ref_versions = runner.check_reference(reference_python)
        if ref_versions.get("pocket-tts") != "4.0.1":
            _progress(f"warning: the reference is pocket-tts {ref_versions.get('pocket-tts')}, not 4.0.1")
    _progress("preparing the model (made and cached on first use)")
    gguf = assets.resolve_gguf(model, mix, config, tokenizer)
    facts = assets.model_facts(gguf)
    cfg = facts.config
    wav = assets.voice_wav(voice, cfg.mimi.sample_rate)
    text = text if text is not None else assets.default_text(frames, cfg.mimi.frame_rate)
    temperature = cfg.generation.temperature
    import_reps = min(runs, 3)
    voice_runs = min(runs, 3)

    with tempfile.TemporaryDirectory(prefix="pocket-bench-") as tmp:
        env = runner.child_env(threads, mimi_threads, Path(tmp) / "pycache")
        ref_common: dict[str, object] = {}
        if reference:
            _progress("preparing the identical weights in the released layout for the reference (cached)")
            ref_common = {
                "weights": str(assets.reference_weights(facts, model)),
                "tokenizer": str(assets.write_tokenizer(facts, Path(tmp))),
                "config": facts.config_name,
                "weights_kind": facts.weights_kind,
            }
        _progress("import time of pocket_ggml in fresh interpreters")
        import_ours = runner.measure_import_ms(sys.executable, runner.IMPORT_OURS, env, import_reps)
        raws: list[tuple[str, dict]] = []
        for t in threads:
            common = {
                "voice": str(wav),
                "text": text,
                "frames": frames,
                "runs": runs,
                "threads": t,
                "cores": pinned,
                "temperature": temperature,
                "seed": 0,
                "voice_runs": voice_runs,
            }
            _progress(f"pocket-ggml, {t} thread(s)")
            spec = {**common, "model": str(gguf), "mimi_threads": mimi_threads or t}
            raws.append((facts.quant_mix, runner.run_ours(spec, env, _progress)))
            if reference:
                for quantize in (False, True):
                    variant = "int8" if quantize else "fp32"
                    _progress(f"pocket-tts {variant}, {t} thread(s)")
                    spec = {**common, **ref_common, "quantize": quantize}
                    raws.append((variant, runner.run_reference(reference_python, spec, env, _progress)))

    # the reference's import is timed first thing in each of its fresh child processes
    import_ref = [float(r["import_in_child_s"]) * 1e3 for _, r in raws if r["backend"] == "pocket-tts"]
    ours0 = next(r for v, r in raws if r["backend"] == "pocket-ggml")
    text_tokens, voice_rows = int(ours0["text_tokens"]), int(ours0["voice_rows"])
    flops = count_flops(cfg, frames=frames, text_tokens=text_tokens, voice_rows=voice_rows)
    records = [
        make_record(
            raw,
            variant=variant,
            frames=frames,
            flops=flops,
            import_ms=statistics.median(import_ours if raw["backend"] == "pocket-ggml" else import_ref),
            text_tokens=text_tokens,
            voice_seconds=float(ours0["voice_seconds"]),
        )
        for variant, raw in raws
    ]
    load_end = hardware.load_average()
    versions = hardware.versions()
    for _, raw in raws:
        versions.update(raw.get("versions") or {})
    if reference:
        versions.update({k: v for k, v in ref_versions.items() if v})
    return {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["pocket-bench", *sys.argv[1:]]),
        "hardware": {
            **hardware.cpu_info(),
            "ggml_features": hardware.ggml_features(),
            "ggml_slow_build": slow_build_note(),
        },
        "versions": versions,
        "model": {
            "path": str(gguf),
            "config": facts.config_name,
            "quant_mix": facts.quant_mix,
            "weights_kind": facts.weights_kind,
            "synthetic_seed": facts.synthetic_seed,
            "file_mb": facts.file_bytes / 1e6,
            "reference_weights": ref_common.get("weights"),
        },
        "settings": {
            "frames": frames,
            "runs": runs,
            "text": text,
            "text_tokens": text_tokens,
            "voice": str(wav),
            "voice_rows": voice_rows,
            "threads": threads,
            "mimi_threads": mimi_threads,
            "cores": pinned,
            "temperature": temperature,
            "eos_threshold": "inf",
            "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
            "import_ms_runs": {"pocket-ggml": import_ours, "pocket-tts": import_ref},
            "load_average_start": load_start,
            "load_average_end": load_end,
        },
        "flops": {
            "per_frame": flops.per_frame,
            "flow_lm_transformer": flops.flow_lm_transformer,
            "flow_head": flops.flow_head,
            "mimi_transformer": flops.mimi_transformer,
            "seanet": flops.seanet,
            "mimi_other": flops.mimi_other,
            "text_prefill": flops.text_prefill,
            "per_run": flops.per_run,
        },
        "results": records,
        "ratios": ratios(records),
    }


if __name__ == "__main__":
    main()
