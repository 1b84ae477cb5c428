"""One benchmark configuration of the official pocket-tts (PyTorch), measured in a process of its own.

Run as a script, never imported by pocket_ggml (torch and pocket_tts are imported only here, in the
child): `python .../pocket_ggml/bench/reference_worker.py SPEC.json RESULT.json`. It needs nothing from
pocket_ggml, so the child's memory is the reference's alone.

The offline recipe of ../shared/docs/reference-architecture.md: the packaged yaml of the config with
`weights_path` set to a local safetensors file (the released layout) and the tokenizer to a local file,
`TTSModel.load_model(config=yaml, temp, eos_threshold=inf)`, then `torch.set_num_threads(N)` (importing
pocket_tts forces 1). int8 is what `load_model(quantize=True)` does:
`pocket_tts.quantization.apply_dynamic_int8(model.flow_lm, RECOMMENDED_CONFIG)` (torchao when it is
importable, else torch.ao), timed as part of the load. The frame count is fixed with the per-instance
override `model._estimate_max_gen_len = lambda n: FRAMES` (the reference has no public length argument).
Generation goes through the public `generate_audio_stream` with its defaults (FlowLM thread + Mimi
thread, Mimi decoding every queued latent per call).

Profiling pass (untimed, after the peak RSS is read): the bodies of the reference's own generation
loops run one after the other in this thread -- the text prompt and one `_run_flow_lm_and_increment_step`
per frame (as `_generate` / `_autoregressive_generation` do), then one `mimi.decode_from_latent` +
`increment_steps` per frame (as `_decode_audio_worker` does) -- so that no other thread (or the GIL)
inflates a stage. Those calls are timed whole, and torch forward hooks time flow_lm.transformer,
flow_lm.flow_net, mimi.decoder_transformer and mimi.decoder (SEANet) inside them. The roof is the
median of a large torch F32 matmul at the same thread count.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: do not let this folder's modules shadow top-level ones

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

PROGRESS_PREFIX = "pocket-bench-progress: "  # stderr lines pocket-bench shows as progress


def _vm_hwm_mb() -> float | None:
    """VmHWM: the peak RSS of this program since it started or since the last reset (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mb() -> float:
    """VmHWM where Linux has it: getrusage's maxrss also counts the parent's RSS at fork (as in worker.py)."""
    hwm = _vm_hwm_mb()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


PROFILE_FRAMES = 16
PROFILE_RUNS = 3
ROOF_SHAPE = (256, 2048, 2048)
STAGE_METHOD = (
    "torch forward hooks on the reference's modules in an untimed pass that runs its generation and Mimi "
    "decode loop bodies one after the other in one thread (real inputs, stages alone): median per frame"
)


def _log(msg: str) -> None:
    print(f"{PROGRESS_PREFIX}{msg}", file=sys.stderr, flush=True)


def local_config(config: str, weights: str, tokenizer: str, out_dir: Path) -> Path:
    """The packaged yaml with local weights and tokenizer (no hub access)."""
    import yaml
    from pocket_tts.utils.config import CONFIGS_DIR

    p = Path(config)
    src = p if p.suffix in (".yaml", ".yml") and p.exists() else CONFIGS_DIR / f"{config}.yaml"
    cfg = yaml.safe_load(src.read_text(encoding="utf-8"))
    cfg["weights_path"] = str(Path(weights).resolve())
    cfg["weights_path_without_voice_cloning"] = None
    cfg["flow_lm"]["weights_path"] = None
    cfg["mimi"]["weights_path"] = None
    lut = cfg["flow_lm"]["lookup_table"]
    lut["tokenizer_path"] = str(Path(tokenizer).resolve())
    lut["tokenizer"] = "tokenizers" if str(tokenizer).endswith(".json") else "sentencepiece"
    out = out_dir / "config_local.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return out


class HookTimer:
    """Wall time of module calls, by label; the FlowLM call's phase (text prompt or step) is tracked."""

    def __init__(self, model) -> None:
        self.times: dict[str, list[float]] = {}
        self._start: dict[str, float] = {}
        self.phase = "step"
        self.handles = []
        fl, mimi = model.flow_lm, model.mimi
        self.handles.append(fl.register_forward_pre_hook(self._flow_pre, with_kwargs=True))
        self.handles.append(fl.register_forward_hook(self._post("flow_lm"), with_kwargs=True))
        for label, mod in (
            ("transformer", fl.transformer),
            ("flow_head", fl.flow_net),
            ("mimi_transformer", mimi.decoder_transformer),
            ("seanet", mimi.decoder),
        ):
            self.handles.append(mod.register_forward_pre_hook(self._pre(label)))
            self.handles.append(mod.register_forward_hook(self._post(label)))

    def _flow_pre(self, mod, args, kwargs) -> None:
        seq = kwargs.get("sequence", args[0] if args else None)
        self.phase = "text" if seq is not None and seq.shape[1] == 0 else "step"
        self._start["flow_lm"] = time.perf_counter()

    def _pre(self, label: str):
        def hook(mod, args) -> None:
            self._start[label] = time.perf_counter()

        return hook

    def _post(self, label: str):
        def hook(mod, args, *rest) -> None:
            dt = time.perf_counter() - self._start.pop(label)
            key = label if label.startswith(("mimi", "seanet")) else f"{self.phase}/{label}"
            self.times.setdefault(key, []).append(dt)

        return hook

    def median_ms(self, key: str) -> float:
        v = self.times.get(key) or [math.nan]
        return statistics.median(v) * 1e3

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def roof_gflops(torch) -> float:
    """GFLOP/s of a large F32 torch.mm at the current torch thread count (median of runs)."""
    m, k, n = ROOF_SHAPE
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g)
    b = torch.randn(k, n, generator=g)
    torch.mm(a, b)
    times = []
    t_end = time.perf_counter() + 0.5
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 200):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * m * k * n / statistics.median(times) / 1e9


def profile(model, state, spec: dict, torch) -> dict[str, float]:
    """The untimed profiling pass, run sequentially in this thread (no Mimi thread overlapping the
    FlowLM): the loop bodies of the reference's `_generate` / `_autoregressive_generation` (text
    prompt, then one `_run_flow_lm_and_increment_step` per frame) and `_decode_audio_worker` (one
    `mimi.decode_from_latent` + `increment_steps` per frame), timed per call and per module by hooks."""
    import copy

    from pocket_tts.modules.stateful_module import increment_steps, init_states

    fl = model.flow_lm
    tokens = fl.conditioner.prepare(prepared_text(model, spec["text"]))
    n = max(2, min(spec["frames"], PROFILE_FRAMES))
    steps = int(model.mimi.encoder_frame_rate / model.mimi.frame_rate)
    calls: dict[str, list[float]] = {"text": [], "step": [], "decode": []}
    timer = HookTimer(model)
    try:
        with torch.no_grad():
            for _ in range(PROFILE_RUNS):
                st = copy.deepcopy(state)
                end = model._flow_lm_current_end(st)
                model._expand_kv_cache(st, sequence_length=end + tokens.shape[1] + n)
                t0 = time.perf_counter()
                model._run_flow_lm_and_increment_step(model_state=st, text_tokens=tokens)
                calls["text"].append(time.perf_counter() - t0)
                x = torch.full((1, 1, fl.ldim), float("nan"), dtype=fl.dtype)
                latents = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    x, _eos = model._run_flow_lm_and_increment_step(model_state=st, backbone_input_latents=x)
                    calls["step"].append(time.perf_counter() - t0)
                    latents.append(x)
                mimi_state = init_states(model.mimi, batch_size=1, sequence_length=n * steps)
                for x in latents:
                    t0 = time.perf_counter()
                    model.mimi.decode_from_latent(x * fl.emb_std + fl.emb_mean, mimi_state)
                    increment_steps(model.mimi, mimi_state, increment=steps)
                    calls["decode"].append(time.perf_counter() - t0)
    finally:
        timer.remove()
    return {
        "text_prefill_ms": statistics.median(calls["text"]) * 1e3,
        "flow_lm_step_ms": statistics.median(calls["step"]) * 1e3,
        "mimi_decode_ms": statistics.median(calls["decode"]) * 1e3,
        "flow_lm_transformer_ms": timer.median_ms("step/transformer"),
        "flow_head_ms": timer.median_ms("step/flow_head"),
        "mimi_transformer_ms": timer.median_ms("mimi_transformer"),
        "seanet_ms": timer.median_ms("seanet"),
    }


def prepared_text(model, text: str) -> str:
    """The text as generate_audio_stream hands one chunk to the model (prepare_text_prompt)."""
    from pocket_tts.models.text_chunking import prepare_text_prompt

    prepared, _guess = prepare_text_prompt(
        text,
        model.pad_with_spaces_for_short_inputs,
        model.remove_semicolons,
        model.append_terminal_punctuation,
        model.capitalize_first_letter,
        model.replace_characters,
    )
    return prepared


def run(spec: dict) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tag = f"pocket-tts {'int8' if spec['quantize'] else 'fp32'} threads={spec['threads']}"
    _log(f"{tag}: importing torch + pocket_tts")
    t0 = time.perf_counter()
    import torch
    from pocket_tts import TTSModel

    import_s = time.perf_counter() - t0
    logging.getLogger("pocket_tts").setLevel(logging.ERROR)  # "max length reached without EOS" every run
    torch.set_num_threads(spec["threads"])

    with tempfile.TemporaryDirectory(prefix="pocket-bench-ref-") as tmp:
        yaml_path = local_config(spec["config"], spec["weights"], spec["tokenizer"], Path(tmp))
        _log(f"{tag}: loading")
        t0 = time.perf_counter()
        model = TTSModel.load_model(
            config=str(yaml_path), temp=spec["temperature"], eos_threshold=math.inf, noise_clamp=None
        )
        quant_backend = None
        if spec["quantize"]:
            from pocket_tts import quantization as q

            quant_backend = q._get_backend() if hasattr(q, "_get_backend") else "auto"
            q.apply_dynamic_int8(model.flow_lm, q.RECOMMENDED_CONFIG)
        load_s = time.perf_counter() - t0
    frames = spec["frames"]
    model._estimate_max_gen_len = lambda token_count: frames
    torch.manual_seed(spec["seed"])
    sample_rate = model.sample_rate

    if spec.get("phase") == "voice":  # see runner.run_two_phases
        from pocket_tts import export_model_state

        _log(f"{tag}: voice state from {spec['voice']}")
        voice_times = []
        for _ in range(1 + spec["voice_runs"]):
            t0 = time.perf_counter()
            state = model.get_state_for_audio_prompt(Path(spec["voice"]))
            voice_times.append(time.perf_counter() - t0)
        if spec.get("voice_state"):
            export_model_state(state, spec["voice_state"])
        return {
            "backend": "pocket-tts",
            "load_s": load_s,
            "voice_encode_s": voice_times[1:],
            "voice_encode_cold_s": voice_times[0],
            "peak_rss_mb": _peak_rss_mb(),
        }
    _log(f"{tag}: voice state cached in {spec.get('voice_state') or spec['voice']}")
    state = model.get_state_for_audio_prompt(Path(spec.get("voice_state") or spec["voice"]))

    def stream() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first, samples = None, 0
        for chunk in model.generate_audio_stream(state, spec["text"], max_tokens=10**9):
            if first is None:
                first = time.perf_counter() - t0
            samples += int(chunk.shape[-1])
        return first, time.perf_counter() - t0, samples

    peak_before_runs_mb = _peak_rss_mb()
    try:  # reset VmHWM: the peak of the generation runs alone is read too
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    runs = []
    for i in range(1 + spec["runs"]):
        label = "cold run" if i == 0 else f"run {i}/{spec['runs']}"
        _log(f"{tag}: {label} ({frames} frames)")
        first, total, samples = stream()
        expected = frames * int(sample_rate / model.config.mimi.frame_rate)
        if samples != expected:
            raise RuntimeError(f"the reference generated {samples} samples, expected {expected}")
        runs.append((first, total))
    generation_rss_mb = _vm_hwm_mb() if hwm_reset else None
    peak_rss_mb = max(peak_before_runs_mb, _peak_rss_mb())

    _log(f"{tag}: profiling pass (hooks, roof)")
    prof = profile(model, state, spec, torch)
    roof = roof_gflops(torch)
    return {
        "backend": "pocket-tts",
        "variant": "int8" if spec["quantize"] else "fp32",
        "threads": spec["threads"],
        "mimi_threads": spec["threads"],
        "import_in_child_s": import_s,
        "load_s": load_s,
        "runs_first_s": [r[0] for r in runs],
        "runs_total_s": [r[1] for r in runs],
        "audio_s": frames * int(sample_rate / model.config.mimi.frame_rate) / sample_rate,
        "peak_rss_mb": peak_rss_mb,
        "peak_rss_generation_mb": generation_rss_mb,
        **prof,
        "stage_method": STAGE_METHOD,
        "roof_gflops": roof,
        "roof_method": f"torch.mm F32 {ROOF_SHAPE[0]}x{ROOF_SHAPE[1]} @ {ROOF_SHAPE[1]}x{ROOF_SHAPE[2]}, median",
        "model_file_bytes": Path(spec["weights"]).stat().st_size,
        "model_file_format": "safetensors",
        "quantization_backend": quant_backend,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "pocket-tts": importlib.metadata.version("pocket-tts"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: reference_worker.py SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    if spec.get("cores"):
        os.sched_setaffinity(0, spec["cores"])  # before torch starts its thread pools
    result = run(spec)
    result["cores"] = sorted(os.sched_getaffinity(0))
    result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    result["weights_kind"] = spec.get("weights_kind", "synthetic")
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
