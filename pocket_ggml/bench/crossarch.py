"""The same synthesis on two machines, compared: x86 against aarch64 under qemu (issue #7).

`synth` quantizes the seeded synthetic checkpoints (seed 0) of the given configs to the given types
on this machine, clones the voice from a wav's first seconds with our Mimi encoder (saving each
model's voice state), and synthesizes a fixed text at temperature 0 with one ggml thread; it writes
the audio and a `result.json` (frame count, GGUF sha256, CPU features of the ggml build). `compare`
reads two such folders and checks, per model: the same number of frames, and the audio SNR of one
against the other (x86 is the reference side) at or above the bar of its type. `budget` runs a
command in a memory cgroup and reports whether it was killed and how much memory it used.
scripts/check-aarch64.sh drives all three.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

from pocket_ggml.bench.hardware import ggml_features
from pocket_ggml.quantize.config import load_released_config
from pocket_ggml.quantize.convert import convert, read_tokenizer
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.voices.state import save_voice_state

SEED = 0
TEXT = "The harbour lights came on one by one as the fishing boats returned."
DEFAULT_CONFIGS = ("english_2m_2026-10", "english")
DEFAULT_TYPES = ("F32", "Q8_0", "Q4_K_M")
# Audio SNR of the aarch64 run against the x86 run: F32 differs only by summation order and FMA
# contraction; quantized types also by the ARM kernels (dotprod/i8mm) and by activations quantized to
# 8 bits, where one rounding flipped by a last-bit difference is carried through every later frame.
# A type without a fixed bar must differ from x86 less than quantization itself changes the x86 audio
# (its SNR against x86 F32): a wrong ARM kernel would fail that, a flipped rounding does not.
MIN_SNR_DB = {"F32": 60.0, "Q8_0": 40.0}
SAMPLES_PER_FRAME = 1920  # 24 kHz / 12.5 Hz


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snr_db(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    err = float(np.sum((np.asarray(ours, np.float64) - ref) ** 2))
    return math.inf if err == 0 else float(10 * np.log10(np.sum(ref**2) / err))


def synthesize(config: str, type_: str, out: Path, tokenizer: Path, voice: Path, voice_seconds: float) -> dict:
    from pocket_ggml import TTSModel
    from pocket_ggml.voices.audio import read_audio

    cfg = load_released_config(config)
    gguf = out / f"{config}-{type_}.gguf"
    t0 = time.perf_counter()
    convert(cfg, gguf, get_mix(type_), read_tokenizer(tokenizer, cfg.flow_lm.n_bins), synthetic_seed=SEED)
    t1 = time.perf_counter()
    model = TTSModel.load_model(gguf, threads=1, mimi_threads=1, temp=0.0)
    try:
        wav, rate = read_audio(voice)
        # the encoder's cost grows with the prompt, and emulation multiplies it: a prefix is enough here
        state = model.get_state_for_audio_prompt(wav[: int(voice_seconds * rate)], rate)
        save_voice_state(state, out / f"{config}-{type_}-voice.safetensors")
        audio = model.generate_audio(state, TEXT)
    finally:
        model.close()
    t2 = time.perf_counter()
    np.save(out / f"{config}-{type_}.npy", audio)
    return {
        "config": config,
        "type": type_,
        "frames": len(audio) // SAMPLES_PER_FRAME,
        "samples": len(audio),
        "gguf_sha256": _sha256(gguf),
        "quantize_s": round(t1 - t0, 2),
        "synthesize_s": round(t2 - t1, 2),
    }


@click.group()
def main() -> None:
    """Cross-architecture check of pocket-ggml (run by scripts/check-aarch64.sh)."""


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--voice", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--configs", default=",".join(DEFAULT_CONFIGS), show_default=True)
@click.option("--types", default=",".join(DEFAULT_TYPES), show_default=True)
@click.option("--voice-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True, help="prompt prefix used")
def synth(out: Path, tokenizer: Path, voice: Path, configs: str, types: str, voice_seconds: float) -> None:
    """Quantize and synthesize every config x type here; write the audio and result.json."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for config in configs.split(","):
        for type_ in types.split(","):
            r = synthesize(config, type_, out, tokenizer, voice, voice_seconds)
            click.echo(f"{config} {type_}: {r['frames']} frames, {r['synthesize_s']} s", err=True)
            results.append(r)
    info = {"machine": platform.machine(), "ggml_features": ggml_features(), "text": TEXT, "results": results}
    (out / "result.json").write_text(json.dumps(info, indent=1))


def compare_runs(reference: Path, other: Path) -> tuple[list[dict], bool]:
    """Rows of the comparison of `other` against `reference`, and whether every row passes."""
    ref = {(r["config"], r["type"]): r for r in json.loads((reference / "result.json").read_text())["results"]}
    got = {(r["config"], r["type"]): r for r in json.loads((other / "result.json").read_text())["results"]}
    rows, ok = [], set(ref) == set(got)
    for key in sorted(ref.keys() & got.keys()):
        a, b = ref[key], got[key]
        same_frames = a["frames"] == b["frames"] and a["samples"] == b["samples"]
        x86, theirs = np.load(reference / f"{key[0]}-{key[1]}.npy"), np.load(other / f"{key[0]}-{key[1]}.npy")
        n = min(len(x86), len(theirs))  # a length mismatch fails on its own: the SNR is of what both have
        snr = snr_db(theirs[:n], x86[:n])
        if key[1] in MIN_SNR_DB:
            bar, bar_kind = MIN_SNR_DB[key[1]], "fixed"
        else:
            f32 = np.load(reference / f"{key[0]}-F32.npy")
            n = min(len(f32), len(x86))
            bar = snr_db(x86[:n], f32[:n])
            bar_kind = "x86 F32 vs x86 " + key[1]
        same_gguf = a["gguf_sha256"] == b["gguf_sha256"]
        # F32 is a copy of the synthetic weights: the bytes must be the same on both machines
        passed = same_frames and snr >= bar and (same_gguf or key[1] != "F32")
        ok &= passed
        rows.append(
            {
                "config": key[0],
                "type": key[1],
                "frames": f"{a['frames']} / {b['frames']}",
                "snr_db": snr,
                "bar_db": bar,
                "bar_kind": bar_kind,
                "same_gguf": same_gguf,
                "synthesize_s": f"{a['synthesize_s']} / {b['synthesize_s']}",
                "passed": passed,
            }
        )
    return rows, ok


@main.command()
@click.argument("reference", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("other", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--label", default="other", help="name of the OTHER side in the table")
def compare(reference: Path, other: Path, label: str) -> None:
    """Compare OTHER's synth results with REFERENCE's; exit 1 if any model fails its bar."""
    rows, ok = compare_runs(reference, other)
    features = json.loads((other / "result.json").read_text())["ggml_features"]
    active = ", ".join(k for k, v in sorted(features.items()) if v) or "none"
    click.echo(f"\n{label}: ggml CPU features {active}")
    click.echo(f"| model | frames x86 / {label} | audio SNR dB | bar dB | same GGUF bytes | synth s x86 / {label} | |")
    click.echo("|---|---|---:|---|---|---|---|")
    for r in rows:
        snr = "identical" if math.isinf(r["snr_db"]) else f"{r['snr_db']:.1f}"
        bar = f"{r['bar_db']:.1f}" + ("" if r["bar_kind"] == "fixed" else f" ({r['bar_kind']})")
        click.echo(
            f"| {r['config']} {r['type']} | {r['frames']} | {snr} | >= {bar} | "
            f"{'yes' if r['same_gguf'] else 'no'} | {r['synthesize_s']} | {'ok' if r['passed'] else 'FAILED'} |"
        )
    if not ok:
        raise SystemExit(f"{label}: results differ from x86 beyond the bars above (or models are missing)")


class _MemoryCgroup:
    """A fresh cgroup with a memory limit (cgroup v2 or the v1 memory controller); needs root."""

    def __init__(self, limit_bytes: int):
        name = f"pocket-ggml-budget-{os.getpid()}"
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists() and "memory" in v2.read_text().split():
            self.path, self.v2 = Path("/sys/fs/cgroup") / name, True
        elif Path("/sys/fs/cgroup/memory").is_dir():
            self.path, self.v2 = Path("/sys/fs/cgroup/memory") / name, False
        else:
            raise click.ClickException("no cgroup memory controller on this machine")
        try:
            self.path.mkdir()
            limit = "memory.max" if self.v2 else "memory.limit_in_bytes"
            (self.path / limit).write_text(str(limit_bytes))
            if not self.v2:  # no swap to escape to
                swap = self.path / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(limit_bytes))
        except OSError as e:
            raise click.ClickException(f"cannot make a memory cgroup at {self.path} (root needed): {e}") from None

    def add_self(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        p = self.path / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(p.read_text()) if p.exists() else None

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--limit-mb", type=click.IntRange(16), required=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def budget(limit_mb: int, command: tuple[str, ...]) -> None:
    """Run COMMAND in a memory cgroup of LIMIT_MB; exit 1 if it fails or the kernel kills anything."""
    group = _MemoryCgroup(limit_mb << 20)
    try:
        proc = subprocess.run(command, check=False, preexec_fn=group.add_self)
        kills = group.oom_kills()
        peak = group.peak_bytes()
    finally:
        group.remove()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    charged = "n/a" if peak is None else f"{peak / 2**20:.1f} MB (incl. page cache)"
    click.echo(
        f"memory budget {limit_mb} MB: exit {proc.returncode}, OOM kills {kills}, peak RSS {rss:.1f} MB, "
        f"cgroup peak {charged}: {' '.join(command)}"
    )
    if proc.returncode != 0 or kills:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
