"""Speech as an audio file a user keeps: WAV or FLAC (16-bit PCM) or Ogg Vorbis, chosen by the extension."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pocket_ggml.errors import OutputError
from pocket_ggml.files import atomic_write

FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def write(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Atomically: an interrupted write leaves any previous file intact."""
    import soundfile as sf

    fmt = FORMATS[path.suffix.lower()]
    if not path.parent.is_dir():
        raise OutputError(f"folder {str(path.parent)!r} does not exist")
    with atomic_write(path) as tmp:
        sf.write(str(tmp), audio, sample_rate, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")
