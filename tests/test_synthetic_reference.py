"""Synthetic checkpoints load strictly into the reference and are not degenerate there."""

from __future__ import annotations

import math

import numpy as np
import soundfile as sf
from _reference import require_reference

from pocket_ggml.format.config import load_released_config
from pocket_ggml.quantize.synthetic import save_synthetic_safetensors

FRAMES = 8
MIN_WAVEFORM_STD = 0.01  # the torch-side maker gives std ~0.1-0.3; a DC-only decoder gives ~0
MIN_VOICE_EFFECT = 0.05  # relative difference of the audio of two voices


def test_synthetic_checkpoint_is_usable_by_the_reference(tmp_path, tokenizer_path, voice_wav):
    torch = require_reference()
    from run_reference import fix_frame_count, load_reference_model  # ../shared/reference

    weights = tmp_path / "synth.safetensors"
    save_synthetic_safetensors(load_released_config("english_2m_2026-10"), 0, weights)
    model = load_reference_model(weights, tokenizer_path, config="english_2m_2026-10")  # strict load
    fix_frame_count(model, FRAMES)
    model.max_decoder_frames_per_call = 1
    other = tmp_path / "sweep.wav"
    t = np.arange(24000 * 2) / 24000
    sf.write(other, (0.3 * np.sin(2 * math.pi * (100 + 300 * t) * t)).astype(np.float32), 24000)

    audio = []
    for wav in (voice_wav, other):
        torch.manual_seed(0)
        state = model.get_state_for_audio_prompt(wav)
        audio.append(model.generate_audio(state, "Hello world, this is a test.", max_tokens=10**9).numpy())
    assert audio[0].shape == (FRAMES * 1920,)
    assert all(float(a.std()) > MIN_WAVEFORM_STD for a in audio)
    assert np.linalg.norm(audio[0] - audio[1]) / np.linalg.norm(audio[0]) > MIN_VOICE_EFFECT
