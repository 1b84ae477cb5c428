"""Stage-by-stage parity of our runtime with the official pocket-tts 4.0.1, on the same synthetic
weights, text, voice and noise, teacher-forced (every stage gets the reference's own inputs).

Required (issue #3): relative error ||ours - ref|| / ||ref|| <= 1e-4 at every stage, F32, for
english, english_2m, english_7m and a 24-layer config, at temp 0 and at temp 0.3 with the
reference's noise injected.
"""

from __future__ import annotations

import numpy as np
import pytest
from _ggml_parity import REL_TOL, rel_err
from _parity_runs import TEXT, reference_run, synthetic_model

from pocket_ggml.runtime.flow_lm import FlowLM
from pocket_ggml.runtime.ggml_backend import CpuBackend
from pocket_ggml.runtime.model_file import ModelFile
from pocket_ggml.runtime.text import Tokenizer, prepare_text_prompt

CONFIGS = ["english", "english_2m_2026-10", "english_7m_2026-10", "english_2026-04_24l"]
FRAMES = 10


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def _layers(stages: dict, prefix: str, dump, n_layers: int, row: int | None = None):
    for i in range(n_layers):
        ref = dump[f"{prefix}_layer{i:02d}_out"]
        where = prefix if row is None else f"{prefix} {row}"
        yield f"{where} layer {i}", stages[f"layer{i:02d}"], (ref if row is None else ref[row : row + 1])


@pytest.mark.parametrize("temp", [0.0, 0.3])
@pytest.mark.parametrize("config", CONFIGS)
def test_flow_lm_stages_match_reference(backend, config, temp):
    dump = reference_run(config, temp=temp, frames=FRAMES)
    _, gguf = synthetic_model(config)
    mf = ModelFile(gguf)
    cfg = mf.config
    n_layers = cfg.flow_lm.num_layers
    tok = Tokenizer(mf.tokenizer_bytes())
    tokens = np.asarray(tok.encode(prepare_text_prompt(TEXT, cfg.text).text))
    np.testing.assert_array_equal(tokens, dump["tokens"])

    flm = FlowLM(cfg, mf.load_weights(backend), backend)
    checks: list[tuple[str, np.ndarray, np.ndarray]] = []
    voice = flm.voice_prompt(dump["voice_mimi_latents"][0].T, stages=True)
    checks.append(("voice conditioning", voice.stages["cond"], dump["voice_conditioning"]))
    checks += _layers(voice.stages, "voice", dump, n_layers)
    checks.append(("voice out_norm", voice.stages["hidden"], dump["voice_pass_out_norm"]))

    flm.reserve(flm.offset + len(tokens) + FRAMES)
    text = flm.text_prompt(tokens, stages=True)
    checks.append(("text embeddings", text.stages["cond"], dump["text_embeddings"]))
    checks += _layers(text.stages, "text", dump, n_layers)
    checks.append(("text out_norm", text.stages["hidden"], dump["text_pass_out_norm"]))
    checks.append(("text EOS logit", np.array([text.eos_logit]), dump["text_pass_eos_logit"]))

    inputs, noise = dump["step_input_latent"], dump["step_noise"]
    eos, latents = [], []
    for i in range(FRAMES):
        latent_in = None if np.isnan(inputs[i]).all() else inputs[i]
        out = flm.step(latent_in, noise[i], stages=True)
        checks += _layers(out.stages, "step", dump, n_layers, row=i)
        checks.append(
            (f"step {i} transformer out", out.stages["transformer_out"], dump["step_transformer_out"][i : i + 1])
        )
        checks.append((f"step {i} hidden", out.stages["hidden"], dump["step_hidden"][i : i + 1]))
        if cfg.flow_lm.z_dim:
            checks.append((f"step {i} z", out.stages["z"], dump["step_z"][i : i + 1]))
        eos.append(out.eos_logit)
        latents.append(out.latent)
    checks.append(("EOS logits", np.array(eos), dump["step_eos_logit"]))
    checks.append(("latents (flow head output)", np.stack(latents), dump["step_latent"]))

    errors = {name: rel_err(ours.reshape(ref.shape), ref) for name, ours, ref in checks}
    bad = {k: v for k, v in errors.items() if not v <= REL_TOL}
    assert not bad, f"{config} temp {temp}: stages over {REL_TOL}: {bad}"
    assert len(errors) >= 3 * n_layers + 4 * FRAMES
