"""From raw child results to benchmark records, our/ref ratios, the JSON document and the markdown.

Names as in the issue: the **realtime factor** is audio seconds / wall seconds (higher is faster);
**RTF** is wall seconds / audio seconds (lower is faster). A run's wall time runs from the text being
submitted to the last audio chunk; **first audio** from the text being submitted to the first chunk,
with the voice state already computed. The first run after the load is the **cold** run; the warm
figures are the median (and min-max) of the `runs` runs after it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pocket_ggml.bench.flops import FlopCount

SCHEMA = "pocket-bench/1"
STAGES = ("flow_lm_transformer", "flow_head", "mimi_transformer", "seanet")

# Every benchmark record has these keys, with finite positive numbers where numeric.
RECORD_FIELDS = (
    "backend",
    "variant",
    "threads",
    "mimi_threads",
    "cores",
    "weights_kind",
    "frames",
    "audio_s",
    "runs",
    "realtime_factor",
    "realtime_factor_min",
    "realtime_factor_max",
    "rtf",
    "rtf_min",
    "rtf_max",
    "wall_s",
    "first_audio_ms",
    "first_audio_ms_min",
    "first_audio_ms_max",
    "cold_realtime_factor",
    "cold_rtf",
    "cold_first_audio_ms",
    "flow_lm_transformer_ms",
    "flow_head_ms",
    "mimi_transformer_ms",
    "seanet_ms",
    "flow_lm_step_ms",
    "mimi_decode_ms",
    "stage_method",
    "text_prefill_ms",
    "text_tokens",
    "voice_encode_ms",
    "voice_encode_cold_ms",
    "voice_seconds",
    "load_ms",
    "import_ms",
    "peak_rss_mb",
    "peak_rss_voice_clone_mb",
    "model_file_mb",
    "model_file_format",
    "gflop_per_frame",
    "gflops_achieved",
    "gflops_flow_lm_transformer",
    "gflops_flow_head",
    "gflops_mimi_transformer",
    "gflops_seanet",
    "roof_gflops",
    "roof_fraction",
    "roof_method",
)
# Metrics compared as ours / reference (realtime factor: higher is better; the rest: lower is better).
RATIO_METRICS = (
    "realtime_factor",
    "first_audio_ms",
    "flow_lm_transformer_ms",
    "flow_head_ms",
    "mimi_transformer_ms",
    "seanet_ms",
    "text_prefill_ms",
    "voice_encode_ms",
    "load_ms",
    "import_ms",
    "peak_rss_mb",
    "model_file_mb",
)


def _median(v: Sequence[float]) -> float:
    return float(statistics.median(v)) if v else math.nan


def _safe_div(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) and b > 0 else math.nan


def make_record(
    raw: Mapping[str, Any],
    *,
    variant: str,
    frames: int,
    flops: FlopCount,
    import_ms: float,
    text_tokens: int,
    voice_seconds: float,
) -> dict[str, object]:
    """A benchmark record (RECORD_FIELDS) from one child's raw result."""
    audio = float(raw["audio_s"])
    totals = [float(x) for x in raw["runs_total_s"]]
    firsts = [float(x) * 1e3 for x in raw["runs_first_s"]]
    warm_t, warm_f = totals[1:] or totals, firsts[1:] or firsts
    rf = [audio / t for t in warm_t]
    wall = _median(warm_t)
    rec: dict[str, object] = {
        "backend": raw["backend"],
        "variant": variant,
        "threads": raw["threads"],
        "mimi_threads": raw["mimi_threads"],
        "cores": raw.get("cores"),
        "weights_kind": raw.get("weights_kind"),
        "frames": frames,
        "audio_s": audio,
        "runs": len(warm_t),
        "realtime_factor": audio / wall,
        "realtime_factor_min": min(rf),
        "realtime_factor_max": max(rf),
        "rtf": wall / audio,
        "rtf_min": min(warm_t) / audio,
        "rtf_max": max(warm_t) / audio,
        "wall_s": wall,
        "first_audio_ms": _median(warm_f),
        "first_audio_ms_min": min(warm_f),
        "first_audio_ms_max": max(warm_f),
        "cold_realtime_factor": audio / totals[0],
        "cold_rtf": totals[0] / audio,
        "cold_first_audio_ms": firsts[0],
    }
    for key in ("flow_lm_step_ms", "mimi_decode_ms", "text_prefill_ms", "stage_method", "roof_method", "ggml_threads"):
        rec[key] = raw.get(key)
    for s in STAGES:
        rec[f"{s}_ms"] = raw.get(f"{s}_ms")
    rec.update(
        text_tokens=text_tokens,
        voice_encode_ms=_median([float(x) * 1e3 for x in raw["voice_encode_s"]]),
        voice_encode_cold_ms=float(raw["voice_encode_cold_s"]) * 1e3,
        voice_seconds=voice_seconds,
        load_ms=float(raw["load_s"]) * 1e3,
        import_ms=import_ms,
        peak_rss_mb=raw["peak_rss_mb"],
        peak_rss_voice_clone_mb=raw["peak_rss_voice_clone_mb"],
        model_file_mb=float(raw["model_file_bytes"]) / 1e6,
        model_file_format=raw.get("model_file_format"),
    )
    stage_flops = {
        "flow_lm_transformer": flops.flow_lm_transformer,
        "flow_head": flops.flow_head,
        "mimi_transformer": flops.mimi_transformer,
        "seanet": flops.seanet,
    }
    roof = float(raw.get("roof_gflops") or math.nan)
    achieved = flops.per_run / wall / 1e9
    rec.update(
        gflop_per_frame=flops.per_frame / 1e9,
        gflops_achieved=achieved,
        **{f"gflops_{s}": _safe_div(f, float(rec[f"{s}_ms"] or math.nan) * 1e-3) / 1e9 for s, f in stage_flops.items()},
        roof_gflops=roof,
        roof_fraction=_safe_div(achieved, roof),
    )
    for key in (
        "peak_rss_generation_mb",
        "roof_f32_gflops",
        "roof_f16_gflops",
        "omp_wait_policy",
        "quantization_backend",
        "torch_threads",
    ):
        if key in raw:
            rec[key] = raw[key]
    return rec


def ratios(records: Sequence[Mapping[str, Any]]) -> list[dict[str, object]]:
    """ours / reference for every thread count, set of CPUs and reference variant."""
    out = []
    for ours in (r for r in records if r["backend"] == "pocket-ggml"):
        for ref in records:
            if ref["backend"] != "pocket-tts" or (ref["threads"], ref["cores"]) != (ours["threads"], ours["cores"]):
                continue
            row: dict[str, object] = {
                "threads": ours["threads"],
                "cores": ours["cores"],
                "reference": ref["variant"],
                "ours": ours["variant"],
            }
            for m in RATIO_METRICS:
                row[m] = _safe_div(float(ours[m]), float(ref[m]))
            out.append(row)
    return out


# ----------------------------------------------------------------------------------------- markdown
def _num(x: object, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{float(x):.{digits}f}"


def _spread(r: Mapping[str, Any], key: str, digits: int) -> str:
    lo, hi = r.get(f"{key}_min"), r.get(f"{key}_max")
    if r.get("runs", 1) == 1 or lo is None:
        return _num(r[key], digits)
    return f"{_num(r[key], digits)} ({_num(lo, digits)}-{_num(hi, digits)})"


_ROWS: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("**realtime factor** (audio s / wall s), median (min-max)", lambda r: _spread(r, "realtime_factor", 2)),
    (
        "ggml threads run: FlowLM / Mimi decoder / prompts",
        lambda r: " / ".join(map(str, r["ggml_threads"])) if r.get("ggml_threads") else f"torch {r['threads']}",
    ),
    ("RTF (wall s / audio s)", lambda r: _spread(r, "rtf", 3)),
    ("first audio ms (text submitted -> first chunk)", lambda r: _spread(r, "first_audio_ms", 1)),
    (
        "cold: realtime factor / first audio ms",
        lambda r: f"{_num(r['cold_realtime_factor'], 2)} / {_num(r['cold_first_audio_ms'])}",
    ),
    ("FlowLM transformer ms/frame", lambda r: _num(r["flow_lm_transformer_ms"], 2)),
    ("flow head ms/frame", lambda r: _num(r["flow_head_ms"], 2)),
    ("Mimi transformer ms/frame", lambda r: _num(r["mimi_transformer_ms"], 2)),
    ("SEANet ms/frame", lambda r: _num(r["seanet_ms"], 2)),
    (
        "FlowLM step / Mimi decode call ms/frame",
        lambda r: f"{_num(r['flow_lm_step_ms'], 2)} / {_num(r['mimi_decode_ms'], 2)}",
    ),
    ("text prefill ms", lambda r: f"{_num(r['text_prefill_ms'])} ({r['text_tokens']} tok)"),
    ("voice encode ms (warm / cold)", lambda r: f"{_num(r['voice_encode_ms'])} / {_num(r['voice_encode_cold_ms'])}"),
    ("load ms / import ms", lambda r: f"{_num(r['load_ms'])} / {_num(r['import_ms'])}"),
    (
        "peak RSS MB, voice cached (whole process / from the first run on); cloning the voice",
        lambda r: (
            f"{_num(r['peak_rss_mb'], 0)} / {_num(r.get('peak_rss_generation_mb'), 0)}; "
            f"{_num(r.get('peak_rss_voice_clone_mb'), 0)}"
        ),
    ),
    ("model file MB", lambda r: f"{_num(r['model_file_mb'])} ({r['model_file_format']})"),
    (
        "GFLOP/s achieved / roof (fraction)",
        lambda r: f"{_num(r['gflops_achieved'])} / {_num(r['roof_gflops'])} ({_num(r['roof_fraction'], 2)})",
    ),
    (
        "GFLOP/s FlowLM tr / head / Mimi tr / SEANet",
        lambda r: " / ".join(_num(r[f"gflops_{s}"]) for s in STAGES),
    ),
)


def _column(r: Mapping[str, Any], swept_cores: bool) -> str:
    t = f"{r['threads']}T" if r["threads"] == r["mimi_threads"] else f"{r['threads']}+{r['mimi_threads']}T"
    return f"{r['backend']} {r['variant']} {t}" + (f" {_cores(r)}" if swept_cores else "")


def _cores(r: Mapping[str, Any]) -> str:
    n = len(r.get("cores") or ())
    return f"{n} core" + ("s" if n != 1 else "")


def _load_line(st: Mapping[str, Any], hw: Mapping[str, Any]) -> str:
    start, end = st.get("load_average_start"), st.get("load_average_end")
    if not start:
        return "load average: unknown"
    line = f"load average (1 min) before / after: {start[0]:.2f} / {end[0] if end else math.nan:.2f}"
    if start[0] >= 0.5:
        line += f" on {hw['logical_cpus']} CPUs: other processes were running, expect noisy figures"
    return line


def markdown(doc: Mapping[str, Any]) -> str:
    """The document as markdown: context lines, the results table (metrics x configurations), the
    ratios table, and how each figure is measured."""
    records: list[Mapping[str, Any]] = doc["results"]
    hw: Mapping[str, Any] = doc["hardware"]
    ver: Mapping[str, Any] = doc["versions"]
    model: Mapping[str, Any] = doc["model"]
    st: Mapping[str, Any] = doc["settings"]
    feats = " ".join(k.upper() for k, v in hw["ggml_features"].items() if v)
    swept_cores = len({tuple(r.get("cores") or ()) for r in records}) > 1
    lines = [
        f"**pocket-bench**: {model['config']} {model['quant_mix']} ({model['weights_kind']} weights), "
        f"{st['frames']} frames = {_num(records[0]['audio_s'], 2) if records else '-'} s audio, voice cached, "
        f"{st['runs']} warm run(s) after 1 cold",
        f"CPU: {hw['model']} ({hw['machine']}), {hw['logical_cpus']} logical / {hw['physical_cores']} physical, "
        f"measured on CPUs {st['cores']}; ISA: {' '.join(hw['isa_flags'])}; ggml: {feats}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v and k != "python_executable"),
        f"OMP_WAIT_POLICY={st['omp_wait_policy'] or '(unset)'}; threads = ggml threads of FlowLM and of Mimi "
        "(torch.set_num_threads for the reference, shared by its FlowLM and Mimi threads)",
        _load_line(st, hw),
        *([f"**SLOW BUILD**: {hw['ggml_slow_build']}"] if hw.get("ggml_slow_build") else []),
        "",
        "| metric | " + " | ".join(_column(r, swept_cores) for r in records) + " |",
        "|---|" + "---:|" * len(records),
    ]
    for label, fn in _ROWS:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in records) + " |")
    rs: list[Mapping[str, Any]] = doc.get("ratios") or []
    if rs:
        lines += [
            "",
            "ours / reference (realtime factor: higher is better; times, memory, size: lower is better)",
            "",
            "| threads | cores | vs | " + " | ".join(RATIO_METRICS) + " |",
            "|---|---|---|" + "---:|" * len(RATIO_METRICS),
        ]
        for row in rs:
            cells = " | ".join(_num(row[m], 2) for m in RATIO_METRICS)
            cores = len(row.get("cores") or ())
            lines.append(f"| {row['threads']} | {cores} | pocket-tts {row['reference']} | {cells} |")
    methods = {str(r["stage_method"]) for r in records}
    roofs = {f"{r['backend']}: {r['roof_method']}" for r in records}
    lines += [
        "",
        "realtime factor = audio s / wall s; RTF = wall s / audio s; wall = text submitted -> last chunk, "
        "through generate_audio_stream (start-up, load and voice encoding excluded); cold = first run after load.",
        "stage ms: " + " || ".join(sorted(methods)),
        "GFLOP/s: FLOPs counted from the config (2 x weights touched per row, attention 4 x keys x width), "
        "achieved = FLOPs of a run / wall; roof at the column's thread count: " + " || ".join(sorted(roofs)),
        "peak RSS: VmHWM (getrusage where Linux lacks it) of each configuration's own processes: voice cached = "
        "import, load, the saved voice state loaded, runs, read before the profiling pass; from the first run on: "
        "VmHWM reset before the "
        "first run (memory still held counts); cloning = the process that loads and encodes the voice from the wav; "
        "import: the import statement in a fresh interpreter (pocket-tts: at the start of each of its children).",
    ]
    return "\n".join(lines)
