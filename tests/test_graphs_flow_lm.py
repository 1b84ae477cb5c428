"""FlowLM graphs against pocket-tts 4.0.1: transformer with its persistent KV cache, text and voice
conditioning, the whole backbone (out_norm, z_proj, EOS logit) and the sampled latent, teacher-forced."""

from __future__ import annotations

import numpy as np
import pytest
from _ggml_parity import REL_TOL, rel_err, weights_from_torch
from _reference import reference_model, require_reference

from pocket_ggml.format.config import load_released_config
from pocket_ggml.ggml_graphs.attention import attention_inputs
from pocket_ggml.ggml_graphs.flow_lm import (
    flow_lm_step,
    flow_lm_text_embeddings,
    flow_lm_voice_conditioning,
    replace_nan_with_bos,
)
from pocket_ggml.ggml_graphs.transformer import TransformerShape, streaming_transformer, transformer_layer
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, StateStore
from pocket_ggml.runtime.kv_cache import KVCache, kv_cache_specs, layer_caches

CONFIGS = ["english", "english_2m_2026-10", "english_7m_2026-10"]
CAPACITY = 48
TEMP = 0.3


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def _ref_state(flow_lm, capacity: int):
    from pocket_tts.modules.stateful_module import init_states

    return init_states(flow_lm, batch_size=1, sequence_length=capacity)


@pytest.mark.parametrize("config", CONFIGS)
def test_flow_lm_transformer_layer_with_kv_cache_matches_reference(config, backend):
    """Layer 0 alone: a 13-row prefill, then single rows and a 3-row call at growing offsets."""
    torch = require_reference()
    from pocket_tts.modules.stateful_module import increment_steps

    cfg = load_released_config(config).flow_lm
    model = reference_model(config)
    layer = model.flow_lm.transformer.layers[0]
    w = weights_from_torch(backend, model, "flow_lm.transformer.layers.0.")
    shape = TransformerShape.for_flow_lm(cfg)
    state = StateStore(backend, kv_cache_specs("lm", shape, CAPACITY))
    cache = layer_caches(state, "lm", shape)[0]
    kv, runner, ref_state = KVCache(CAPACITY), GraphRunner(backend), _ref_state(model.flow_lm, CAPACITY)
    gen = torch.Generator().manual_seed(1)
    for n in (13, 1, 1, 3, 1):
        x = torch.randn(1, n, cfg.d_model, generator=gen)
        with torch.no_grad():
            ref = layer(x, ref_state)[0].numpy()
        increment_steps(model.flow_lm, ref_state, n)
        plan = kv.plan(n)

        def build(g):
            inputs = attention_inputs(g, plan, "attn")
            x_in = g.input("x", (n, cfg.d_model))
            return {"y": transformer_layer(g, w, "flow_lm.transformer.layers.0", x_in, shape, inputs, cache)}

        out = runner.run(build, {"x": x[0].numpy()})["y"].reshape(n, cfg.d_model)
        kv.advance(n)
        assert rel_err(out, ref) <= REL_TOL, (config, kv.offset)


@pytest.mark.parametrize("config", CONFIGS)
def test_flow_lm_streaming_transformer_matches_reference(config, backend):
    torch = require_reference()
    from pocket_tts.modules.stateful_module import increment_steps

    cfg = load_released_config(config).flow_lm
    model = reference_model(config)
    w = weights_from_torch(backend, model, "flow_lm.transformer.")
    shape = TransformerShape.for_flow_lm(cfg)
    state = StateStore(backend, kv_cache_specs("lm", shape, CAPACITY))
    caches = layer_caches(state, "lm", shape)
    kv, runner, ref_state = KVCache(CAPACITY), GraphRunner(backend), _ref_state(model.flow_lm, CAPACITY)
    gen = torch.Generator().manual_seed(2)
    for n in (9, 1, 2, 1):
        x = torch.randn(1, n, cfg.d_model, generator=gen)
        with torch.no_grad():
            ref = model.flow_lm.transformer(x, ref_state)[0].numpy()
        increment_steps(model.flow_lm, ref_state, n)
        plan = kv.plan(n)

        def build(g):
            inputs = attention_inputs(g, plan, "attn")
            x_in = g.input("x", (n, cfg.d_model))
            return {"y": streaming_transformer(g, w, "flow_lm.transformer", x_in, shape, inputs, caches)}

        out = runner.run(build, {"x": x[0].numpy()})["y"].reshape(n, cfg.d_model)
        kv.advance(n)
        assert rel_err(out, ref) <= REL_TOL, (config, kv.offset)


@pytest.mark.parametrize("config", CONFIGS)
def test_flow_lm_conditioning_rows_match_reference(config, backend):
    """Text rows (LUT, low-rank + proj on 2m/7m) and voice rows (bos_before_voice + speaker_proj)."""
    torch = require_reference()
    pcfg = load_released_config(config)
    cfg = pcfg.flow_lm
    model = reference_model(config)
    w = weights_from_torch(backend, model, "flow_lm.")
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, cfg.n_bins, (1, 11), generator=gen)
    latents = torch.randn(1, 6, pcfg.mimi.speaker_dim, generator=gen)
    with torch.no_grad():
        ref_text = model.flow_lm.conditioner(tokens)[0].numpy()
        ref_voice = torch.nn.functional.linear(latents, model.flow_lm.speaker_proj_weight)
        ref_voice = torch.cat([model.flow_lm.bos_before_voice, ref_voice], dim=1)[0].numpy()

    def build(g):
        return {
            "text": flow_lm_text_embeddings(g, w, cfg, g.input("tokens", (11,), np.int32)),
            "voice": flow_lm_voice_conditioning(g, w, cfg, g.input("latents", latents[0].shape)),
        }

    inputs = {"tokens": tokens[0].numpy(), "latents": latents[0].numpy()}
    out = GraphRunner(backend).run(build, inputs)
    assert rel_err(out["text"], ref_text) <= REL_TOL
    assert rel_err(out["voice"], ref_voice) <= REL_TOL


@pytest.mark.parametrize("config", CONFIGS)
def test_flow_lm_frames_match_reference(config, backend):
    """Voice prompt, text prompt, BOS frame, then teacher-forced latents: after each call the
    backbone output h (out_norm, z_proj), the EOS logit and the sampled latent, at temp 0 and with
    the reference's own noise injected."""
    torch = require_reference()
    from pocket_tts.modules.stateful_module import increment_steps

    pcfg = load_released_config(config)
    cfg, latent_dim = pcfg.flow_lm, pcfg.mimi.latent_dim
    flm = reference_model(config).flow_lm
    w = weights_from_torch(backend, reference_model(config), "flow_lm.")
    shape = TransformerShape.for_flow_lm(cfg)
    state = StateStore(backend, kv_cache_specs("lm", shape, CAPACITY))
    caches = layer_caches(state, "lm", shape)
    kv, runner, ref_state = KVCache(CAPACITY), GraphRunner(backend), _ref_state(flm, CAPACITY)
    gen = torch.Generator().manual_seed(4)
    voice = torch.randn(1, 5, pcfg.mimi.speaker_dim, generator=gen)
    tokens = torch.randint(0, cfg.n_bins, (1, 9), generator=gen)
    bos = torch.full((1, 1, latent_dim), float("nan"))
    calls = [("voice", None, 0.0), ("text", None, TEMP), (None, bos, 0.0)]
    calls += [(None, torch.randn(1, 1, latent_dim, generator=gen), temp) for temp in (TEMP, 0.0, TEMP)]
    bos_emb = flm.bos_emb.detach().numpy()

    for seed, (cond, latents, temp) in enumerate(calls):
        seq = latents if latents is not None else torch.empty(1, 0, latent_dim)
        with torch.no_grad():
            if cond == "voice":
                cond_ref = torch.nn.functional.linear(voice, flm.speaker_proj_weight)
                cond_ref = torch.cat([flm.bos_before_voice, cond_ref], dim=1)
            elif cond == "text":
                cond_ref = flm.conditioner(tokens)
            else:
                cond_ref = torch.empty(1, 0, cfg.d_model)
            filled = torch.where(torch.isnan(seq), flm.bos_emb, seq)
            h_ref = flm.backbone(flm.input_linear(filled), cond_ref, seq, ref_state)[:, -1]
            eos_ref = flm.out_eos(h_ref)[0].numpy()
            torch.manual_seed(seed)
            latent_ref, _ = flm(seq, cond_ref, ref_state, 1, temp, None, 0.0)
            torch.manual_seed(seed)
            noise = torch.empty(1, latent_dim).normal_(0.0, temp**0.5).numpy()
        n = cond_ref.shape[1] + seq.shape[1]
        increment_steps(flm, ref_state, n)
        plan = kv.plan(n)

        def build(g):
            cond_rows = None
            if cond == "voice":
                cond_rows = flow_lm_voice_conditioning(g, w, cfg, g.feed("voice", voice[0].numpy()))
            elif cond == "text":
                ids = g.feed("tokens", tokens[0].numpy().astype(np.int32))
                cond_rows = flow_lm_text_embeddings(g, w, cfg, ids)
            latent_rows = None
            if latents is not None:
                latent_rows = g.feed("latents", replace_nan_with_bos(latents[0].numpy(), bos_emb))
            inputs = attention_inputs(g, plan, "attn")
            noise_in = g.input("noise", (1, latent_dim))
            return flow_lm_step(g, w, cfg, cond_rows, latent_rows, inputs, caches, noise_in)

        out = runner.run(build, {"noise": noise})
        kv.advance(n)
        where = (config, cond, kv.offset)
        assert rel_err(out["h"], h_ref[0].numpy()) <= REL_TOL, where
        eos = out["eos_logit"].item()
        assert abs(eos - eos_ref.item()) <= REL_TOL * max(1.0, abs(eos_ref.item())), where
        assert rel_err(out["latent"], latent_ref[0].numpy()) <= REL_TOL, where
