"""Voice-prompt audio, prepared exactly as the reference prepares it before the Mimi encoder.

read (any format soundfile reads) -> mono (channel mean) -> 24 kHz (scipy's polyphase
`resample_poly`, the reference's resampler) -> `end_on_pause` -> zero-pad to whole latent frames.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pocket_ggml.errors import PocketError


class AudioError(PocketError):
    """Audio that cannot be read or used as a voice prompt."""


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
    from scipy.signal import resample_poly

    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(wav, to_rate // g, from_rate // g).astype(np.float32)


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
