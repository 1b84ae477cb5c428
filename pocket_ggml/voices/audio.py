"""Voice-prompt audio, prepared exactly as the reference prepares it before the Mimi encoder.

read (any format soundfile reads) -> mono (channel mean) -> 24 kHz (`resample_poly`: the reference's
resampler, scipy.signal.resample_poly, redone on numpy) -> `end_on_pause` -> zero-pad to whole latent frames.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pocket_ggml.errors import AudioError

if TYPE_CHECKING:
    from pocket_ggml.runtime.model import PocketRuntime


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the file's sample rate."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
        raise AudioError(f"cannot read audio {str(path)!r}: {e}") from None
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)), int(rate)


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return wav
    return resample_poly(wav.astype(np.float32, copy=False), int(to_rate), int(from_rate))


def kaiser_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta)): a windowed-sinc low-pass, cutoff
    relative to Nyquist, scaled to unit gain at DC; same float64 operations in the same order."""
    m = np.arange(numtaps, dtype=np.float64) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m)
    alpha = (numtaps - 1) / 2.0
    n = np.arange(numtaps, dtype=np.float64)
    h *= np.i0(beta * np.sqrt(1 - ((n - alpha) / alpha) ** 2.0)) / np.i0(np.float64(beta))
    return h / np.sum(h)


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly(x, up, down) for float32 mono `x` with its defaults (Kaiser window,
    beta 5, zero padding): upsample by `up`, low-pass, keep every `down`-th sample, aligned so that the
    first output is the first input.

    The reference resamples voice prompts with scipy, but importing scipy.signal costs more memory and
    start-up time than the rest of the runtime. This computes the same filter and sums each output's products in
    float32 in scipy's upfirdn order (oldest input first), so the samples are bit-identical to scipy's
    (tests/test_resample.py checks that against scipy)."""
    g = math.gcd(up, down)
    up, down = up // g, down // g
    if up == down == 1:
        return x.copy()
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    max_rate = max(up, down)
    half_len = 10 * max_rate  # scipy's filter length: 10 zero crossings of the sinc on each side
    h = kaiser_lowpass(2 * half_len + 1, 1.0 / max_rate).astype(np.float32)
    h *= up
    # Zeros before the filter put the kept outputs' centre on the input samples (scipy's n_pre_pad),
    # zeros after it make whole phases; `taps` is the number of coefficients per phase.
    pre_pad = down - half_len % down
    first = (half_len + pre_pad) // down
    taps = -(-(pre_pad + h.shape[0]) // up)
    padded = np.zeros(taps * up, np.float32)
    padded[pre_pad : pre_pad + h.shape[0]] = h
    by_lag = padded.reshape(taps, up)  # by_lag[lag, p]: the coefficient of x[i - lag] in phase p
    # Output k of the full up-filter-down chain is sum over lag of by_lag[lag, p] * x[i - lag] with
    # i, p = divmod(k * down, up); the kept outputs are k = first .. first + n_out - 1.
    i, p = np.divmod(np.arange(first, first + n_out, dtype=np.int64) * down, up)
    tail = max(0, int(i[-1]) + 1 - n_in)
    xpad = np.concatenate([np.zeros(taps, np.float32), x, np.zeros(tail, np.float32)])
    out = np.zeros(n_out, np.float32)
    term = np.empty(n_out, np.float32)
    for lag in range(taps - 1, -1, -1):
        np.take(xpad[taps - lag :], i, out=term)
        term *= by_lag[lag].take(p) if up > 1 else by_lag[lag, 0]  # one phase: one coefficient per lag
        out += term
    return out


def end_on_pause(
    wav: np.ndarray, sample_rate: int, pause_sec: float = 0.08, fade_sec: float = 0.02, floor_db: float = 35.0
) -> np.ndarray:
    """Cut the trailing silence (20 ms frames more than `floor_db` below the loudest), fade out the
    last `fade_sec`, append `pause_sec` of zeros: prompts must end inside a pause, as in training."""
    frame = max(1, int(0.02 * sample_rate))
    n = wav.shape[-1] // frame
    if n == 0:
        return wav
    rms = np.sqrt(np.square(wav[: n * frame].reshape(n, frame)).mean(axis=1, dtype=np.float32))
    db = 20 * np.log10(rms + np.float32(1e-12))
    end = (int(np.nonzero(db > db.max() - floor_db)[0][-1]) + 1) * frame
    out = wav[:end].copy()
    fade = min(int(fade_sec * sample_rate), end)
    out[end - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
    return np.concatenate([out, np.zeros(int(pause_sec * sample_rate), dtype=np.float32)])


def pad_to_frames(wav: np.ndarray, frame_size: int) -> np.ndarray:
    """Zero-pad at the end to a whole number of frames (the reference's pad_for_conv1d)."""
    extra = -wav.shape[-1] % frame_size
    return np.concatenate([wav, np.zeros(extra, dtype=np.float32)]) if extra else wav


def prepare_voice_prompt(wav: np.ndarray, rate: int, sample_rate: int, frame_size: int) -> np.ndarray:
    if wav.ndim != 1 or wav.size == 0:
        raise AudioError("the voice prompt holds no audio")
    if not np.isfinite(wav).all():
        raise AudioError("the voice prompt holds NaN or infinite samples")
    out = end_on_pause(resample(wav.astype(np.float32), rate, sample_rate), sample_rate)
    return pad_to_frames(out, frame_size)


def prompt_latents(runtime: PocketRuntime, wav: np.ndarray, rate: int) -> np.ndarray:
    """Mimi latents (T, speaker_dim) of a voice prompt given as mono samples at `rate`: prepared as the
    reference prepares it, then encoded by the model's Mimi encoder."""
    m = runtime.config.mimi
    return runtime.encode_voice(prepare_voice_prompt(wav, rate, m.sample_rate, m.frame_size))
