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
from _reference import shared_path

from pocket_ggml.runtime.flow_lm import FlowLM
from pocket_ggml.runtime.generate import MIN_FRAMES_BEFORE_EOS
from pocket_ggml.runtime.ggml_backend import CpuBackend
from pocket_ggml.runtime.model import GenerationSettings, PocketRuntime
from pocket_ggml.runtime.model_file import ModelFile
from pocket_ggml.runtime.text import Tokenizer, prepare_text_prompt
from pocket_ggml.voices.audio import prompt_latents, read_audio

CONFIGS = ["english", "english_2m_2026-10", "english_7m_2026-10", "english_2026-04_24l"]
FRAMES = 10
EOS_PROBE_FRAMES = 30


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


MIN_FRAME_SNR_DB = 60.0  # per-frame audio SNR against the reference (issue #3)


def snr_db(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    err = np.sum((np.asarray(ours, np.float64) - ref) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(ref**2) / err))


def _runtime(config: str) -> PocketRuntime:
    return PocketRuntime(synthetic_model(config)[1])


def _generate(rt: PocketRuntime, noise_rows: np.ndarray, settings: GenerationSettings):
    """Voice cloned from the wav by our Mimi encoder, then our whole loop with the reference's noise."""
    wav, rate = read_audio(shared_path("assets", "voices", "speaker-48k.wav"))
    latents = prompt_latents(rt, wav, rate)
    voice = rt.voice_state(latents)
    noise = iter(noise_rows)
    rt.mimi.reset()
    frames, audio = [], []
    for f in rt.frames(voice, TEXT, settings, lambda: next(noise)):
        frames.append(f)
        audio.append(rt.mimi.decode(f.latent[None, :]))
    return latents, frames, audio


@pytest.mark.parametrize("temp", [0.0, 0.3])
@pytest.mark.parametrize("config", CONFIGS)
def test_free_running_generation_matches_reference(config, temp):
    """Not teacher-forced: our own latents feed the next step, from the wav to the audio."""
    dump = reference_run(config, temp=temp, frames=FRAMES)
    rt = _runtime(config)
    settings = GenerationSettings(temperature=temp, eos_threshold=float("inf"), max_frames=FRAMES)
    latents, frames, audio = _generate(rt, dump["step_noise"], settings)
    assert rel_err(latents, dump["voice_mimi_latents"][0].T) <= REL_TOL
    assert len(frames) == FRAMES
    assert rel_err(np.stack([f.latent for f in frames]), dump["step_latent"]) <= REL_TOL
    snrs = [snr_db(a, r) for a, r in zip(audio, dump["audio_chunks"])]
    assert min(snrs) >= MIN_FRAME_SNR_DB, snrs
    rt.close()


def _threshold_firing_at(logits: np.ndarray) -> tuple[float, int]:
    """An EOS threshold under which the first counted EOS is the frame with the widest margin
    (>= MIN_FRAMES_BEFORE_EOS), so that both runtimes must agree on it without a close call."""
    best = None
    for k in range(MIN_FRAMES_BEFORE_EOS, len(logits) - 4):
        before = logits[MIN_FRAMES_BEFORE_EOS:k].max(initial=-np.inf)
        margin = logits[k] - before
        if margin > 0 and (best is None or margin > best[0]):
            best = (margin, k, (logits[k] + max(before, logits[k] - 1.0)) / 2)
    assert best is not None and best[0] > 1e-3, f"no usable EOS frame in {logits}"
    return float(best[2]), best[1]


@pytest.mark.parametrize("config", ["english", "english_2m_2026-10"])
def test_same_eos_frame_and_length_as_reference(config):
    probe = reference_run(config, temp=0.0, frames=EOS_PROBE_FRAMES, dump_layers=False)
    threshold, eos_frame = _threshold_firing_at(probe["step_eos_logit"])
    dump = reference_run(config, temp=0.0, frames=EOS_PROBE_FRAMES, eos_threshold=threshold, dump_layers=False)
    rt = _runtime(config)
    settings = GenerationSettings(temperature=0.0, eos_threshold=threshold, max_frames=EOS_PROBE_FRAMES)
    _, frames, audio = _generate(rt, np.zeros((EOS_PROBE_FRAMES, rt.config.mimi.latent_dim), np.float32), settings)
    _, guess = rt.tokens(TEXT)
    assert frames[-1].eos_frame == eos_frame
    assert len(frames) == eos_frame + guess + 2 == dump.meta["n_chunks"]
    assert np.concatenate(audio).shape == dump["waveform"].shape
    assert snr_db(np.concatenate(audio), dump["waveform"]) >= MIN_FRAME_SNR_DB
    rt.close()
