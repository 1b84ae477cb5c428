"""FlowLM runtime behaviour: voice snapshots, cache growth, bad calls, no per-step memory growth."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from _parity_runs import synthetic_model

from pocket_ggml.errors import GenerationError
from pocket_ggml.runtime.flow_lm import FlowLM, sample_noise
from pocket_ggml.runtime.generate import generate_latents
from pocket_ggml.runtime.ggml_backend import CpuBackend
from pocket_ggml.runtime.model_file import ModelFile

CONFIG = "english_2m_2026-10"
# Python heap growth allowed over 100 steps: live objects differ a little between two snapshots
# (measured 0.8-2 KB), while leaking even one 56-byte object per step would add 5.6 KB.
MAX_GROWTH_BYTES = 4096


@pytest.fixture(scope="module")
def flow_lm():
    mf = ModelFile(synthetic_model(CONFIG)[1])
    be = CpuBackend(1)
    yield FlowLM(mf.config, mf.load_weights(be), be)
    be.close()


def _voice(flm: FlowLM, seed: int = 0):
    latents = np.random.default_rng(seed).standard_normal((12, flm.cfg.mimi.speaker_dim)).astype(np.float32)
    flm.voice_prompt(latents)
    return flm.snapshot()


def test_restored_voice_state_gives_identical_frames(flow_lm):
    voice = _voice(flow_lm)
    runs = []
    for _ in range(2):
        frames = generate_latents(
            flow_lm,
            voice,
            np.arange(5, 17),
            lambda: np.zeros(32, np.float32),
            eos_threshold=np.inf,
            frames_after_eos=2,
            max_frames=8,
        )
        runs.append(np.stack([f.latent for f in frames]))
    assert runs[0].shape == (8, 32)
    np.testing.assert_array_equal(runs[0], runs[1])
    other = _voice(flow_lm, seed=1)
    frames = generate_latents(
        flow_lm,
        other,
        np.arange(5, 17),
        lambda: np.zeros(32, np.float32),
        eos_threshold=np.inf,
        frames_after_eos=2,
        max_frames=8,
    )
    assert not np.allclose(np.stack([f.latent for f in frames]), runs[0])


def test_cache_growth_keeps_the_rows_already_there(flow_lm):
    voice = _voice(flow_lm)
    flow_lm.restore(voice)
    before = flow_lm.snapshot()
    flow_lm.reserve(flow_lm.kv.capacity + 100)
    after = flow_lm.snapshot()
    np.testing.assert_array_equal(before.k, after.k)
    np.testing.assert_array_equal(before.v, after.v)


def test_bad_calls_are_generation_errors(flow_lm):
    voice = _voice(flow_lm)
    with pytest.raises(GenerationError):
        flow_lm.voice_prompt(np.zeros((3, 7), np.float32))
    flow_lm.restore(voice, extra_rows=2)
    with pytest.raises(GenerationError, match="cache holds"):  # more rows than the cache has room for
        flow_lm.text_prompt(np.ones(flow_lm.kv.capacity - flow_lm.offset + 1, np.int32))
    with pytest.raises(GenerationError):
        flow_lm.text_prompt(np.array([4001]))
    with pytest.raises(GenerationError):
        next(
            generate_latents(
                flow_lm,
                voice,
                np.arange(3),
                lambda: np.zeros(32, np.float32),
                eos_threshold=float("nan"),
                frames_after_eos=1,
                max_frames=3,
            )
        )


def test_steps_do_not_grow_python_memory(flow_lm):
    """Heap growth over 100 steps, measured after 100 steps of warm-up (one-time caches filled)."""
    voice = _voice(flow_lm)
    rng = np.random.default_rng(0)
    gen = generate_latents(
        flow_lm,
        voice,
        np.arange(1, 9),
        lambda: sample_noise(rng, 32, 0.3, None),
        eos_threshold=np.inf,
        frames_after_eos=2,
        max_frames=300,
    )
    not_tracemalloc = [tracemalloc.Filter(False, tracemalloc.__file__)]
    tracemalloc.start()
    try:
        snapshots = []
        for _ in range(2):
            for _ in range(100):
                next(gen)
            gc.collect()
            snapshots.append(tracemalloc.take_snapshot().filter_traces(not_tracemalloc))
    finally:
        tracemalloc.stop()
    growth = sum(d.size_diff for d in snapshots[1].compare_to(snapshots[0], "filename"))
    assert growth < MAX_GROWTH_BYTES


def test_truncated_noise_stays_within_the_clamp():
    rng = np.random.default_rng(0)
    x = np.concatenate([sample_noise(rng, 32, 4.0, 0.5) for _ in range(100)])
    assert np.abs(x).max() <= 0.5 and x.std() > 0.2
    assert not sample_noise(rng, 32, 0.0, None).any()
