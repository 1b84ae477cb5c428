"""The same synthesis on two machines, compared: x86 against aarch64 under qemu (issue #7).

`synth` quantizes the seeded synthetic checkpoints (seed 0) of the given configs to the given types
on this machine, clones the voice from a wav's first seconds with our Mimi encoder (saving each
model's voice state), and synthesizes a fixed text at temperature 0 with one ggml thread (the free
run: the whole product on this machine). It then runs a teacher-forced pass on the reference side's
files (`--teacher`, the x86 output; on x86 itself, its own): the reference's GGUF and voice state,
every FlowLM step fed the reference's previous latent, and the Mimi decoder fed the reference's
latents. It writes the audio, the latents and a `result.json` (frame counts, GGUF sha256, CPU
features of the ggml build); on the reference side also each quantized type's SNR against F32, and
the noise floor: the free run again from the voice state with a 1e-7 relative perturbation. With
`--teachers-gguf` a model runs on the reference side's GGUF instead of one quantized here.

`compare` checks, per model: the same number of frames, F32's GGUF bytes equal, and the SNR against
the reference side of the free-running audio, the teacher-forced latents and the teacher-forced audio:
>= 60 dB for F32; for a quantized type >= 40 dB, or, where quantization itself moves that measure
more on x86 (the type against F32, computed there), that SNR less 6 dB. ggml's quantized matmuls round
the activations to 8 bits, so a last-bit difference (summation order, FMA, another kernel) now and
then flips a rounding, and the autoregressive run carries it on: on x86 alone, a 1e-7 perturbation of
the voice state moves the synthetic english Q8_0 audio to ~38 dB (the "noise floor" reported).

`budget` runs a command in a memory cgroup and reports whether it was killed and how much memory it
used. scripts/check-aarch64.sh drives all three.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

from pocket_ggml.bench.hardware import ggml_features
from pocket_ggml.format.config import load_released_config
from pocket_ggml.format.tokenizer import read_tokenizer
from pocket_ggml.quantize.convert import convert
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.voices.state import save_voice_state

SEED = 0
TEXT = "The harbour lights came on one by one as the fishing boats returned."
DEFAULT_CONFIGS = ("english_2m_2026-10", "english")
DEFAULT_TYPES = ("F32", "Q8_0", "Q4_K_M")
# SNR bars against the x86 side. F32 differs only by summation order and FMA contraction. A quantized
# type: MIN_SNR_DB, or where quantization itself moves the x86 output more (its SNR against x86 F32 on
# the same measure), that SNR less QUANTIZED_MARGIN_DB: the ARM build may differ from x86 by at most
# twice (in amplitude) what the quantization does.
MIN_SNR_F32_DB = 60.0
MIN_SNR_DB = 40.0
QUANTIZED_MARGIN_DB = 6.0
FLOOR_PERTURBATION = 1e-7  # relative, on the voice state, for the reference side's noise floor
MEASURES = {"": "free-running audio", "-tf-latents": "teacher-forced latents", "-tf": "teacher-forced audio"}
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


def _single_chunk(runtime, text: str) -> str:
    from pocket_ggml.runtime.text import MAX_TOKENS_PER_CHUNK, split_into_best_sentences

    chunks = split_into_best_sentences(runtime.tokenizer, text, runtime.config.text, MAX_TOKENS_PER_CHUNK)
    if len(chunks) != 1:
        raise click.ClickException(f"the check's text must be one chunk, got {len(chunks)}")
    return chunks[0]


def teacher_forced(gguf: Path, voice_state: Path, text: str, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latents each FlowLM step predicts from the teacher's previous latent, audio the Mimi decoder
    makes of the teacher's latents), on the model `gguf` from `voice_state`, at temperature 0."""
    from pocket_ggml.runtime.generate import estimate_max_frames
    from pocket_ggml.runtime.model import PocketRuntime
    from pocket_ggml.voices.state import load_voice_state

    rt = PocketRuntime(gguf, threads=1, mimi_threads=1)
    try:
        tokens, _ = rt.tokens(_single_chunk(rt, text))
        noise = np.zeros(rt.config.mimi.latent_dim, np.float32)
        # the cache as large as the free run makes it: its capacity sets how many (masked) keys are summed
        max_frames = max(len(teacher), estimate_max_frames(len(tokens), rt.config.mimi.frame_rate))
        rt.flow_lm.restore(load_voice_state(voice_state).snapshot, extra_rows=len(tokens) + 1 + max_frames)
        # the first step as the free run makes it: with the text, in one call (generate_latents)
        predicted = [rt.flow_lm.text_prompt_and_step(tokens, noise).latent]
        for i in range(1, len(teacher)):
            predicted.append(rt.flow_lm.step(teacher[i - 1], noise).latent)
        rt.mimi.reset()
        audio = np.concatenate([rt.mimi.decode(latent[None, :]) for latent in teacher])
    finally:
        rt.close()
    return np.stack(predicted), audio


def free_run_latents(model, voice) -> np.ndarray:
    """The latents `model.generate_audio(voice, TEXT)` decodes, at temperature 0."""
    rt = model._rt  # the runtime under TTSModel: the API does not hand out latents
    zero = np.zeros(rt.config.mimi.latent_dim, np.float32)
    frames = rt.frames(voice.snapshot, _single_chunk(rt, TEXT), model._settings, lambda: zero)
    return np.stack([f.latent for f in frames])


def noise_floor_db(model, voice, audio: np.ndarray) -> float:
    """SNR of the free run from the voice state perturbed by FLOOR_PERTURBATION (relative) against `audio`."""
    from pocket_ggml.voices.state import VoiceState

    rng = np.random.default_rng(SEED)
    snap = voice.snapshot

    def perturbed(a: np.ndarray) -> np.ndarray:
        return (a * (1 + FLOOR_PERTURBATION * rng.standard_normal(a.shape))).astype(a.dtype)

    moved = model.generate_audio(VoiceState(dataclasses.replace(snap, k=perturbed(snap.k), v=perturbed(snap.v))), TEXT)
    n = min(len(moved), len(audio))
    return snr_db(moved[:n], audio[:n]) if len(moved) == len(audio) else -math.inf


def quantization_snr_db(out: Path, config: str, type_: str) -> dict[str, float]:
    """What quantization does to each measure here: `type_`'s output against F32's (free-running: each
    from its own voice; teacher-forced: F32 fed `type_`'s latents)."""
    q, f32 = f"{config}-{type_}", f"{config}-F32"
    latents, audio = teacher_forced(
        out / f"{f32}.gguf", out / f"{f32}-voice.safetensors", TEXT, np.load(out / f"{q}-latents.npy")
    )
    free, free_f32 = np.load(out / f"{q}.npy"), np.load(out / f"{f32}.npy")
    n = min(len(free), len(free_f32))
    return {
        "": snr_db(free[:n], free_f32[:n]),
        "-tf-latents": snr_db(np.load(out / f"{q}-tf-latents.npy"), latents),
        "-tf": snr_db(np.load(out / f"{q}-tf.npy"), audio),
    }


def synthesize(
    config: str,
    type_: str,
    out: Path,
    tokenizer: Path,
    voice: Path,
    voice_seconds: float,
    teacher: Path | None,
    teachers_gguf: bool = False,
) -> dict:
    """One model: quantized here (or, with `teachers_gguf`, the teacher's GGUF copied), its voice cloned,
    the free run and the teacher-forced pass."""
    from pocket_ggml import TTSModel
    from pocket_ggml.voices.audio import read_audio

    cfg = load_released_config(config)
    name = f"{config}-{type_}"
    gguf, voice_state = out / f"{name}.gguf", out / f"{name}-voice.safetensors"
    t0 = time.perf_counter()
    if teachers_gguf:
        if teacher is None:
            raise click.ClickException(f"{name}: the teacher's GGUF needs --teacher")
        shutil.copyfile(teacher / gguf.name, gguf)
    else:
        convert(cfg, gguf, get_mix(type_), read_tokenizer(tokenizer, cfg.flow_lm.n_bins), synthetic_seed=SEED)
    t1 = time.perf_counter()
    model = TTSModel.load_model(gguf, threads=1, mimi_threads=1, temp=0.0)
    floor = None
    try:
        wav, rate = read_audio(voice)
        # the encoder's cost grows with the prompt, and emulation multiplies it: a prefix is enough here
        state = model.get_state_for_audio_prompt(wav[: int(voice_seconds * rate)], rate)
        save_voice_state(state, voice_state)
        audio = model.generate_audio(state, TEXT)
        if teacher is None:  # the reference side: its latents are the teacher's, checked against its audio
            latents = free_run_latents(model, state)
            np.save(out / f"{name}-latents.npy", latents)
            floor = noise_floor_db(model, state, audio)
    finally:
        model.close()
    t2 = time.perf_counter()
    np.save(out / f"{name}.npy", audio)
    side = out if teacher is None else teacher
    predicted, tf_audio = teacher_forced(
        side / f"{name}.gguf", side / f"{name}-voice.safetensors", TEXT, np.load(side / f"{name}-latents.npy")
    )
    if teacher is None and not (np.array_equal(predicted, latents) and np.array_equal(tf_audio, audio)):
        raise click.ClickException(f"{name}: the teacher-forced pass does not reproduce this machine's free run")
    np.save(out / f"{name}-tf-latents.npy", predicted)
    np.save(out / f"{name}-tf.npy", tf_audio)
    return {
        "config": config,
        "type": type_,
        "frames": len(audio) // SAMPLES_PER_FRAME,
        "samples": len(audio),
        "gguf_sha256": _sha256(gguf),
        "noise_floor_db": floor,
        "quantize_s": round(t1 - t0, 2),
        "synthesize_s": round(t2 - t1, 2),
        "teacher_forced_s": round(time.perf_counter() - t2, 2),
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
@click.option(
    "--models",
    help="CONFIG:TYPE pairs, comma-separated, instead of every config x type (e.g. the emulated side's subset)",
)
@click.option("--voice-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True, help="prompt prefix used")
@click.option(
    "--teacher",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the reference side's synth output, for the teacher-forced pass [default: this machine is the reference]",
)
@click.option(
    "--teachers-gguf",
    help="CONFIG:TYPE pairs of --models run on the teacher's GGUF instead of one quantized here "
    "(emulation makes quantizing the large configs minutes long)",
)
def synth(
    out: Path,
    tokenizer: Path,
    voice: Path,
    configs: str,
    types: str,
    models: str | None,
    voice_seconds: float,
    teacher: Path | None,
    teachers_gguf: str | None,
) -> None:
    """Quantize and synthesize every config x type (or the --models) here; write the audio and result.json."""
    pairs = parse_models(models) if models else [(c, t) for c in configs.split(",") for t in types.split(",")]
    copied = set(parse_models(teachers_gguf)) if teachers_gguf else set()
    if not copied <= set(pairs):
        raise click.BadParameter("every model named must be one of --models", param_hint="--teachers-gguf")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for config, type_ in pairs:
        r = synthesize(config, type_, out, tokenizer, voice, voice_seconds, teacher, (config, type_) in copied)
        click.echo(f"{config} {type_}: {r['frames']} frames, {r['synthesize_s']} s", err=True)
        results.append(r)
    if teacher is None:  # what quantization itself does here: the bars of the other side's quantized types
        made = {(r["config"], r["type"]) for r in results}
        for r in results:
            if r["type"] != "F32" and (r["config"], "F32") in made:
                r["quantization_snr_db"] = quantization_snr_db(out, r["config"], r["type"])
    info = {"machine": platform.machine(), "ggml_features": ggml_features(), "text": TEXT, "results": results}
    (out / "result.json").write_text(json.dumps(info, indent=1))


def parse_models(models: str) -> list[tuple[str, str]]:
    """The --models option, CONFIG:TYPE pairs comma-separated, as (config, type) tuples."""
    pairs = [tuple(m.split(":")) for m in models.split(",")]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise click.BadParameter(f"expected CONFIG:TYPE pairs, got {models!r}", param_hint="--models")
    return pairs


def compare_runs(reference: Path, other: Path, models: list[tuple[str, str]] | None = None) -> tuple[list[dict], bool]:
    """Rows of the comparison of `other` against `reference`, and whether every row passes; `other` must
    hold exactly `models` (default: every model of `reference`; the emulated side runs a subset)."""
    ref = {(r["config"], r["type"]): r for r in json.loads((reference / "result.json").read_text())["results"]}
    got = {(r["config"], r["type"]): r for r in json.loads((other / "result.json").read_text())["results"]}
    expected = set(ref) if models is None else set(models)
    rows, ok = [], set(got) == expected and expected <= set(ref)

    def snr(suffix: str, key: tuple[str, str]) -> float:
        a, b = np.load(reference / f"{key[0]}-{key[1]}{suffix}.npy"), np.load(other / f"{key[0]}-{key[1]}{suffix}.npy")
        n = min(len(a), len(b))  # a length mismatch fails on its own: the SNR is of what both have
        return snr_db(b[:n], a[:n])

    for key in sorted(ref.keys() & got.keys()):
        a, b = ref[key], got[key]
        f32 = key[1] == "F32"
        quantization = a.get("quantization_snr_db") or {}
        row = {
            "config": key[0],
            "type": key[1],
            "frames": f"{a['frames']} / {b['frames']}",
            "same_frames": a["frames"] == b["frames"] and a["samples"] == b["samples"],
            "same_gguf": a["gguf_sha256"] == b["gguf_sha256"],
            "noise_floor_db": a.get("noise_floor_db"),
            "synthesize_s": f"{a['synthesize_s']} / {b['synthesize_s']}",
            "snr_db": {m: snr(m, key) for m in MEASURES},
            "bar_db": {
                m: MIN_SNR_F32_DB if f32 else min(MIN_SNR_DB, quantization.get(m, math.inf) - QUANTIZED_MARGIN_DB)
                for m in MEASURES
            },
        }
        row["passed"] = (
            row["same_frames"]
            # F32 is a copy of the synthetic weights: the bytes must be the same on both machines
            and (row["same_gguf"] or not f32)
            and all(row["snr_db"][m] >= row["bar_db"][m] for m in MEASURES)
        )
        ok &= row["passed"]
        rows.append(row)
    return rows, ok


def _db(x: float | None) -> str:
    if x is None:
        return "-"
    return "identical" if math.isinf(x) and x > 0 else f"{x:.1f}"


@main.command()
@click.argument("reference", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("other", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--label", default="other", help="name of the OTHER side in the table")
@click.option("--models", help="the CONFIG:TYPE pairs OTHER must hold [default: every model of REFERENCE]")
def compare(reference: Path, other: Path, label: str, models: str | None) -> None:
    """Compare OTHER's synth results with REFERENCE's; exit 1 if any model fails its bar."""
    rows, ok = compare_runs(reference, other, parse_models(models) if models else None)
    features = json.loads((other / "result.json").read_text())["ggml_features"]
    active = ", ".join(k for k, v in sorted(features.items()) if v) or "none"
    click.echo(f"\n{label}: ggml CPU features {active}; SNR in dB against x86 (bar)")
    click.echo(
        f"| model | frames x86 / {label} | same GGUF bytes | {' | '.join(MEASURES.values())} | "
        f"x86 noise floor | synth s x86 / {label} | |"
    )
    click.echo("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        measures = " | ".join(f"{_db(r['snr_db'][m])} (>= {r['bar_db'][m]:.1f})" for m in MEASURES)
        click.echo(
            f"| {r['config']} {r['type']} | {r['frames']} | {'yes' if r['same_gguf'] else 'no'} | {measures} | "
            f"{_db(r['noise_floor_db'])} | {r['synthesize_s']} | {'ok' if r['passed'] else 'FAILED'} |"
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
        proc = subprocess.Popen(command, preexec_fn=group.add_self)  # noqa: PLW1509 (no threads here)
        rss = _watch_peak_rss_mb(proc)
        kills = group.oom_kills()
        peak = group.peak_bytes()
    finally:
        group.remove()
    charged = "n/a" if peak is None else f"{peak / 2**20:.1f} MB (RSS and page cache)"
    click.echo(
        f"memory budget {limit_mb} MB: exit {proc.returncode}, OOM kills {kills}, peak RSS {rss:.1f} MB, "
        f"cgroup peak {charged}: {' '.join(command)}"
    )
    if proc.returncode != 0 or kills:
        raise SystemExit(1)


def _watch_peak_rss_mb(proc: subprocess.Popen, every_s: float = 0.02) -> float:
    """The child's VmHWM, sampled until it exits (getrusage's RUSAGE_CHILDREN would also count this
    process's RSS at fork, which Linux carries across exec)."""
    status, peak = Path(f"/proc/{proc.pid}/status"), 0.0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):  # between exec's, or gone
            pass
        time.sleep(every_s)
    return peak


if __name__ == "__main__":
    sys.exit(main())
