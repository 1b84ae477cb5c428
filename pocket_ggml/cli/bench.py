"""`pocket-bench`: realtime factor, latency, per-stage timings, memory and throughput of pocket-ggml,
optionally side by side with the official pocket-tts (PyTorch) on the identical weights.

Markdown on stdout, progress on stderr, everything in `--json PATH`; the measuring is `bench.benchmark`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pocket_ggml.bench.benchmark import (
    DEFAULT_FIRST_CHUNK_TOKENS,
    DEFAULT_FRAMES,
    DEFAULT_RUNS,
    REFERENCE_VERSION,
    BenchOptions,
    json_text,
    run_benchmark,
    run_feed_benchmark,
)
from pocket_ggml.cli.common import CONTEXT_SETTINGS, exit_on_pocket_error
from pocket_ggml.errors import PlotUnavailable, PocketError
from pocket_ggml.format.config import DEFAULT_MIX

_ERROR = "pocket-bench: error: "


def _counts(value: str | None, what: str, most: int) -> tuple[int, ...]:
    """A comma-separated list of `what` counts from 1 to `most`, without repeats (None: none given)."""
    if value is None:
        return ()
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give {what} counts separated by commas, e.g. 1,2") from None
    if not out or any(not 1 <= t <= most for t in out):
        raise click.BadParameter(f"{value!r}: {what} counts must be 1-{most}")
    return tuple(dict.fromkeys(out))


def _progress(msg: str) -> None:
    click.echo(f"pocket-bench: {msg}", err=True)


@click.command(context_settings=CONTEXT_SETTINGS)
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
    f"quantized on the fly and cached [default: {DEFAULT_MIX}]",
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
    "cores_arg",
    metavar="N[,N...]",
    help="pin every measured process to the first N CPUs (sched_setaffinity) before loading; a list is "
    "a sweep, each core count with every thread count",
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
    help=f"also run the official pocket-tts {REFERENCE_VERSION} (fp32 and int8) on the "
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
    default=DEFAULT_FIRST_CHUNK_TOKENS,
    show_default=True,
    metavar="N",
    help="with --feed-wps: the first_chunk_tokens of the one-shot figure",
)
def main(
    info: bool, threads_arg: str, cores_arg: str | None, json_path: str | None, plot_path: str | None, **settings
) -> None:
    """Benchmark pocket-ggml (FlowLM and the Mimi transformer on a worker thread, the SEANet decoder in
    the consumer, as the product runs) through the public TTSModel API, with the voice state computed
    before timing.

    \b
      pocket-bench                                   # synthetic english Q4_K_M, 125 frames, 1 thread
      pocket-bench --reference --threads 1,2 --runs 3
      pocket-bench --reference --cores 2,1                # on two cores, then pinned to one
      pocket-bench --type Q8_0 --json q8.json
      pocket-bench --reference --plot bench.png
      pocket-bench --info
      pocket-bench --feed-wps 3 --runs 3             # first audio of text arriving word by word
    """
    if info:
        _print_build_info()
        return
    options = BenchOptions(
        threads=_counts(threads_arg, "thread", 64), cores=_counts(cores_arg, "core", 4096), **settings
    )
    command = " ".join(["pocket-bench", *sys.argv[1:]])
    if options.feed_wps is not None:
        with exit_on_pocket_error(_ERROR):
            doc = run_feed_benchmark(options, command=command, progress=_progress)
        from pocket_ggml.bench.feed import markdown as feed_markdown

        _publish(feed_markdown(doc), doc, json_path)
        return
    with exit_on_pocket_error(_ERROR):
        if plot_path:
            _check_plot_destination(plot_path)
        doc = run_benchmark(options, command=command, progress=_progress)
    from pocket_ggml.bench.report import markdown

    _publish(markdown(doc), doc, json_path)
    if plot_path:
        from pocket_ggml.bench.plot import plot_report

        try:
            plot_report(doc, plot_path)
        except (PocketError, OSError) as e:
            click.echo(f"{_ERROR}cannot draw {plot_path}: {e}", err=True)
            sys.exit(2)
        _progress(f"wrote {plot_path}")


def _print_build_info() -> None:
    from pocket_ggml.bench.hardware import ggml_features, ggml_features_line, repack_line
    from pocket_ggml.runtime.build_check import slow_build_note

    click.echo(ggml_features_line(ggml_features()))
    click.echo(repack_line())
    note = slow_build_note()
    if note:
        click.echo(f"SLOW BUILD: {note}")


def _check_plot_destination(plot_path: str) -> None:
    """Before the measuring: a plot that cannot be drawn is known in a second, not after minutes."""
    from pocket_ggml.bench.plot import require_matplotlib

    require_matplotlib()
    if not Path(plot_path).resolve().parent.is_dir():
        raise PlotUnavailable(f"--plot {plot_path}: its folder does not exist")


def _publish(report: str, doc: dict, json_path: str | None) -> None:
    """The report on stdout, and the document as JSON where asked."""
    from pocket_ggml.files import atomic_write

    click.echo(report)
    if json_path:
        with atomic_write(json_path) as tmp:
            tmp.write_text(json_text(doc))
        _progress(f"wrote {json_path}")


if __name__ == "__main__":
    main()
