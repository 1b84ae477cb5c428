"""A pocket-bench report as a picture: the realtime factor of every configuration beside the
reference's, and where a frame's time goes (the stages, each alone, against the frame's wall time).

matplotlib is an optional extra (`pip install "pocket-ggml[plot]"`); `plot_report` raises
`PlotUnavailable` without it. It draws with matplotlib's object API on an Agg canvas: no pyplot, no
global backend, no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pocket_ggml.bench.report import STAGES
from pocket_ggml.errors import PlotUnavailable

STAGE_LABELS = {
    "flow_lm_transformer": "FlowLM transformer",
    "flow_head": "flow head",
    "mimi_transformer": "Mimi transformer",
    "seanet": "SEANet decoder",
}
STAGE_COLOURS = {
    "flow_lm_transformer": "#4c72b0",
    "flow_head": "#8fb0e0",
    "mimi_transformer": "#dd8452",
    "seanet": "#f3bb8c",
}
BACKEND_COLOURS = {
    ("pocket-ggml", None): "#2a9d55",
    ("pocket-tts", "fp32"): "#9a9a9a",
    ("pocket-tts", "int8"): "#5a5a5a",
}


def require_matplotlib() -> None:
    """Raise PlotUnavailable now, before a long benchmark, if the plot could not be drawn after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            'pocket-bench --plot needs matplotlib: pip install "pocket-ggml[plot]" (or matplotlib>=3.7)'
        ) from None


def _label(r: Mapping[str, Any]) -> str:
    threads = f"{r['threads']}T" if r["threads"] == r["mimi_threads"] else f"{r['threads']}+{r['mimi_threads']}T"
    name = "ours" if r["backend"] == "pocket-ggml" else "ref"
    return f"{name} {r['variant']}\n{threads} {len(r.get('cores') or ())}c"


def _colour(r: Mapping[str, Any]) -> str:
    key = (r["backend"], None if r["backend"] == "pocket-ggml" else r["variant"])
    return BACKEND_COLOURS.get(key, "#7f7f7f")


def _finite(x: object) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _ordered(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """By core count (most first), thread count, ours first, then the reference's variants."""
    return sorted(
        records,
        key=lambda r: (
            -len(r.get("cores") or ()),
            r["threads"],
            r["mimi_threads"],
            r["backend"] != "pocket-ggml",
            r["variant"],
        ),
    )


def plot_report(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Draw `doc` (pocket-bench's JSON document) into the PNG `path`, written atomically."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pocket_ggml.files import atomic_write

    records = _ordered(doc["results"])
    if not records:
        raise PlotUnavailable("the report holds no results to plot")
    model, hw, st = doc["model"], doc["hardware"], doc["settings"]
    fig = Figure(figsize=(12, 5.6 + 0.25 * len(records)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.25])
    title = (
        f"pocket-bench: {model['config']} {model['quant_mix']} ({model['weights_kind']} weights), "
        f"{st['frames']} frames, {st['runs']} warm run(s); {hw.get('model', '?')} ({hw.get('machine', '?')}), "
        f"CPUs {st.get('cores')}"
    )
    if hw.get("ggml_slow_build"):
        title += "\nSLOW ggml BUILD (no LLAMAFILE): see the report's header"
    fig.suptitle(title, fontsize=10)

    # realtime factor per configuration, median with the min-max of the warm runs
    labels = [_label(r) for r in records]
    values = [_finite(r["realtime_factor"]) for r in records]
    lo = [v - _finite(r.get("realtime_factor_min", v)) for v, r in zip(values, records)]
    hi = [_finite(r.get("realtime_factor_max", v)) - v for v, r in zip(values, records)]
    xs = range(len(records))
    left.bar(xs, values, color=[_colour(r) for r in records], yerr=[lo, hi], capsize=4, edgecolor="black", lw=0.5)
    for x, v, h in zip(xs, values, hi):
        if math.isfinite(v):
            top = v + (h if math.isfinite(h) else 0.0)
            left.annotate(f"{v:.2f}x", (x, top), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
    left.axhline(1.0, color="#c0392b", lw=1, ls="--")
    left.text(
        -0.45,
        1.0,
        "realtime",
        color="#c0392b",
        ha="left",
        va="bottom",
        fontsize=8,
        bbox={"fc": "white", "ec": "none", "pad": 1},
    )
    # more than six bars do not fit their labels side by side
    crowded = len(records) > 6
    left.set_xticks(list(xs), labels, fontsize=8, rotation=60 if crowded else 0, ha="right" if crowded else "center")
    left.set_ylabel("realtime factor (audio s / wall s, higher is faster)")
    left.set_title("speed per configuration (median, min-max of the warm runs)", fontsize=10)
    tops = [v + h for v, h in zip(values, hi) if math.isfinite(v) and math.isfinite(h)]
    left.set_ylim(0, max([*tops, 1.0]) * 1.12)
    left.grid(axis="y", alpha=0.3)

    # where a frame's time goes: the stages (each measured alone) stacked, a stream's wall time per frame
    ys = list(range(len(records)))[::-1]
    bottoms = [0.0] * len(records)
    for stage in STAGES:
        widths = [_finite(r.get(f"{stage}_ms")) for r in records]
        widths = [w if math.isfinite(w) else 0.0 for w in widths]
        right.barh(
            ys,
            widths,
            left=bottoms,
            color=STAGE_COLOURS[stage],
            edgecolor="white",
            lw=0.5,
            height=0.6,
            label=STAGE_LABELS[stage],
        )
        bottoms = [b + w for b, w in zip(bottoms, widths)]
    frame_ms = [_finite(r["wall_s"]) * 1e3 / r["frames"] for r in records]
    right.scatter(frame_ms, ys, marker="D", color="black", zorder=3, label="wall time per frame in a stream")
    for y, b, f in zip(ys, bottoms, frame_ms):
        end = max(b, f) if math.isfinite(f) else b
        text = f"stages {b:.1f} ms" + (f", stream {f:.1f} ms" if math.isfinite(f) else "")
        right.annotate(text, (end, y), xytext=(6, 0), textcoords="offset points", fontsize=8, va="center")
    right.set_yticks(ys, [label.replace("\n", " ") for label in labels], fontsize=8)
    right.set_xlabel("ms per frame (a frame is 80 ms of audio; lower is faster)")
    right.set_title("where a frame's time goes (each stage alone, stacked)", fontsize=10)
    ends = [max(b, f) if math.isfinite(f) else b for b, f in zip(bottoms, frame_ms)]
    right.set_xlim(0, max([*ends, 1.0]) * 1.6)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    right.grid(axis="x", alpha=0.3)

    out = Path(path)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
