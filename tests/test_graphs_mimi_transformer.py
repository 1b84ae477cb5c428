"""Mimi transformers against pocket-tts 4.0.1: the streaming decoder transformer over more steps than
its context window (ring-buffer KV cache, LayerScale), and the stateless encoder transformer."""

from __future__ import annotations

import pytest
from _ggml_parity import REL_TOL, rel_err, weights_from_torch
from _reference import reference_model, require_reference

from pocket_ggml.format.config import load_released_config
from pocket_ggml.ggml_graphs.attention import attention_inputs, stateless_plan
from pocket_ggml.ggml_graphs.transformer import TransformerShape, projected_transformer
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, StateStore
from pocket_ggml.runtime.kv_cache import KVCache, kv_cache_specs, layer_caches

CASES = [  # (config, latent frames per decoder call, in order)
    ("english", [1] * 20),  # 320 steps, context 250
    ("english_2m_2026-10", [1, 2, 3, 1, 1, 3, 2, 1, 1, 1, 3, 2, 1]),  # 352 steps, context 50
]


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def _run_decoder(backend, config, frames_per_call, context, gen):
    """Our decoder transformer call by call, with the reference's inputs: (outputs, refs, cache)."""
    torch = require_reference()
    from pocket_tts.modules.stateful_module import increment_steps, init_states

    mcfg = load_released_config(config).mimi
    tc, stride = mcfg.decoder_transformer, mcfg.resample_stride
    model = reference_model(config)
    w = weights_from_torch(backend, model, "mimi.decoder_transformer.")
    shape = TransformerShape.for_mimi(tc)
    total = stride * sum(frames_per_call)
    max_rows = stride * max(frames_per_call)
    capacity = total if context is None else KVCache.ring_capacity(context, max_rows)
    state = StateStore(backend, kv_cache_specs("mimi.dec", shape, capacity))
    caches = layer_caches(state, "mimi.dec", shape)
    kv, runner = KVCache(capacity, context), GraphRunner(backend)
    ref_state = init_states(model.mimi, batch_size=1, sequence_length=total)
    outs, refs = [], []
    for frames in frames_per_call:
        n = stride * frames
        x = torch.randn(1, tc.input_dimension, n, generator=gen)
        with torch.no_grad():
            refs.append(model.mimi.decoder_transformer(x, ref_state)[0][0].numpy().T)
        increment_steps(model.mimi, ref_state, increment=n)
        plan = kv.plan(n)

        def build(g):
            inputs = attention_inputs(g, plan, "attn")
            xi = g.input("x", (n, tc.input_dimension))
            (y,) = projected_transformer(g, w, "mimi.decoder_transformer", xi, tc, inputs, caches)
            return {"y": y}

        outs.append(runner.run(build, {"x": x[0].numpy().T})["y"])
        kv.advance(n)
    return outs, refs, kv


@pytest.mark.parametrize(("config", "frames_per_call"), CASES)
def test_mimi_decoder_transformer_ring_cache_matches_reference(config, frames_per_call, backend):
    torch = require_reference()
    context = load_released_config(config).mimi.decoder_transformer.context
    gen = torch.Generator().manual_seed(9)
    outs, refs, kv = _run_decoder(backend, config, frames_per_call, context, gen)
    assert kv.offset > kv.capacity  # the ring wrapped: memory stays bounded by the window
    for i, (out, ref) in enumerate(zip(outs, refs)):
        assert rel_err(out, ref) <= REL_TOL, (config, i)


def test_mimi_decoder_window_matters(backend):
    """Guard for the test above: attending past the window gives a clearly different output."""
    torch = require_reference()
    config, frames = CASES[1]
    outs, refs, _ = _run_decoder(backend, config, frames, None, torch.Generator().manual_seed(9))
    assert rel_err(outs[-1], refs[-1]) > 100 * REL_TOL


@pytest.mark.parametrize("config", ["english", "english_2m_2026-10"])
def test_mimi_encoder_transformer_stateless_matches_reference(config, backend):
    """The encoder runs without state over a whole prompt (here longer than its window)."""
    torch = require_reference()
    tc = load_released_config(config).mimi.encoder_transformer
    model = reference_model(config)
    w = weights_from_torch(backend, model, "mimi.encoder_transformer.")
    n = tc.context + 40
    x = torch.randn(1, tc.input_dimension, n, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        ref = model.mimi.encoder_transformer(x, model_state=None)[0][0].numpy().T
    plan = stateless_plan(n, tc.context)

    def build(g):
        inputs = attention_inputs(g, plan, "attn")
        xi = g.input("x", (n, tc.input_dimension))
        (y,) = projected_transformer(g, w, "mimi.encoder_transformer", xi, tc, inputs, None)
        return {"y": y}

    out = GraphRunner(backend).run(build, {"x": x[0].numpy().T})["y"]
    assert rel_err(out, ref) <= REL_TOL
