"""Mimi's quantizer projection, streaming upsample and encoder downsample against pocket-tts 4.0.1,
teacher-forced (the reference's modules and ours get the same inputs)."""

from __future__ import annotations

import pytest
from _ggml_parity import REL_TOL, rel_err, weights_from_torch
from _reference import reference_model, require_reference

from pocket_ggml.format.config import load_released_config
from pocket_ggml.ggml_graphs.mimi_resample import (
    conv_downsample,
    conv_tr_upsample,
    conv_tr_upsample_state_shapes,
    quantizer_output_proj,
)
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, StateStore

CONFIGS = ["english", "english_2m_2026-10"]
FRAMES_PER_CALL = [1, 1, 2, 1, 3, 1]  # the reference's Mimi thread decodes every queued latent at once


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


@pytest.mark.parametrize("config", CONFIGS)
def test_quantizer_output_proj_and_upsample_stream_like_reference_f32(backend, config):
    torch = require_reference()
    from pocket_tts.modules.stateful_module import init_states

    cfg = load_released_config(config).mimi
    model = reference_model(config)
    weights = weights_from_torch(backend, model, "mimi.")
    shapes = conv_tr_upsample_state_shapes(cfg)
    state = StateStore(backend, shapes)
    ref_state = init_states(model.mimi, batch_size=1, sequence_length=cfg.resample_stride * sum(FRAMES_PER_CALL))
    runner = GraphRunner(backend)
    gen = torch.Generator().manual_seed(0)
    for call, n in enumerate(FRAMES_PER_CALL):
        latent = torch.randn(1, n, cfg.latent_dim, generator=gen) * model.flow_lm.emb_std + model.flow_lm.emb_mean
        with torch.no_grad():
            ref_q = model.mimi.quantizer(latent.transpose(-1, -2))
            ref_up = model.mimi.upsample(ref_q, ref_state)

        def build(g):
            q = quantizer_output_proj(g, weights, cfg, g.input("latent", (n, cfg.latent_dim)))
            return {"q": q, "up": conv_tr_upsample(g, weights, cfg, q, state)}

        out = runner.run(build, {"latent": latent[0].numpy()})
        q, up = out["q"].reshape(n, -1), out["up"]
        assert up.shape == (n * cfg.resample_stride, cfg.decoder_seanet.dimension)
        assert rel_err(q, ref_q[0].numpy().T) <= REL_TOL, f"call {call}"
        assert rel_err(up, ref_up[0].numpy().T) <= REL_TOL, f"call {call}"
    (name,) = shapes
    module, key = name.rsplit(".", 1)
    assert rel_err(state.get(name), ref_state[module][key][0].numpy().T) <= REL_TOL


@pytest.mark.parametrize("config", CONFIGS)
def test_conv_downsample_matches_reference_f32(backend, config):
    """On ~1 s of the reference encoder's 200 Hz output (SEANet + transformer), replicate-padded."""
    torch = require_reference()
    cfg = load_released_config(config).mimi
    model = reference_model(config)
    weights = weights_from_torch(backend, model, "mimi.downsample.")
    steps = 12 * cfg.resample_stride  # 0.96 s
    audio = torch.randn(1, 1, steps * cfg.encoder_seanet.hop_length, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (emb,) = model.mimi.encoder_transformer(model.mimi.encoder(0.1 * audio, model_state=None), model_state=None)
        ref = model.mimi.downsample(emb, model_state=None)[0].numpy().T
    x = emb[0].numpy().T

    def build(g):
        return {"latent": conv_downsample(g, weights, cfg, g.input("x", x.shape))}

    ours = GraphRunner(backend).run(build, {"x": x})["latent"]
    assert ours.shape == ref.shape == (12, cfg.speaker_dim)
    assert rel_err(ours, ref) <= REL_TOL
