"""One benchmark configuration of pocket-ggml, measured in a process of its own.

`python -m pocket_ggml.bench.worker SPEC.json RESULT.json` (pocket-bench starts it; two processes per
configuration, one per phase, so that each peak RSS is that phase's alone). In order:

1. load (`TTSModel.load_model`, timed), with the frame count fixed (see `fix_frame_count`);
2. voice: in the "voice" phase (a process of its own), `get_state_for_audio_prompt(wav)` once cold,
   then warm repetitions (timed), and the state saved; the "generate" phase loads that state (the voice
   cached, as a user's program would) and goes on:
3. generation through the product path, `generate_audio_stream` (FlowLM and the Mimi transformer
   on its worker thread, the SEANet decoder in the consumer): one cold run (the first after load),
   then `runs` warm runs; each run times text submitted -> first chunk and -> last chunk;
4. the peak RSS (getrusage) is read here, before anything else allocates; so is the peak during the
   generation runs alone (VmHWM, reset before the first run through /proc/self/clear_refs);
5. an untimed profiling pass on a second `PocketRuntime` of the same file: the product's text prefill,
   FlowLM step and Mimi decode calls, then the stage graphs (`stages.profile_stages`) and the
   matmul roof (`stages.matmul_roof`).

Progress goes to stderr, the result (a flat JSON object) to RESULT.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pocket_ggml.runtime.flow_lm import FlowLMSnapshot

PROGRESS_PREFIX = "pocket-bench-progress: "  # stderr lines pocket-bench shows as progress
PROFILE_FRAMES = 16  # product calls timed in the profiling pass


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    model: str
    voice: str
    text: str
    frames: int
    runs: int
    threads: int
    mimi_threads: int
    cores: list[int] | None = None
    temperature: float = 0.3
    seed: int = 0
    voice_runs: int = 3
    # the two phases (see runner.run_two_phases): "voice" clones the voice from the wav and saves the
    # state to voice_state; "generate" loads that state (the voice cached) and generates
    phase: str = "generate"
    voice_state: str | None = None


def fix_frame_count(model: object, frames: int) -> None:
    """Make every text chunk generate exactly `frames` frames (with eos_threshold=inf).

    TTSModel has no public length argument (nor has the reference: it caps at
    ceil((tokens / 3 + 2) * 12.5) frames); as pocket-bench does for the reference with a
    per-instance `_estimate_max_gen_len`, the instance's generation settings get `max_frames`."""
    settings = getattr(model, "_settings", None)
    if settings is None or not hasattr(settings, "max_frames"):
        raise RuntimeError("this pocket_ggml TTSModel has no generation settings with max_frames to fix")
    model._settings = dataclasses.replace(settings, max_frames=frames)  # type: ignore[attr-defined]


def _peak_rss_mb() -> float:
    """The process's peak RSS since it started: VmHWM where Linux has it, which is this program's own.
    getrusage's maxrss also counts the parent's RSS when it forked this process (Linux carries the
    old address space's high-water mark across exec): a pocket-bench that had just written the
    reference's 438 MB safetensors made every child look 484 MB big."""
    hwm = rss_high_water_mark_mb()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_rss_high_water_mark() -> bool:
    """Reset /proc/self/status VmHWM (Linux: `5` into clear_refs); getrusage's figure stays."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_high_water_mark_mb() -> float | None:
    """VmHWM: the peak RSS since the process started or since the last reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def timed_stream(chunks_of: Callable[[], Iterable[np.ndarray]]) -> tuple[float, float, int]:
    """(seconds to the first chunk, seconds to the last chunk, samples) of one streamed generation;
    the clock starts before the text is submitted."""
    t0 = time.perf_counter()
    first = None
    samples = 0
    for chunk in chunks_of():
        if first is None:
            first = time.perf_counter() - t0
        samples += len(chunk)
    total = time.perf_counter() - t0
    return (first if first is not None else math.nan), total, samples


def run(spec: WorkerSpec, progress: Callable[[str], None] = lambda _m: None) -> dict[str, object]:
    """Measure one configuration; see the module docstring."""
    from pocket_ggml import TTSModel

    tag = f"pocket-ggml threads={spec.threads}/{spec.mimi_threads}"
    progress(f"{tag}: loading {spec.model}")
    t0 = time.perf_counter()
    model = TTSModel.load_model(
        spec.model,
        threads=spec.threads,
        mimi_threads=spec.mimi_threads,
        temp=spec.temperature,
        eos_threshold=math.inf,
        seed=spec.seed,
    )
    load_s = time.perf_counter() - t0
    fix_frame_count(model, spec.frames)
    sample_rate = model.sample_rate
    frame_size = model.config.mimi.frame_size

    if spec.phase == "voice":
        from pocket_ggml.voices.state import save_voice_state

        progress(f"{tag}: voice state from {spec.voice}")
        voice_times = []
        for _ in range(1 + spec.voice_runs):
            t0 = time.perf_counter()
            voice = model.get_state_for_audio_prompt(spec.voice)
            voice_times.append(time.perf_counter() - t0)
        if spec.voice_state:
            save_voice_state(voice, spec.voice_state)
        model.close()
        return {
            "backend": "pocket-ggml",
            "load_s": load_s,
            "voice_encode_s": voice_times[1:],
            "voice_encode_cold_s": voice_times[0],
            "peak_rss_mb": _peak_rss_mb(),
        }
    progress(f"{tag}: voice state cached in {spec.voice_state or spec.voice}")
    voice = model.get_state_for_audio_prompt(spec.voice_state or spec.voice)

    peak_before_runs_mb = _peak_rss_mb()
    hwm_reset = reset_rss_high_water_mark()  # so that the generation's own peak can be read too
    runs = []
    for i in range(1 + spec.runs):
        progress(f"{tag}: {'cold run' if i == 0 else f'run {i}/{spec.runs}'} ({spec.frames} frames)")
        first, total, samples = timed_stream(lambda: model.generate_audio_stream(voice, spec.text, max_tokens=10**9))
        if samples != spec.frames * frame_size:
            raise RuntimeError(f"generated {samples} samples, expected {spec.frames} frames of {frame_size}")
        runs.append((first, total))
    generation_rss_mb = rss_high_water_mark_mb() if hwm_reset else None
    peak_rss_mb = max(peak_before_runs_mb, _peak_rss_mb())
    weights_kind = "synthetic" if model.is_synthetic else "real"
    rt = model._rt  # type: ignore[attr-defined]
    ggml_threads = [rt.threads, rt.mimi_threads, rt.prompt_threads]  # after the runtime's cap
    model.close()

    progress(f"{tag}: profiling pass (stages, prefill, roof)")
    prof = profile(spec, voice.snapshot)
    audio_s = spec.frames * frame_size / sample_rate
    return {
        "backend": "pocket-ggml",
        "threads": spec.threads,
        "mimi_threads": spec.mimi_threads,
        "load_s": load_s,
        "runs_first_s": [r[0] for r in runs],
        "runs_total_s": [r[1] for r in runs],
        "audio_s": audio_s,
        "peak_rss_mb": peak_rss_mb,
        "peak_rss_generation_mb": generation_rss_mb,
        "weights_kind": weights_kind,
        "ggml_threads": ggml_threads,
        **prof,
    }


def profile(spec: WorkerSpec, voice: FlowLMSnapshot) -> dict[str, object]:
    """The untimed profiling pass on a fresh runtime of the same file, from the voice state the
    timed part computed."""
    from pocket_ggml.bench.stages import STAGE_METHOD, matmul_roof, profile_stages
    from pocket_ggml.runtime.flow_lm import sample_noise
    from pocket_ggml.runtime.model import PocketRuntime
    from pocket_ggml.voices.audio import read_audio

    rt = PocketRuntime(spec.model, threads=spec.threads, mimi_threads=spec.mimi_threads)
    try:
        cfg = rt.config
        wav, rate = read_audio(spec.voice)
        tokens, _ = rt.tokens(spec.text)
        fl = rt.flow_lm

        # the product's text prefill call, after restoring the voice state (not timed) each time
        prefill_times = []
        for _ in range(max(3, min(spec.runs, 10))):
            fl.restore(voice, extra_rows=len(tokens) + spec.frames)
            t0 = time.perf_counter()
            fl.text_prompt(tokens)
            prefill_times.append(time.perf_counter() - t0)
        rng = np.random.default_rng(spec.seed)
        dim = cfg.mimi.latent_dim
        n = max(2, min(spec.frames, PROFILE_FRAMES))
        fl.restore(voice, extra_rows=len(tokens) + n)
        fl.text_prompt(tokens)
        latent, latents, step_times = None, [], []
        for _ in range(n):
            noise = sample_noise(rng, dim, spec.temperature, None)
            t0 = time.perf_counter()
            latent = fl.step(latent, noise).latent
            step_times.append(time.perf_counter() - t0)
            latents.append(latent)
        rt.mimi.reset()
        decode_times = []
        for lat in latents:
            t0 = time.perf_counter()
            rt.mimi.decode(lat[None, :])
            decode_times.append(time.perf_counter() - t0)
        cache_rows = voice.n_rows + len(tokens) + spec.frames // 2
        stages = profile_stages(rt, cache_rows=cache_rows, decode_steps=fl.decode_steps, seed=spec.seed)
        gguf_bytes = Path(spec.model).stat().st_size
        voice_rows, n_tokens = voice.n_rows, len(tokens)
    finally:
        rt.close()
    roof = matmul_roof(spec.threads)
    return {
        "text_tokens": n_tokens,
        "voice_rows": voice_rows,
        "voice_seconds": len(wav) / rate,
        "text_prefill_ms": float(np.median(prefill_times[1:]) * 1e3),
        "flow_lm_step_ms": float(np.median(step_times[1:]) * 1e3),
        "mimi_decode_ms": float(np.median(decode_times[1:]) * 1e3),
        **dataclasses.asdict(stages),
        "stage_method": STAGE_METHOD,
        "roof_gflops": roof.gflops,
        "roof_f32_gflops": roof.f32_gflops,
        "roof_f16_gflops": roof.f16_gflops,
        "roof_method": roof.description,
        "model_file_bytes": gguf_bytes,
        "model_file_format": "gguf",
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pocket_ggml.bench.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = WorkerSpec(**json.loads(Path(args[0]).read_text()))
    if spec.cores:
        os.sched_setaffinity(0, spec.cores)
    result = run(spec, progress=lambda m: print(f"{PROGRESS_PREFIX}{m}", file=sys.stderr, flush=True))
    result["cores"] = sorted(os.sched_getaffinity(0))
    result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
