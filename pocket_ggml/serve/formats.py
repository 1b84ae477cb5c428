"""Audio response formats: float32 chunks in, the bytes of wav / pcm / flac / mp3 / opus out, piece by piece.

All formats carry 16-bit samples (`pcm16`), so wav, pcm and flac hold exactly the same samples.

- pcm: raw s16le, each chunk as it comes.
- wav: a 44-byte header whose RIFF and data sizes are 0xFFFFFFFF ("unknown, read to the end", as streaming
  servers write it), then raw samples.
- mp3 (constant bitrate) and opus (in Ogg): libsndfile's encoders, their output sent as each piece of it is
  complete. libsndfile seeks back at the end to patch a header (mp3's Xing/Info frame); a streamed response
  cannot take that back, so the placeholder stays, which decoders read as a plain CBR stream.
- flac: sent whole at the end. A FLAC stream's length lives in its first block; streamed, it would say
  "unknown", which common decoders (libsndfile among them) refuse to read.
"""

from __future__ import annotations

import io
import struct

import numpy as np

MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
}
UNSUPPORTED = {"aac": "aac is not supported (libsndfile has no AAC encoder); use mp3, opus, flac, wav or pcm"}
_SOUNDFILE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 samples in [-1, 1] (clipped beyond) as int16."""
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def wav_header(sample_rate: int, data_size: int = 0xFFFFFFFF) -> bytes:
    riff_size = 0xFFFFFFFF if data_size == 0xFFFFFFFF else 36 + data_size
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)  # PCM, mono, 16-bit
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + (struct.pack("<I", data_size))
    )


class Encoder:
    """`encode(chunk)` gives the bytes ready to send after `chunk` (maybe none); `finish()` the rest."""

    def __init__(self, response_format: str, sample_rate: int):
        if response_format not in MEDIA_TYPES:
            raise ValueError(f"unknown response format {response_format!r}")
        self.format = response_format
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[response_format]
        self._started = False
        self._sink: _AppendOnlySink | None = None
        self._file = None
        if response_format in _SOUNDFILE:
            import soundfile as sf

            container, subtype = _SOUNDFILE[response_format]
            self._sink = _AppendOnlySink()
            extra = {"bitrate_mode": "CONSTANT", "compression_level": 0.5} if response_format == "mp3" else {}
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, subtype, format=container, **extra)

    def encode(self, samples: np.ndarray) -> bytes:
        pcm = pcm16(samples)
        if self._file is not None:
            self._file.write(pcm)
            return b"" if self.format == "flac" else self._sink.take()
        head = b""
        if self.format == "wav" and not self._started:
            head = wav_header(self.sample_rate)
        self._started = True
        return head + pcm.tobytes()

    def finish(self) -> bytes:
        if self._file is not None:
            self._file.close()
            return bytes(self._sink.buffer) if self.format == "flac" else self._sink.take()
        if self.format == "wav" and not self._started:  # no audio at all: still a valid (empty) file
            self._started = True
            return wav_header(self.sample_rate, 0)
        return b""

    def close(self) -> None:
        """Release the encoder without finishing (the client left)."""
        if self._file is not None and not self._file.closed:
            self._file.close()


class _AppendOnlySink(io.RawIOBase):
    """A seekable file for libsndfile whose bytes are handed out as soon as they are written. A write
    over bytes already handed out (a header patched at the end) cannot be taken back and is dropped;
    until `take`, everything is kept, so flac (taken only once, at the end) is complete."""

    def __init__(self):
        self.buffer = bytearray()
        self._sent = 0
        self._pos = 0

    def take(self) -> bytes:
        out = bytes(self.buffer[self._sent :])
        self._sent = len(self.buffer)
        return out

    def write(self, data) -> int:
        data = bytes(data)
        end = self._pos + len(data)
        if end > len(self.buffer):
            self.buffer.extend(bytes(end - len(self.buffer)))
        start = max(self._pos, self._sent)
        if start < end:
            self.buffer[start:end] = data[start - self._pos :]
        self._pos = end
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.buffer)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self.buffer) if size is None or size < 0 else min(len(self.buffer), self._pos + size)
        out = bytes(self.buffer[self._pos : end])
        self._pos += len(out)
        return out

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True
