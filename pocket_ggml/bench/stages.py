"""Per-stage timing of the GGML runtime, and the matmul roof, outside the end-to-end timing.

Each stage is one graph made with the very builders the runtime uses (`pocket_ggml.ggml_graphs`), on
the loaded model's weights and backends, fed seeded random activations of the product's shapes:

- FlowLM transformer: one latent row through input_linear, the transformer (its KV cache filled to
  the middle of the benchmark's sequence: voice rows + text tokens + frames / 2), out_norm, z_proj
  and the EOS head;
- flow head: the sampler (SimpleMLPAdaLN, `decode_steps` calls) from one conditioning row;
- Mimi transformer: the decoder's projected transformer over one frame (16 steps at 200 Hz) with
  its ring KV cache in the steady state (a full context window);
- SEANet: the decoder's SEANet over one frame (16 steps -> 1920 samples) with its streaming state.

Each stage's graph is built and allocated once (the runtime's `GraphRunner`, graph kept under a key),
then run N times: the figures are ggml compute and the copies of the stage's small inputs and outputs,
with the stage alone on the machine (in the product the FlowLM and Mimi threads overlap). The
product's own per-frame calls (`FlowLM.step`, `MimiDecoder.decode`: graph build + compute + copies)
are timed beside them, so the difference is the per-call Python and graph-building overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from pocket_ggml.ggml_binding import Tensor, ggml
from pocket_ggml.ggml_graphs.attention import attention_arrays, attention_inputs
from pocket_ggml.ggml_graphs.flow_lm import flow_head_sample, flow_lm_backbone, flow_lm_eos_logit, flow_lm_input
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.seanet import seanet_decoder, seanet_decoder_plan, seanet_state_shapes
from pocket_ggml.ggml_graphs.transformer import TransformerShape, projected_transformer
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, StateStore, WeightStore
from pocket_ggml.runtime.kv_cache import KVCache, kv_cache_specs, layer_caches
from pocket_ggml.runtime.model import PocketRuntime

STAGE_METHOD = (
    "stage graphs built once with the runtime's ggml_graphs builders on the model's weights, fed seeded "
    "random activations of the product shapes (FlowLM KV cache at mid-utterance, Mimi ring cache full), "
    "computed N times alone: median ggml compute per frame"
)
ROOF_SHAPE = (256, 2048, 2048)  # rows of activations M, inner size K, output size N
_BUDGET_S = 0.25  # time spent per measured graph (after one warm-up run)
_MIN_REPS, _MAX_REPS = 5, 200


def time_graph(
    backend: CpuBackend, build: Callable[[Graph], Mapping[str, Tensor]], inputs: Mapping[str, np.ndarray]
) -> float:
    """Median wall time in ms of one run of `build`'s graph on `inputs` (built and allocated once)."""
    runner = GraphRunner(backend)
    try:
        return median_ms(lambda: runner.run(build, inputs, key="stage"))
    finally:
        runner.close()


def median_ms(fn: Callable[[], object], budget_s: float = _BUDGET_S) -> float:
    """Median wall time of `fn()` in ms: one warm-up call, then enough calls to fill `budget_s`."""
    fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    reps = int(min(_MAX_REPS, max(_MIN_REPS, budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _fill(state: StateStore, specs: Mapping[str, object], rand: Callable[..., np.ndarray]) -> None:
    """Random K/V cache contents (whatever layout `kv_cache_specs` gives each tensor)."""
    for name in specs:
        state.set(name, 0.5 * rand(*state.shape(name)))


@dataclass(frozen=True)
class StageTimes:
    """Per-frame ggml compute of each stage, in ms."""

    flow_lm_transformer_ms: float
    flow_head_ms: float
    mimi_transformer_ms: float
    seanet_ms: float


def profile_stages(
    runtime: PocketRuntime,
    *,
    cache_rows: int,
    decode_steps: int = 1,
    seed: int = 0,
) -> StageTimes:
    """Time the four stages of a loaded `PocketRuntime` (its config, weights and two backends);
    the FlowLM transformer attends `cache_rows` cached rows plus its own."""
    cfg, w = runtime.config, runtime.weights
    lm_backend, mimi_backend = runtime.backend, runtime.mimi_backend
    f, m = cfg.flow_lm, cfg.mimi
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    # FlowLM transformer, one step at position `cache_rows`
    shape = TransformerShape.for_flow_lm(f)
    capacity = cache_rows + 1
    lm_specs = kv_cache_specs("bench", shape, capacity)
    lm_state = StateStore(lm_backend, lm_specs)
    _fill(lm_state, lm_specs, rand)
    kv = KVCache(capacity)
    kv.advance(cache_rows)
    plan = kv.plan(1)
    caches = layer_caches(lm_state, "bench", shape)

    def build_transformer(g: Graph) -> dict[str, Tensor]:
        x = flow_lm_input(g, w, f, g.input("latent", (1, m.latent_dim)), m.latent_dim)
        h = flow_lm_backbone(g, w, f, x, attention_inputs(g, plan, "attn", feed=False), caches, 1)
        return {"h": h, "eos": flow_lm_eos_logit(g, w, f, h)}

    def build_head(g: Graph) -> dict[str, Tensor]:
        h, noise = g.input("h", (1, f.cond_dim)), g.input("noise", (1, m.latent_dim))
        return {"latent": flow_head_sample(g, w, f, h, noise, decode_steps)}

    # Mimi decoder transformer over one frame, ring cache in the steady state
    tcfg = m.decoder_transformer
    s = m.resample_stride
    mshape = TransformerShape.for_mimi(tcfg)
    ring = KVCache.ring_capacity(tcfg.context, s)
    mimi_specs = kv_cache_specs("bench", mshape, ring)
    mimi_state = StateStore(mimi_backend, {**mimi_specs, **seanet_state_shapes(seanet_decoder_plan(m.decoder_seanet))})
    _fill(mimi_state, mimi_specs, rand)
    mkv = KVCache(ring, tcfg.context)
    mkv.advance(tcfg.context * 4)
    mplan = mkv.plan(s)
    mcaches = layer_caches(mimi_state, "bench", mshape)

    def build_mimi_transformer(g: Graph) -> dict[str, Tensor]:
        x = g.input("x", (s, tcfg.input_dimension))
        (y,) = projected_transformer(
            g, w, "mimi.decoder_transformer", x, tcfg, attention_inputs(g, mplan, "attn", feed=False), mcaches
        )
        return {"y": y}

    def build_seanet(g: Graph) -> dict[str, Tensor]:
        x = g.input("x", (s, m.decoder_seanet.dimension))
        return {"audio": seanet_decoder(g, w, m.decoder_seanet, x, mimi_state)}

    try:
        lm_inputs = {"latent": rand(1, m.latent_dim), **attention_arrays(plan, "attn")}
        t_transformer = time_graph(lm_backend, build_transformer, lm_inputs)
        t_head = time_graph(lm_backend, build_head, {"h": rand(1, f.cond_dim), "noise": 0.5 * rand(1, m.latent_dim)})
        mimi_inputs = {"x": rand(s, tcfg.input_dimension), **attention_arrays(mplan, "attn")}
        t_mimi = time_graph(mimi_backend, build_mimi_transformer, mimi_inputs)
        t_seanet = time_graph(mimi_backend, build_seanet, {"x": rand(s, m.decoder_seanet.dimension)})
    finally:
        lm_state.close()
        mimi_state.close()
    return StageTimes(t_transformer, t_head, t_mimi, t_seanet)


@dataclass(frozen=True)
class Roof:
    """Measured matmul throughput of this machine at a thread count (GFLOP/s)."""

    f32_gflops: float
    f16_gflops: float
    shape: tuple[int, int, int]

    @property
    def gflops(self) -> float:
        return max(self.f32_gflops, self.f16_gflops)

    @property
    def description(self) -> str:
        m, k, n = self.shape
        return f"best of ggml F32 and F16-weight matmuls, {m}x{k} @ {k}x{n}, median"


def matmul_roof(threads: int, shape: tuple[int, int, int] = ROOF_SHAPE, seed: int = 0) -> Roof:
    """GFLOP/s of one large ggml matmul (F32 activations times F32 or F16 weights) on `threads`."""
    m, k, n = shape
    rng = np.random.default_rng(seed)
    w32 = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    backend = CpuBackend(threads)
    store = WeightStore.from_arrays(backend, {"w32": w32, "w16": w32.astype(np.float16)})
    flops = 2.0 * m * k * n
    out = {}
    try:
        for name in ("w32", "w16"):

            def build(g: Graph, name: str = name) -> dict[str, Tensor]:
                return {"y": ggml.ggml_mul_mat(g.ctx, store[name], g.input("x", (m, k)))}

            out[name] = flops / (time_graph(backend, build, {"x": x}) * 1e-3) / 1e9
    finally:
        store.close()
        backend.close()
    return Roof(out["w32"], out["w16"], shape)
