"""What word timestamps add to a FlowLM step: the same steps with and without the attention rows.

Usage: python scripts/timestamp_step_cost.py [--config english] [--quant Q4_K_M] [--steps 60] [--rounds 7]

A synthetic model of the config is written to a temporary folder; a voice prompt of ~7 s of rows
and a 14-token text fill the cache as in a stream. Each round runs `--steps` steps without, then
with, the config's timestamp heads (order swapped every round), from the same cache state. The
FlowLM computes on one thread, the caller's: the figure is the thread's CPU time per step (what other
processes on the machine take is not counted), the median over rounds, and the overhead their ratio;
the fastest round's wall time is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pocket_ggml.format.config import load_released_config
from pocket_ggml.format.tokenizer import read_tokenizer
from pocket_ggml.quantize.convert import convert
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.runtime.flow_lm import TextAttention
from pocket_ggml.runtime.model import PocketRuntime
from pocket_ggml.runtime.timestamps import timestamp_heads

TEXT = "Hello world, this is a test of the pocket runtime."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="english")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokenizer", default=str(Path(__file__).resolve().parents[2] / "shared/assets/tokenizer.model"))
    args = ap.parse_args()
    cfg = load_released_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(tmp) / "model.gguf"
        convert(cfg, gguf, get_mix(args.quant), read_tokenizer(args.tokenizer, cfg.flow_lm.n_bins), synthetic_seed=0)
        rt = PocketRuntime(gguf)
        rng = np.random.default_rng(0)
        voice = rt.voice_state(rng.standard_normal((87, cfg.mimi.speaker_dim)).astype(np.float32))
        tokens, _ = rt.tokens(TEXT)
        flm = rt.flow_lm
        heads = timestamp_heads(args.config)

        def run(with_timestamps: bool) -> float:
            flm.restore(voice, extra_rows=len(tokens) + args.steps)
            start = flm.offset
            flm.text_prompt(tokens)
            attention = TextAttention(heads, (start, flm.offset)) if with_timestamps else None
            latent = None
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(args.steps):
                latent = flm.step(latent, attention=attention).latent
            return (time.thread_time() - c0) / args.steps, (time.perf_counter() - t0) / args.steps

        run(False), run(True)  # warm-up: weights paged in, graphs built once
        plain, tapped = [], []
        for r in range(args.rounds):
            for with_timestamps in (r % 2 == 1, r % 2 == 0):
                (tapped if with_timestamps else plain).append(run(with_timestamps))
        rt.close()
    p, t = (statistics.median(c for c, _ in runs) * 1e3 for runs in (plain, tapped))
    pw, tw = (min(w for _, w in runs) * 1e3 for runs in (plain, tapped))
    print(
        f"{args.config} {args.quant}, {len(heads)} heads, {len(tokens)} text rows, {args.steps} steps x "
        f"{args.rounds} rounds: step CPU time {p:.3f} ms without timestamps, {t:.3f} ms with "
        f"({(t / p - 1) * 100:+.2f} %); fastest round wall {pw:.3f} / {tw:.3f} ms ({(tw / pw - 1) * 100:+.2f} %)"
    )


if __name__ == "__main__":
    main()
