"""The fast paths of the runtime give the results of the plain ones: channel-fast SEANet kernels, kept
(reused) graphs, CPU_REPACK weights, weights read from the file. No timing here (bench/ measures)."""

from __future__ import annotations

import numpy as np
import pytest
from _ggml_parity import rel_err
from _parity_runs import synthetic_model
from gguf import GGMLQuantizationType

from pocket_ggml.format.config import load_released_config
from pocket_ggml.ggml_binding import (
    GGML_TYPE_F16,
    GGML_TYPE_F32,
    GGML_TYPE_Q4_0,
    GGML_TYPE_Q4_K,
    GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K,
    GGML_TYPE_Q8_0,
    overlapping_view_2d,
    quantize_rows,
    repackable,
)
from pocket_ggml.ggml_graphs.seanet import seanet_decoder, seanet_decoder_plan, seanet_state_shapes
from pocket_ggml.runtime.flow_lm import FlowLM
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, RawTensor, StateStore, WeightStore
from pocket_ggml.runtime.mimi import MimiDecoder, prepare_decoder_weights
from pocket_ggml.runtime.model import prepare_weights
from pocket_ggml.runtime.model_file import ModelFile

CONFIG = "english_2m_2026-10"


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def _weights(backend: CpuBackend, mix: str, config: str = CONFIG) -> WeightStore:
    return ModelFile(synthetic_model(config, mix)[1]).load_weights(backend)


def test_channel_fast_seanet_decoder_matches_im2col_col2im(backend):
    cfg = load_released_config(CONFIG)
    plain, fast = _weights(backend, "F32"), _weights(backend, "F32")
    prepare_decoder_weights(cfg, fast, backend)
    assert len(fast) > len(plain)
    s = cfg.mimi.decoder_seanet
    rng = np.random.default_rng(0)
    outs = {}
    for label, w in (("plain", plain), ("fast", fast)):
        state = StateStore(backend, seanet_state_shapes(seanet_decoder_plan(s)))
        runner = GraphRunner(backend)
        outs[label] = []
        for n in (16, 16, 32):  # streaming: histories and partials carry over
            x = rng.standard_normal((n, s.dimension)).astype(np.float32)

            def build(g, n=n, w=w, state=state):
                return {"audio": seanet_decoder(g, w, s, g.input("x", (n, s.dimension)), state)}

            outs[label].append(runner.run(build, {"x": x}, key=n)["audio"].reshape(-1))
        rng = np.random.default_rng(0)
    for a, b in zip(outs["plain"], outs["fast"]):
        assert rel_err(b, a) <= 1e-6


def test_kept_graphs_match_rebuilt_ones(backend):
    """Mimi frames and FlowLM steps through a kept graph equal the rebuilt (stages) path."""
    cfg = load_released_config(CONFIG)
    w = _weights(backend, "F32")
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((12, cfg.mimi.latent_dim)).astype(np.float32)
    kept, rebuilt = MimiDecoder(cfg, w, backend), MimiDecoder(cfg, w, backend)
    for x in latents:
        a = kept.decode(x[None])
        b, _ = rebuilt.decode(x[None], stages=True)
        assert rel_err(a, b) <= 1e-6

    lm = FlowLM(cfg, w, backend)
    lm.voice_prompt(rng.standard_normal((5, cfg.mimi.speaker_dim)).astype(np.float32))
    lm.restore(lm.snapshot(), extra_rows=50)
    lm.text_prompt(np.arange(7, dtype=np.int32))
    start = lm.snapshot()
    noise = rng.standard_normal((40, cfg.mimi.latent_dim)).astype(np.float32)
    runs = []
    for stages in (False, True):
        lm.restore(start, extra_rows=50)
        latent, outs = None, []
        for z in noise:  # crosses key buckets: the kept graph is rebuilt on the way
            out = lm.step(latent, z, stages=stages)
            latent = out.latent
            outs.append(np.append(out.latent, out.eos_logit))
        runs.append(np.array(outs))
    assert rel_err(runs[0], runs[1]) <= 1e-5


def test_repacked_flow_lm_matches_plain_weights(backend):
    """Per layer, CPU_REPACK gives ggml's plain Q4_K results up to summation order. (Further down, the
    8-bit rounding of activations in both kernels flips on such differences: synthetic weights
    amplify them ~30x per layer, so only the first layers are compared.)"""
    cfg = load_released_config("english")  # english_2m's rows are too short for Q4_K
    plain, packed = _weights(backend, "Q4_K_M", "english"), _weights(backend, "Q4_K_M", "english")
    prepare_weights(packed, backend)
    voice = np.random.default_rng(2).standard_normal((6, cfg.mimi.speaker_dim)).astype(np.float32)
    stages = [FlowLM(cfg, w, backend).voice_prompt(voice, stages=True).stages for w in (plain, packed)]
    for layer in ("layer00", "layer01"):
        assert rel_err(stages[1][layer], stages[0][layer]) <= 1e-5, layer
    repacked = "lm.blk.0.ffn_up.weight"
    assert packed.ggml_type(repacked) == GGML_TYPE_Q4_K
    with pytest.raises(ValueError, match="CPU_REPACK"):
        packed.get(repacked)  # ggml has no way back from the interleaved layout


def test_repack_takes_only_types_with_kernels(backend):
    rng = np.random.default_rng(3)
    m = rng.standard_normal((64, 256)).astype(np.float32)
    q8 = RawTensor(GGML_TYPE_Q8_0, m.shape, quantize_rows(m, GGMLQuantizationType.Q8_0).reshape(-1))
    store = WeightStore.from_arrays(backend, {"a": m})
    with pytest.raises(ValueError, match="CPU_REPACK"):
        store.put(backend, {"q8": q8}, repack=True)  # ggml would segfault
    assert not repackable(GGML_TYPE_Q4_K, (12, 256))
    assert not repackable(GGML_TYPE_F32, (64, 256))


@pytest.mark.parametrize(
    ("cpu", "q4_k", "rows4", "arm_types"),
    [
        ({"avx2": 1}, True, False, False),  # x86: the 8x8 Q4_0/Q4_K kernels only
        ({"neon": 1}, False, False, False),  # Cortex-A72 (Raspberry Pi 4): no kernel; tensor_set would segfault
        ({"neon": 1, "dotprod": 1}, True, True, True),  # Cortex-A76 (Pi 5)
        ({"neon": 1, "dotprod": 1, "matmul_int8": 1}, True, True, True),  # armv8.6 phone cores
    ],
)
def test_repackable_follows_ggmls_kernel_choice(monkeypatch, cpu, q4_k, rows4, arm_types):
    """`repackable` mirrors ggml_repack_get_optimal_repack_type for each CPU class (scripts/check-aarch64.sh
    runs the real NEON-only and i8mm builds under qemu)."""
    from pocket_ggml import ggml_binding

    for feature in ("avx2", "neon", "dotprod", "matmul_int8"):
        has = cpu.get(feature, 0)
        monkeypatch.setattr(ggml_binding.ggml, f"ggml_cpu_has_{feature}", lambda has=has: has)
    assert repackable(GGML_TYPE_Q4_K, (64, 256)) is q4_k
    assert repackable(GGML_TYPE_Q4_0, (12, 256)) is rows4
    assert repackable(GGML_TYPE_Q8_0, (12, 256)) is rows4
    assert repackable(GGML_TYPE_Q8_0, (64, 256)) is arm_types
    assert repackable(GGML_TYPE_Q5_K, (64, 256)) is arm_types
    assert repackable(GGML_TYPE_Q6_K, (64, 256)) is arm_types
    assert not repackable(GGML_TYPE_Q4_K, (12, 256))
    assert not repackable(GGML_TYPE_Q6_K, (12, 256))
    assert not repackable(GGML_TYPE_F16, (64, 256))


def test_weights_read_from_the_file_equal_the_mapped_bytes(backend):
    w = _weights(backend, "Q4_K_M")
    for name in list(w)[:40]:
        a = w.get(name)
        mapped = np.empty_like(a)
        # the base class reads through ggml (the mapped memory)
        super(WeightStore, w)._read_into(name, mapped)
        assert np.array_equal(a.view(np.uint8), mapped.view(np.uint8)), name


def test_overlapping_view_checks_its_bounds(backend):
    store = StateStore(backend, {"x": ((10, 4), GGML_TYPE_F32)})
    runner = GraphRunner(backend)
    store.set("x", np.arange(40, dtype=np.float32).reshape(10, 4))

    def build(g):
        return {"w": overlapping_view_2d(g.ctx, store["x"], 12, 8, 16)}  # windows of 3 steps

    out = runner.run(build, {})["w"]
    assert np.array_equal(out[1], np.arange(4, 16, dtype=np.float32))

    def bad(g):
        return {"w": overlapping_view_2d(g.ctx, store["x"], 12, 9, 16)}

    with pytest.raises(ValueError, match="outside"):
        runner.run(bad, {})


def test_released_pages_read_back_the_same_values(backend):
    """Dropping a mapped tensor's pages loses nothing: the next read comes from the file again."""
    w = _weights(backend, "Q4_K_M")
    names = [n for n in w if n.startswith("mimi.enc")][:20]
    assert names
    before = {n: w.get(n) for n in names}
    mapped = {n: np.empty_like(a) for n, a in before.items()}
    for n in names:  # through the mapping, so that its pages are resident before they are dropped
        super(WeightStore, w)._read_into(n, mapped[n])
    w.release_pages(names)
    for n in names:
        again = np.empty_like(before[n])
        super(WeightStore, w)._read_into(n, again)
        assert np.array_equal(again.view(np.uint8), before[n].view(np.uint8)), n


def test_release_pages_leaves_memory_of_its_own_alone(backend):
    """A store over anonymous memory (or copies made by `put`) keeps its values: MADV_DONTNEED would
    zero anonymous pages."""
    values = np.arange(4096 * 4, dtype=np.float32)
    store = WeightStore.from_arrays(backend, {"w": values})
    store.release_pages(["w"])
    assert np.array_equal(store.get("w"), values)


def test_cloning_leaves_no_encoder_behind():
    """The encoder's kernel copies and state live only while a prompt is encoded: the weight store
    afterwards holds what it held before, and a second clone gives the same latents."""
    from pocket_ggml.runtime.model import PocketRuntime
    from pocket_ggml.voices.audio import prompt_latents

    rt = PocketRuntime(synthetic_model(CONFIG, "Q4_K_M")[1])
    try:
        names = set(rt.weights)
        audio = np.sin(np.arange(24000 * 2) * 0.05).astype(np.float32) * 0.3
        first = prompt_latents(rt, audio, 24000)
        assert set(rt.weights) == names
        assert np.array_equal(prompt_latents(rt, audio, 24000), first)
    finally:
        rt.close()


def test_malloc_threshold_is_left_to_a_user_who_set_it(monkeypatch):
    import platform

    from pocket_ggml import ggml_binding

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not ggml_binding._fix_mmap_threshold()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert ggml_binding._fix_mmap_threshold() == (platform.libc_ver()[0] == "glibc")
