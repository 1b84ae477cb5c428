"""Parity of a quantized model with the official pocket-tts 4.0.1 (PyTorch), stage by stage (issue #3).

On the seeded synthetic checkpoint (seed 0) of a released config, the reference runs once (in a
subprocess: ../shared/reference/run_reference.py, which dumps every intermediate) and our runtime runs
twice, on the F32 GGUF (the baseline) and on the requested quantization mix, with ggml's real kernels:

- teacher-forced: every stage gets the reference's own inputs (its voice latents, tokens, step input
  latents and noise; its latents into Mimi), and each stage's output is compared with the reference's
  as the relative error ||ours - ref|| / ||ref||;
- the latent cosine, raw and centred: the centred cosine subtracts the F32 reference run's mean latent
  over frames from both before taking the cosine of the flattened arrays. On synthetic weights only a
  small part of the latent energy changes from frame to frame, so the raw cosine is ~1 for every mix
  (see ../shared/docs/quantization-study.md); the centred one tells mixes apart;
- audio SNR, teacher-forced (our Mimi on the reference latents) and free-running (our whole loop from
  the voice wav, with the reference's noise).

`run_parity()` is the library entry point (it makes or reuses the checkpoint, the GGUFs and the
reference dump in a work folder); `measure_runtime()` compares one GGUF with an existing dump. The
command line (`python -m pocket_ggml.bench.parity --type Q4_K_M`) prints the result as a markdown
table. torch and pocket_tts are only ever imported by the reference subprocess.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

import pocket_ggml
from pocket_ggml.errors import ParityError, PocketError
from pocket_ggml.files import atomic_folder
from pocket_ggml.format.config import DEFAULT_CONFIG, DEFAULT_MIX, load_released_config
from pocket_ggml.quantize.policy import MIXES, get_mix

if TYPE_CHECKING:
    from pocket_ggml.runtime.model import PocketRuntime

SEED = 0  # the synthetic checkpoint's seed, also the reference's RNG seed
DEFAULT_FRAMES = 125  # 10 s of audio, as in the quantization study
DEFAULT_TEXT = "Hello world, this is a test of the pocket runtime."
REFERENCE_TIMEOUT_S = 3600
REPO_ROOT = Path(pocket_ggml.__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"  # what developers and CI have beside the repo
BASELINE = "F32"

ProgressFn = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------------------------------
def user_cache_dir(app: str = "pocket-ggml") -> Path:
    """The per-user cache folder of `app` ($XDG_CACHE_HOME or ~/.cache on Linux; the platform's usual
    place on macOS and Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / app


def _source_key() -> str:
    """A short hash of the code that decides the synthetic weights and the mixes (pocket_ggml.quantize),
    so that a default cache never serves files made by older code."""
    import pocket_ggml.quantize

    h = hashlib.sha256()
    for p in sorted(Path(pocket_ggml.quantize.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def default_workdir() -> Path:
    return user_cache_dir() / "parity" / _source_key()


def default_shared(*parts: str) -> Path | None:
    """`../shared/<parts>` beside the repository, if it exists."""
    p = SHARED.joinpath(*parts)
    return p if p.exists() else None


@dataclass(frozen=True)
class Workdir:
    """Layout of the cache folder: files are reused as they are (delete them to rebuild)."""

    root: Path

    def safetensors(self, config: str) -> Path:
        """The synthetic checkpoint in the released layout (what the reference loads)."""
        return self.root / f"{config}-seed{SEED}-synthetic.safetensors"

    def gguf(self, config: str, mix: str) -> Path:
        return self.root / f"{config}-seed{SEED}-{mix}.gguf"

    def dump(self, config: str, temp: float, frames: int, text: str) -> Path:
        return self.root / "dumps" / f"{config}-seed{SEED}-t{temp}-f{frames}-{zlib.crc32(text.encode()):08x}"


@dataclass(frozen=True)
class ReferenceDump:
    """A run_reference.py dump folder: `dump[name]` loads `name.npy`."""

    path: Path

    @property
    def meta(self) -> dict:
        return json.loads((self.path / "meta.json").read_text())

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy")

    def __contains__(self, name: str) -> bool:
        return (self.path / f"{name}.npy").exists()


# ---------------------------------------------------------------------------------------------------
# Making the inputs: checkpoint, GGUFs, reference dump
# ---------------------------------------------------------------------------------------------------
def _require_file(path: Path | None, what: str, option: str) -> Path:
    if path is None:
        raise ParityError(f"no {what}: give {option} (the default ../shared path does not exist)")
    if not Path(path).is_file():
        raise ParityError(f"{what} not found: {path}")
    return Path(path)


def ensure_models(workdir: Workdir, config: str, mixes: tuple[str, ...], tokenizer: Path) -> dict[str, Path]:
    """The synthetic checkpoint (key "safetensors") and a GGUF per mix, made unless already there."""
    from pocket_ggml.format.tokenizer import read_tokenizer
    from pocket_ggml.quantize.convert import convert
    from pocket_ggml.quantize.synthetic import save_synthetic_safetensors

    cfg = load_released_config(config)
    workdir.root.mkdir(parents=True, exist_ok=True)
    out = {"safetensors": workdir.safetensors(config)}
    if not out["safetensors"].exists():
        save_synthetic_safetensors(cfg, SEED, out["safetensors"])
    tok = None
    for mix in mixes:
        path = out[mix] = workdir.gguf(config, mix)
        if not path.exists():
            tok = tok or read_tokenizer(_require_file(tokenizer, "tokenizer", "--tokenizer"), cfg.flow_lm.n_bins)
            convert(cfg, path, get_mix(mix), tok, synthetic_seed=SEED)
    return out


def require_reference(script: Path | None) -> Path:
    """The reference script, checked to exist, with torch and pocket_tts importable here (without
    importing them: the reference runs in a subprocess of this interpreter)."""
    script = _require_file(script, "reference script (run_reference.py)", "--reference-script")
    missing = [m for m in ("torch", "pocket_tts") if importlib.util.find_spec(m) is None]
    if missing:
        raise ParityError(
            f"the reference needs {' and '.join(missing)} (pip install torch==2.13.0 pocket-tts==4.0.1) in "
            f"{sys.executable}"
        )
    return script


def ensure_reference_dump(
    workdir: Workdir,
    config: str,
    *,
    safetensors: Path,
    reference_script: Path | None,
    tokenizer: Path,
    voice_wav: Path,
    frames: int,
    temp: float,
    text: str,
    threads: int = 1,
) -> ReferenceDump:
    """The reference run's dump (every FlowLM layer included), made unless already there."""
    out = workdir.dump(config, temp, frames, text)
    if (out / "meta.json").exists():
        return ReferenceDump(out)
    script = require_reference(reference_script)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    try:
        with atomic_folder(out) as tmp:
            cmd = [
                sys.executable,
                str(script),
                "--weights",
                str(safetensors),
                "--tokenizer",
                str(tokenizer),
                "--text",
                text,
                "--voice-wav",
                str(voice_wav),
                "--frames",
                str(frames),
                "--seed",
                str(SEED),
                "--dump-dir",
                str(tmp),
                "--config",
                config,
                "--temp",
                str(temp),
                "--threads",
                str(threads),
                "--dump-layers",
                "--dump-layers-frames",
                "0",
            ]
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S, env=env)
            if r.returncode != 0:
                lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
                raise ParityError(f"the reference run failed ({r.returncode}): {lines[-1] if lines else 'no message'}")
    except subprocess.TimeoutExpired:
        raise ParityError(f"the reference run took over {REFERENCE_TIMEOUT_S} s and was stopped") from None
    return ReferenceDump(out)


# ---------------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------------
def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """||ours - ref|| / ||ref|| (in float64)."""
    ours = np.asarray(ours, np.float64).reshape(np.shape(ref))
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def centred_cosine(ours: np.ndarray, ref: np.ndarray, mean: np.ndarray) -> float:
    """Cosine of (ours - mean) and (ref - mean), flattened; `mean` is the F32 reference's mean latent."""
    return cosine(np.asarray(ours) - mean, np.asarray(ref) - mean)


def snr_db(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64).ravel()
    err = float(np.sum((np.asarray(ours, np.float64).ravel() - ref) ** 2))
    return math.inf if err == 0 else float(10 * np.log10(np.sum(ref**2) / err))


@dataclass(frozen=True)
class RuntimeParity:
    """One GGUF against the reference dump."""

    label: str  # the mix name
    model_bytes: int
    stage_errors: dict[str, float]  # teacher-forced relative errors, in pipeline order
    latent_cosine: float  # teacher-forced, raw
    latent_cosine_centred: float  # teacher-forced, centred on the F32 reference's mean latent
    mimi_tf_snr_db: float  # our Mimi on the reference latents vs the reference audio
    free_running_snr_db: float  # our whole loop from the voice wav vs the reference audio
    free_running_latent_cosine_centred: float
    tokens_match: bool  # our tokenizer gives the reference's token ids
    seconds: float


@dataclass(frozen=True)
class ParityReport:
    config: str
    mix: str
    frames: int
    temp: float
    text: str
    baseline: RuntimeParity
    quantized: RuntimeParity
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds of each phase

    def to_dict(self) -> dict:
        """Plain JSON-able data (an infinite SNR, i.e. bit-exact audio, becomes None)."""
        return _finite(asdict(self))

    def to_markdown(self) -> str:
        return format_table(self)


def _finite(x: object) -> object:
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _rows_of(noise_rows: np.ndarray) -> Callable[[], np.ndarray]:
    it: Iterator[np.ndarray] = iter(noise_rows)
    return lambda: next(it)


def _teacher_forced_flow_lm(rt: PocketRuntime, ref: ReferenceDump, frames: int) -> tuple[dict[str, float], np.ndarray]:
    """FlowLM stages on the reference's inputs: its voice latents, tokens, step inputs and noise."""
    flm = rt.flow_lm
    n_layers = rt.config.flow_lm.num_layers
    errors: dict[str, float] = {}
    tokens = ref["tokens"].astype(np.int32)
    voice = flm.voice_prompt(np.ascontiguousarray(ref["voice_mimi_latents"][0].T), stages=True)
    flm.reserve(flm.offset + tokens.size + frames)
    text = flm.text_prompt(tokens, stages=True)
    errors["text embeddings"] = rel_err(text.stages["cond"], ref["text_embeddings"])
    errors["voice conditioning"] = rel_err(voice.stages["cond"], ref["voice_conditioning"])
    errors["voice pass hidden"] = rel_err(voice.stages["hidden"], ref["voice_pass_out_norm"])
    errors["text pass hidden"] = rel_err(text.stages["hidden"], ref["text_pass_out_norm"])

    inputs, noise = ref["step_input_latent"][:frames], ref["step_noise"][:frames]
    per_step: dict[str, list[np.ndarray]] = {}
    eos, latents = [], []
    for i in range(frames):
        latent_in = None if np.isnan(inputs[i]).all() else inputs[i]
        out = flm.step(latent_in, noise[i], stages=True)
        for k in [f"layer{j:02d}" for j in range(n_layers)] + ["hidden", "z"]:
            if k in out.stages:
                per_step.setdefault(k, []).append(out.stages[k].reshape(-1))
        eos.append(out.eos_logit)
        latents.append(out.latent)
    for j in range(n_layers):
        errors[f"step layer {j}"] = rel_err(np.stack(per_step[f"layer{j:02d}"]), ref[f"step_layer{j:02d}_out"][:frames])
    errors["step hidden"] = rel_err(np.stack(per_step["hidden"]), ref["step_hidden"][:frames])
    if "z" in per_step:
        errors["step z"] = rel_err(np.stack(per_step["z"]), ref["step_z"][:frames])
    errors["step EOS logit"] = rel_err(np.array(eos), ref["step_eos_logit"][:frames])
    ours = np.stack(latents)
    errors["latent (flow output)"] = rel_err(ours, ref["step_latent"][:frames])
    return errors, ours


_MIMI_STAGES = {
    "mimi_dec_quantizer_out": "Mimi quantizer",
    "mimi_dec_upsample_out": "Mimi upsample",
    "mimi_dec_transformer_out": "Mimi transformer",
    "mimi_dec_seanet_out": "Mimi SEANet",
}


def _teacher_forced_mimi(rt: PocketRuntime, ref: ReferenceDump, frames: int) -> tuple[dict[str, float], float]:
    """Mimi decoder stages on the reference's latents, and the audio SNR."""
    rt.mimi.reset()
    stages: dict[str, list[np.ndarray]] = {k: [] for k in _MIMI_STAGES}
    audio = []
    for latent in ref["step_latent"][:frames]:
        chunk, st = rt.mimi.decode(latent[None, :], stages=True)
        audio.append(chunk)
        for k, rows in stages.items():
            rows.append(st[k])
    errors = {label: rel_err(np.stack(stages[k]), ref[k][:frames]) for k, label in _MIMI_STAGES.items() if k in ref}
    return errors, snr_db(np.concatenate(audio), ref["waveform"][: frames * rt.mimi.frame_size])


def _free_running(
    rt: PocketRuntime, ref: ReferenceDump, voice_wav: Path, text: str, frames: int, temp: float
) -> tuple[np.ndarray, np.ndarray]:
    """Our whole loop: voice wav -> our encoder -> voice state -> text -> steps (reference noise) -> Mimi."""
    from pocket_ggml.runtime.model import GenerationSettings
    from pocket_ggml.voices.audio import read_audio
    from pocket_ggml.voices.state import clone_voice

    wav, rate = read_audio(voice_wav)
    voice = clone_voice(rt, wav, rate).snapshot
    settings = GenerationSettings(temperature=temp, eos_threshold=math.inf, max_frames=frames)
    rt.mimi.reset()
    latents, audio = [], []
    for f in rt.frames(voice, text, settings, _rows_of(ref["step_noise"][:frames])):
        latents.append(f.latent)
        audio.append(rt.mimi.decode(f.latent[None, :]))
    return np.stack(latents), np.concatenate(audio)


def measure_runtime(
    gguf: Path,
    ref: ReferenceDump,
    *,
    voice_wav: Path,
    text: str,
    frames: int,
    temp: float,
    threads: int = 1,
    label: str | None = None,
) -> RuntimeParity:
    """Teacher-forced stage errors, latent cosines and audio SNRs of one GGUF against a reference dump
    of `text` (the first `frames` frames of it)."""
    from pocket_ggml.runtime.model import PocketRuntime

    n_ref = len(ref["step_latent"])
    if n_ref < frames:
        raise ParityError(f"the reference dump has {n_ref} frames, {frames} asked")
    if ref.meta.get("n_chunks", n_ref) != n_ref:
        raise ParityError("the reference split the text into several chunks: use a shorter text")
    t0 = time.perf_counter()
    rt = PocketRuntime(gguf, threads=threads, mimi_threads=threads)
    try:
        stage_errors, latents = _teacher_forced_flow_lm(rt, ref, frames)
        mimi_errors, mimi_snr = _teacher_forced_mimi(rt, ref, frames)
        stage_errors |= mimi_errors
        tokens, _ = rt.tokens(text)
        fr_latents, fr_audio = _free_running(rt, ref, voice_wav, text, frames, temp)
        label = label or rt.file.info.quant_mix
    finally:
        rt.close()
    ref_latents = ref["step_latent"][:frames]
    mean = ref_latents.mean(axis=0)
    return RuntimeParity(
        label=label,
        model_bytes=Path(gguf).stat().st_size,
        stage_errors=stage_errors,
        latent_cosine=cosine(latents, ref_latents),
        latent_cosine_centred=centred_cosine(latents, ref_latents, mean),
        mimi_tf_snr_db=mimi_snr,
        free_running_snr_db=snr_db(fr_audio, ref["waveform"][: fr_audio.size]),
        free_running_latent_cosine_centred=centred_cosine(fr_latents, ref_latents, mean),
        tokens_match=bool(np.array_equal(tokens, ref["tokens"])),
        seconds=time.perf_counter() - t0,
    )


def run_parity(
    mix: str = DEFAULT_MIX,
    *,
    config: str = DEFAULT_CONFIG,
    frames: int = DEFAULT_FRAMES,
    temp: float = 0.0,
    text: str = DEFAULT_TEXT,
    workdir: Path | None = None,
    reference_script: Path | None = None,
    tokenizer: Path | None = None,
    voice_wav: Path | None = None,
    threads: int = 1,
    progress: ProgressFn | None = None,
) -> ParityReport:
    """Make (or reuse) the synthetic checkpoint, the F32 and `mix` GGUFs and the reference dump under
    `workdir`, then measure both GGUFs against the reference. Paths left None default to ../shared."""
    mix = get_mix(mix).name
    load_released_config(config)
    if frames < 1:
        raise ParityError(f"frames must be >= 1, got {frames}")
    if not temp >= 0:
        raise ParityError(f"temp must be >= 0, got {temp}")
    if threads < 1:
        raise ParityError(f"threads must be >= 1, got {threads}")
    say = progress or (lambda _msg: None)
    tokenizer = _require_file(tokenizer or default_shared("assets", "tokenizer.model"), "tokenizer", "--tokenizer")
    voice_wav = _require_file(
        voice_wav or default_shared("assets", "voices", "speaker-48k.wav"), "voice wav", "--voice-wav"
    )
    reference_script = reference_script or default_shared("reference", "run_reference.py")
    wd = Workdir(Path(workdir) if workdir is not None else default_workdir())
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    if not (wd.dump(config, temp, frames, text) / "meta.json").exists():
        require_reference(reference_script)  # fail before spending time on the models
    say(f"models in {wd.root}")
    models = ensure_models(wd, config, tuple(dict.fromkeys((BASELINE, mix))), tokenizer)
    timings["models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("reference run")
    ref = ensure_reference_dump(
        wd,
        config,
        safetensors=models["safetensors"],
        reference_script=reference_script,
        tokenizer=tokenizer,
        voice_wav=voice_wav,
        frames=frames,
        temp=temp,
        text=text,
        threads=threads,
    )
    timings["reference"] = time.perf_counter() - t0

    results = {}
    for label in dict.fromkeys((BASELINE, mix)):
        say(f"our {label} runtime")
        results[label] = measure_runtime(
            models[label], ref, voice_wav=voice_wav, text=text, frames=frames, temp=temp, threads=threads, label=label
        )
        timings[f"ours {label}"] = results[label].seconds
    return ParityReport(config, mix, frames, temp, text, results[BASELINE], results[mix], timings)


# ---------------------------------------------------------------------------------------------------
# Presentation
# ---------------------------------------------------------------------------------------------------
def _fmt_err(x: float) -> str:
    return f"{x:.2e}"


def _fmt_cos(x: float) -> str:
    return f"{x:.4f}"


def _fmt_db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f}"


def format_table(report: ParityReport) -> str:
    """A markdown table: one row per stage/measure, one column per runtime (F32 baseline, the mix)."""
    runs = [report.baseline] if report.mix == BASELINE else [report.baseline, report.quantized]
    head = ["stage (teacher-forced rel. error unless said)", *(f"ours {r.label}" for r in runs)]
    rows: list[list[str]] = [["model file (MB)", *(f"{r.model_bytes / 1e6:.1f}" for r in runs)]]
    rows += [[name, *(_fmt_err(r.stage_errors[name]) for r in runs)] for name in report.baseline.stage_errors]
    rows += [
        ["latent cosine, raw", *(_fmt_cos(r.latent_cosine) for r in runs)],
        ["latent cosine, centred", *(_fmt_cos(r.latent_cosine_centred) for r in runs)],
        ["Mimi audio SNR, teacher-forced (dB)", *(_fmt_db(r.mimi_tf_snr_db) for r in runs)],
        ["audio SNR, free-running (dB)", *(_fmt_db(r.free_running_snr_db) for r in runs)],
        ["latent cosine centred, free-running", *(_fmt_cos(r.free_running_latent_cosine_centred) for r in runs)],
        ["tokens match the reference", *("yes" if r.tokens_match else "NO" for r in runs)],
    ]
    title = (
        f"pocket-ggml vs pocket-tts 4.0.1: {report.config} (synthetic weights, seed {SEED}), {report.mix}, "
        f"{report.frames} frames, temp {report.temp}"
    )
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def _shared_default(*parts: str) -> str | None:
    p = default_shared(*parts)
    return str(p) if p else None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--type", "mix", default=DEFAULT_MIX, show_default=True, help=f"mix: {', '.join(MIXES)}")
@click.option("--config", default=DEFAULT_CONFIG, show_default=True, help="released config")
@click.option("--frames", type=int, default=DEFAULT_FRAMES, show_default=True, help="latent frames (12.5 a second)")
@click.option("--temp", type=float, default=0.0, show_default=True, help="sampling temperature")
@click.option("--text", default=DEFAULT_TEXT, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="threads of ours and of the reference")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="cache folder [user cache]")
@click.option(
    "--reference-script",
    type=click.Path(path_type=Path),
    default=_shared_default("reference", "run_reference.py"),
    show_default=True,
    help="the reference runner (needs torch and pocket-tts in this Python)",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    default=_shared_default("assets", "tokenizer.model"),
    show_default=True,
    help="the model's SentencePiece tokenizer",
)
@click.option(
    "--voice-wav",
    type=click.Path(path_type=Path),
    default=_shared_default("assets", "voices", "speaker-48k.wav"),
    show_default=True,
    help="the voice prompt both runs clone",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="also write results here")
def main(
    mix: str,
    config: str,
    frames: int,
    temp: float,
    text: str,
    threads: int,
    workdir: Path | None,
    reference_script: Path | None,
    tokenizer: Path | None,
    voice_wav: Path | None,
    json_out: Path | None,
) -> None:
    """Stage-by-stage parity of a quantization mix (and of F32) with pocket-tts 4.0.1 on synthetic weights.

    \b
      python -m pocket_ggml.bench.parity --type Q4_K_M --frames 125 --json q4.json
    """
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # a failed GGML_ASSERT must not start gdb
    t0 = time.perf_counter()
    try:
        report = run_parity(
            mix,
            config=config,
            frames=frames,
            temp=temp,
            text=text,
            workdir=workdir,
            reference_script=reference_script,
            tokenizer=tokenizer,
            voice_wav=voice_wav,
            threads=threads,
            progress=lambda msg: click.echo(f"... {msg}", err=True),
        )
    except PocketError as e:
        click.echo(f"pocket-parity: error: {e}", err=True)
        sys.exit(2)
    click.echo(report.to_markdown())
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())
    click.echo(f"\nwall time {time.perf_counter() - t0:.1f} s ({phases})")
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=1))


if __name__ == "__main__":
    main()
