"""Soak test: stream many minutes of audio through `TTSModel` and log the process RSS each minute.

    python -m pocket_ggml.bench.soak --minutes 30 [--model M.gguf] [--csv rss.csv]

A long-running stream must hold its memory: the Mimi decoder's attention state is a ring bounded by
its context, the FlowLM cache restarts from the voice state at every text chunk, and nothing in
Python accumulates per frame. The run fails (exit 1) when RSS after the warm-up grows by more than
`--max-growth` (5 %), or when the runtime's state tensors change size.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

WARMUP_MINUTES = 2
SENTENCES = [
    "The harbour lights came on one by one as the fishing boats returned.",
    "Nobody expected the old clock in the tower to start ticking again.",
    "She wrote three letters that evening, and sent none of them.",
    "In the morning the fog lifted and the whole valley was suddenly visible.",
    "Numbers like 3.14 and 2,718 are read aloud just as any other words.",
]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class SoakResult:
    minutes: list[float] = field(default_factory=list)  # audio minutes at each sample
    rss: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    # after the warm-up: (Mimi state elements, FlowLM cache capacity in rows)
    state_sizes: set[tuple[int, int]] = field(default_factory=set)

    @property
    def growth(self) -> float:
        """RSS growth after the warm-up: (max after warm-up - at warm-up end) / at warm-up end."""
        warm_end = min(WARMUP_MINUTES, self.minutes[-1] / 5)
        warm = [r for m, r in zip(self.minutes, self.rss) if m >= warm_end] or self.rss
        return (max(warm) - warm[0]) / warm[0]


def soak(model, voice, minutes: float, on_sample=None) -> SoakResult:
    """Generate `minutes` of audio from an endless text; sample RSS after every audio minute."""
    result = SoakResult()
    rate = model.sample_rate
    samples, next_minute, t0 = 0, 0.0, time.perf_counter()
    text_stream = itertools.cycle(" ".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(len(SENTENCES)))
    for text in text_stream:
        for chunk in model.generate_audio_stream(voice, text):
            samples += chunk.size
            if samples / rate / 60 >= next_minute:
                rt = model._rt
                if samples / rate / 60 >= min(WARMUP_MINUTES, minutes / 5):
                    mimi_elements = sum(int(np.prod(rt.mimi.state.shape(n))) for n in rt.mimi.state)
                    result.state_sizes.add((mimi_elements, rt.flow_lm.kv.capacity))
                result.minutes.append(samples / rate / 60)
                result.rss.append(rss_bytes())
                result.wall_s.append(time.perf_counter() - t0)
                if on_sample:
                    on_sample(result)
                next_minute += 1.0 if minutes >= 2 else minutes / 10
            if samples / rate / 60 >= minutes:
                return result
    return result


@click.command()
@click.option("--minutes", type=float, default=30.0, show_default=True, help="minutes of audio to stream")
@click.option("--model", help="pocket-tts GGUF (default: the synthetic english model)")
@click.option("--voice", help="voice (default: the model's first stored voice)")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--max-growth", type=float, default=0.05, show_default=True, help="allowed RSS growth after warm-up")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="write minute,rss_mb,wall_s rows")
def main(minutes, model, voice, threads, max_growth, csv_path) -> None:
    from pocket_ggml import PocketError, TTSModel

    try:
        tts = TTSModel.load_model(model, threads=threads)
        state = tts.get_state_for_audio_prompt(voice or tts.voice_names[0])
    except (PocketError, IndexError) as e:
        click.echo(f"soak: error: {e or 'the model stores no voice: give --voice'}", err=True)
        sys.exit(2)

    def show(r: SoakResult) -> None:
        click.echo(
            f"audio {r.minutes[-1]:6.2f} min  rss {r.rss[-1] / 1e6:7.1f} MB  wall {r.wall_s[-1]:7.1f} s", err=True
        )

    r = soak(tts, state, minutes, show)
    if csv_path:
        Path(csv_path).write_text(
            "minute,rss_mb,wall_s\n"
            + "".join(f"{m:.3f},{b / 1e6:.2f},{w:.2f}\n" for m, b, w in zip(r.minutes, r.rss, r.wall_s))
        )
    click.echo(
        f"{r.minutes[-1]:.1f} min of audio in {r.wall_s[-1]:.0f} s; RSS start {r.rss[0] / 1e6:.1f} MB, "
        f"max {max(r.rss) / 1e6:.1f} MB, end {r.rss[-1] / 1e6:.1f} MB; growth after {WARMUP_MINUTES} min warm-up "
        f"{100 * r.growth:.2f} %; state sizes {sorted(r.state_sizes)}"
    )
    if r.growth > max_growth or len(r.state_sizes) > 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
