"""One pocket-bench session: every measurement it makes, as the JSON document its report is printed from.

`run_benchmark` times this package (and with `reference`, the official pocket-tts) with each configuration in a
fresh process of its own (see `runner`), so process start-up is never inside a speed figure and each peak RSS is
that configuration's own; `run_feed_benchmark` measures first audio of text fed word by word (see `feed`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pocket_ggml.bench import assets, hardware
from pocket_ggml.errors import BenchSetupError

DEFAULT_FRAMES = 125  # 10 s of audio at 12.5 frames/s
DEFAULT_RUNS = 3
DEFAULT_FIRST_CHUNK_TOKENS = 8
REFERENCE_VERSION = "4.0.1"  # the official pocket-tts this package is measured against

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What one session measures: the model (a GGUF, released safetensors or name; None: the embedded
    synthetic english, quantized as `mix`), the threads swept, the prompt, the runs, and the reference."""

    model: str | None = None
    mix: str | None = None
    config: str | None = None  # of a .safetensors `model` that does not name its own
    tokenizer: str | None = None  # of a .safetensors `model`
    threads: tuple[int, ...] = (1,)  # FlowLM and Mimi decoder threads; more than one is a sweep
    mimi_threads: int | None = None  # when the Mimi decoder's should differ from `threads`
    cores: tuple[int, ...] = ()  # pin the measured processes to the first N CPUs; more than one is a sweep
    frames: int = DEFAULT_FRAMES
    text: str | None = None  # None: a passage about as long as the frames
    voice: str | None = None  # prompt audio; None: the synthetic voice as a wav
    runs: int = DEFAULT_RUNS
    reference: bool = False
    reference_python: str = sys.executable  # an interpreter with torch and pocket-tts, for `reference`
    feed_wps: float | None = None  # words per second of `run_feed_benchmark`
    first_chunk_tokens: int = DEFAULT_FIRST_CHUNK_TOKENS  # of `run_feed_benchmark`'s one-shot figure


def json_text(doc: dict) -> str:
    """The document as JSON, non-finite floats as null."""
    return json.dumps(_finite(doc), indent=1) + "\n"


def _finite(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _core_sets(cores: tuple[int, ...]) -> list[list[int]]:
    """The CPUs of each configuration: the first N this process may use, for each N of `cores` (none
    given: all of them), checked before anything is measured."""
    allowed = sorted(os.sched_getaffinity(0))
    for n in cores:
        if n > len(allowed):
            raise BenchSetupError(f"--cores {n}: this process may use {len(allowed)} CPUs ({allowed})")
    return [allowed[:n] for n in cores] or [allowed]


def _model_and_prompt(options: BenchOptions, progress: Progress) -> tuple[Path, assets.ModelFacts, Path, str]:
    """The GGUF measured (made and cached on first use), what it holds, the voice prompt's wav and the text."""
    progress("preparing the model (made and cached on first use)")
    gguf = assets.resolve_gguf(options.model, options.mix, options.config, options.tokenizer)
    facts = assets.model_facts(gguf)
    mimi = facts.config.mimi
    wav = assets.voice_wav(options.voice, mimi.sample_rate)
    text = options.text if options.text is not None else assets.default_text(options.frames, mimi.frame_rate)
    return gguf, facts, wav, text


def run_feed_benchmark(options: BenchOptions, *, command: str, progress: Progress) -> dict[str, object]:
    """First audio of `options.text` fed at `options.feed_wps` words/s, on `options.threads[0]` threads, in
    this process: see `pocket_ggml.bench.feed`."""
    from pocket_ggml.bench.feed import run_feed

    pinned = _core_sets(options.cores[:1])[0]
    os.sched_setaffinity(0, pinned)
    gguf, _, wav, text = _model_and_prompt(options, progress)
    threads = options.threads[0]
    doc = run_feed(
        gguf,
        wav,
        text,
        wps=options.feed_wps,
        threads=threads,
        mimi_threads=options.mimi_threads or threads,
        runs=options.runs,
        first_chunk_tokens=options.first_chunk_tokens,
        progress=progress,
    )
    return {
        "command": command,
        "date": _now(),
        "hardware": {**hardware.cpu_info(), "ggml_features": hardware.ggml_features()},
        "cores": pinned,
        **doc,
    }


def run_benchmark(options: BenchOptions, *, command: str, progress: Progress) -> dict[str, object]:
    """Every measurement of one session, as the JSON document (`command`: the command line it records)."""
    from pocket_ggml.bench import runner
    from pocket_ggml.bench.flops import count_flops
    from pocket_ggml.bench.report import SCHEMA, make_record, ratios
    from pocket_ggml.runtime.build_check import slow_build_note

    load_start = hardware.load_average()
    core_sets = _core_sets(options.cores)
    ref_versions: dict[str, str | None] = {}
    if options.reference:
        ref_versions = runner.check_reference(options.reference_python)
        if ref_versions.get("pocket-tts") != REFERENCE_VERSION:
            progress(f"warning: the reference is pocket-tts {ref_versions.get('pocket-tts')}, not {REFERENCE_VERSION}")
    gguf, facts, wav, text = _model_and_prompt(options, progress)
    cfg = facts.config
    threads, mimi_threads, frames, runs = list(options.threads), options.mimi_threads, options.frames, options.runs
    temperature = cfg.generation.temperature
    import_reps = min(runs, 3)
    voice_runs = min(runs, 3)

    with tempfile.TemporaryDirectory(prefix="pocket-bench-") as tmp:
        env = runner.child_env(threads, mimi_threads, Path(tmp) / "pycache")
        ref_common: dict[str, object] = {}
        if options.reference:
            progress("preparing the identical weights in the released layout for the reference (cached)")
            ref_common = {
                "weights": str(assets.reference_weights(facts, options.model)),
                "tokenizer": str(assets.write_tokenizer(facts, Path(tmp))),
                "config": facts.config_name,
                "weights_kind": facts.weights_kind,
            }
        progress("import time of pocket_ggml in fresh interpreters")
        import_ours = runner.measure_import_ms(sys.executable, runner.IMPORT_OURS, env, import_reps)
        raws: list[tuple[str, dict]] = []
        for cpus in core_sets:
            on = f" on CPUs {cpus}" if options.cores else ""
            for t in threads:
                common = {
                    "voice": str(wav),
                    "text": text,
                    "frames": frames,
                    "runs": runs,
                    "threads": t,
                    "cores": cpus,
                    "temperature": temperature,
                    "seed": 0,
                    "voice_runs": voice_runs,
                }
                progress(f"pocket-ggml, {t} thread(s){on}")
                spec = {**common, "model": str(gguf), "mimi_threads": mimi_threads or t}
                raws.append((facts.quant_mix, runner.run_ours(spec, env, progress)))
                if options.reference:
                    for quantize in (False, True):
                        variant = "int8" if quantize else "fp32"
                        progress(f"pocket-tts {variant}, {t} thread(s){on}")
                        spec = {**common, **ref_common, "quantize": quantize}
                        raws.append((variant, runner.run_reference(options.reference_python, spec, env, progress)))

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
    if options.reference:
        versions.update({k: v for k, v in ref_versions.items() if v})
    return {
        "schema": SCHEMA,
        "date": _now(),
        "command": command,
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
            "cores": core_sets[0] if len(core_sets) == 1 else core_sets,
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
