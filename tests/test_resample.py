"""The voice-prompt resampler against the reference's: scipy.signal.resample_poly, and the reference's
whole prompt preparation (convert_audio + end_on_pause) from the 48 kHz clip.

The numpy resampler reproduces scipy's filter and float32 summation order, so the bar is bit identity,
not a tolerance: any difference means the algorithm drifted from scipy's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _reference import require_reference, shared_path

from pocket_ggml.voices.audio import kaiser_lowpass, prepare_voice_prompt, read_audio, resample, resample_poly

RATES = (48000, 44100, 32000, 22050, 16000, 8000)


@pytest.fixture(scope="module")
def scipy_signal():
    require_reference()  # scipy comes with the reference, which resamples with it
    import scipy.signal

    return scipy.signal


@pytest.fixture(scope="module")
def clip():
    return read_audio(shared_path("assets", "voices", "speaker-48k.wav"))


@pytest.mark.parametrize("max_rate", [2, 3, 4, 147, 160])
def test_kaiser_lowpass_is_scipys_firwin(scipy_signal, max_rate):
    numtaps = 2 * 10 * max_rate + 1
    ours = kaiser_lowpass(numtaps, 1.0 / max_rate)
    theirs = scipy_signal.firwin(numtaps, 1.0 / max_rate, window=("kaiser", 5.0))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-15)
    assert np.array_equal(ours.astype(np.float32), theirs.astype(np.float32))


@pytest.mark.parametrize("rate", RATES)
def test_clip_at_each_rate_resamples_to_scipys_samples(scipy_signal, clip, rate):
    """The 6.9 s clip brought to `rate` (by scipy), then to 24 kHz by both."""
    wav, clip_rate = clip
    g = math.gcd(clip_rate, rate)
    x = wav if rate == clip_rate else scipy_signal.resample_poly(wav, rate // g, clip_rate // g).astype(np.float32)
    g = math.gcd(rate, 24000)
    theirs = scipy_signal.resample_poly(x, 24000 // g, rate // g)
    ours = resample(x, rate, 24000)
    assert ours.dtype == theirs.dtype == np.float32
    assert ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), f"max abs difference {np.abs(ours - theirs).max():.3g}"


@pytest.mark.parametrize("n", [1, 2, 7, 100, 441, 4801])
@pytest.mark.parametrize(("up", "down"), [(1, 2), (80, 147), (3, 4), (3, 2), (3, 1), (160, 147), (24000, 24001)])
def test_edge_lengths_and_ratios_match_scipy(scipy_signal, n, up, down):
    """Short inputs (fewer samples than filter taps) and ratios whose filters span many phases."""
    x = np.random.default_rng(n + up).standard_normal(n).astype(np.float32)
    theirs = scipy_signal.resample_poly(x, up, down)
    ours = resample_poly(x, up, down)
    assert ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_voice_prompt_is_the_references(clip):
    """read -> mono -> 24 kHz -> end_on_pause, against pocket-tts's own audio_read, convert_audio and
    end_on_pause: the resampled clip is bit-identical; the prompt differs only where the fade-out's ramp
    is rounded (torch.linspace and np.linspace differ in the last bit)."""
    torch = require_reference()
    from pocket_tts.data.audio import audio_read
    from pocket_tts.data.audio_utils import convert_audio, end_on_pause

    audio, rate = audio_read(shared_path("assets", "voices", "speaker-48k.wav"))
    wav, our_rate = clip
    assert our_rate == rate
    with torch.no_grad():
        resampled = convert_audio(audio, rate, 24000, 1)
        theirs = end_on_pause(resampled, 24000)[0].numpy()
    assert np.array_equal(resample(wav, our_rate, 24000), resampled[0].numpy())
    ours = prepare_voice_prompt(wav, our_rate, 24000, 1920)
    assert ours.shape[0] == -(-theirs.shape[0] // 1920) * 1920
    np.testing.assert_allclose(ours[: theirs.shape[0]], theirs, rtol=0, atol=1e-7)
    assert not ours[theirs.shape[0] :].any()
