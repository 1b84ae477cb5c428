"""The voices a server speaks with: those stored in the model, and those registered by clients.

A registered voice is cloned once from the uploaded clip and kept as two files in the voices folder:
`<id>.safetensors` (the voice state, see voices.state) and `<id>.json` (its name and creation time). Both
are written atomically, the state first: the metadata file is what makes a voice exist, so a server killed
mid-registration leaves at worst an unlisted state file, never a listed voice without one. Ids are made here
(`voice-` + 16 hex digits) and every id a client sends must match that pattern before it comes near a path.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pocket_ggml.errors import AudioError, UnknownVoice, VoiceRegistryError, VoiceStateError
from pocket_ggml.files import atomic_write
from pocket_ggml.serve.pool import ModelPool
from pocket_ggml.voices.state import VoiceState, load_voice_state, save_voice_state

VOICE_ID = re.compile(r"voice-[0-9a-f]{16}")
MAX_CLIP_SECONDS = 120
MIN_CLIP_SECONDS = 0.5  # shorter holds too little of a voice to clone it
MAX_CLIP_BYTES = 20 * 1024 * 1024
MAX_NAME_CHARS = 100
_CACHED_STATES = 32  # registered voice states kept in memory (a few MB each)
_STALE_PART_SECONDS = 60  # temp files of a write interrupted by a crash, cleared at startup after this


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    source: str  # "model" (stored in the GGUF) or "registered"
    created: float | None  # unix time of registration

    def as_dict(self) -> dict:
        return asdict(self)


def default_voices_dir() -> Path:
    """Registered voices outlive the server: by default in the user data dir (POCKET_GGML_VOICES overrides)."""
    import platformdirs

    return Path(os.environ.get("POCKET_GGML_VOICES") or Path(platformdirs.user_data_dir("pocket-ggml")) / "voices")


class VoiceRegistry:
    def __init__(self, pool: ModelPool, voices_dir: Path | None = None):
        self.pool = pool
        self.voices_dir = Path(voices_dir) if voices_dir is not None else default_voices_dir()
        try:
            self.voices_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VoiceRegistryError(f"cannot create the voices folder {str(self.voices_dir)!r}: {e}") from None
        self._clear_stale_parts()
        self._stored: dict[str, VoiceState] = {}
        self._registered: collections.OrderedDict[str, VoiceState] = collections.OrderedDict()

    @property
    def default_voice(self) -> str | None:
        """The voice of requests that name none: the model's first stored voice."""
        return self.pool.voice_names[0] if self.pool.voice_names else None

    # ------------------------------------------------------------------ reading
    def list(self) -> list[VoiceInfo]:
        stored = [VoiceInfo(name, name, "model", None) for name in self.pool.voice_names]
        registered = []
        for meta in self.voices_dir.glob("voice-*.json"):
            info = self._info(meta.stem)
            if info is not None:
                registered.append(info)
        return stored + sorted(registered, key=lambda v: (v.created or 0.0, v.id))

    def get(self, voice: str) -> VoiceInfo | None:
        if voice in self.pool.voice_names:
            return VoiceInfo(voice, voice, "model", None)
        return self._info(voice) if VOICE_ID.fullmatch(voice) else None

    def _info(self, voice_id: str) -> VoiceInfo | None:
        meta, state = self._paths(voice_id)
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            info = VoiceInfo(voice_id, str(data["name"]), "registered", float(data["created"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return info if state.is_file() else None

    def _paths(self, voice_id: str) -> tuple[Path, Path]:
        if not VOICE_ID.fullmatch(voice_id):  # the only gate between a client's string and the file system
            raise UnknownVoice(f"{voice_id!r} is not a voice id")
        return self.voices_dir / f"{voice_id}.json", self.voices_dir / f"{voice_id}.safetensors"

    async def state(self, voice: str) -> VoiceState:
        """The voice state of a stored voice name or a registered voice id."""
        if not isinstance(voice, str):
            raise UnknownVoice("the voice must be a string")
        if voice in self.pool.voice_names:
            if voice not in self._stored:
                self._stored[voice] = await asyncio.to_thread(self.pool.stored_voice, voice)
            return self._stored[voice]
        if voice in self._registered:
            self._registered.move_to_end(voice)
            return self._registered[voice]
        if self.get(voice) is None:
            raise UnknownVoice(f"unknown voice {voice[:100]!r}; known voices: {', '.join(self._names())}")
        _, path = self._paths(voice)
        try:
            state = await asyncio.to_thread(load_voice_state, path)
            self.pool.check_voice_state(state)
        except VoiceStateError as e:
            raise VoiceRegistryError(f"registered voice {voice} cannot be used with this model: {e}") from None
        self._registered[voice] = state
        while len(self._registered) > _CACHED_STATES:
            self._registered.popitem(last=False)
        return state

    def _names(self) -> list[str]:
        return [v.id for v in self.list()][:20]

    # ------------------------------------------------------------------ cloning
    async def clone(
        self, audio: bytes, *, truncate_seconds: float | None = None, timeout: float | None = None
    ) -> VoiceState:
        """A voice state from an audio file's bytes (any format soundfile reads), not registered.
        Longer clips than `MAX_CLIP_SECONDS` are refused, or cut to `truncate_seconds` when given;
        `timeout`: the longest wait for an instance (then `Overloaded`)."""
        if not self.pool.has_voice_cloning:
            raise VoiceRegistryError("this model has no voice encoder: it speaks only its stored voices")
        samples, rate = await asyncio.to_thread(decode_clip, audio, truncate_seconds)
        async with self.pool.instance(timeout) as model:
            return await self.pool.call(model, model.get_state_for_audio_prompt, samples, rate)

    async def register(self, audio: bytes, name: str | None = None, *, timeout: float | None = None) -> VoiceInfo:
        """Clone `audio` and keep it under a new id; `timeout` as in `clone`."""
        if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
            raise VoiceRegistryError(f"the name must be a string of at most {MAX_NAME_CHARS} characters")
        state = await self.clone(audio, timeout=timeout)
        voice_id = f"voice-{secrets.token_hex(8)}"
        info = VoiceInfo(voice_id, (name or "").strip() or voice_id, "registered", time.time())
        meta, path = self._paths(voice_id)
        await asyncio.to_thread(self._write, state, path, meta, info)
        return info

    def _write(self, state: VoiceState, path: Path, meta: Path, info: VoiceInfo) -> None:
        save_voice_state(VoiceState(state.snapshot, source=info.name), path)
        try:
            with atomic_write(meta) as tmp:
                tmp.write_text(
                    json.dumps({"name": info.name, "created": info.created, "model": self.pool.model_name}),
                    encoding="utf-8",
                )
        except BaseException:
            path.unlink(missing_ok=True)  # a state without its metadata is an orphan: removed with it
            raise

    def delete(self, voice_id: str) -> VoiceInfo:
        if voice_id in self.pool.voice_names:
            raise VoiceRegistryError(f"{voice_id!r} is stored in the model and cannot be deleted")
        info = self.get(voice_id)
        if info is None:
            raise UnknownVoice(f"no registered voice {voice_id[:100]!r}")
        meta, path = self._paths(voice_id)
        meta.unlink(missing_ok=True)  # the voice is gone from here on, even if the next unlink fails
        path.unlink(missing_ok=True)
        self._registered.pop(voice_id, None)
        return info

    def _clear_stale_parts(self) -> None:
        """Remove what a crash mid-registration left: temp files, and states whose metadata (what makes a
        voice exist) was never written. Only old ones: another server may be registering into this folder."""
        now = time.time()
        orphans = (p for p in self.voices_dir.glob("voice-*.safetensors") if not p.with_suffix(".json").exists())
        for leftover in [*self.voices_dir.glob(".voice-*.part"), *orphans]:
            try:
                if now - leftover.stat().st_mtime > _STALE_PART_SECONDS:
                    leftover.unlink()
            except OSError:
                pass


def decode_clip(audio: bytes, truncate_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of an audio file's bytes, within the clip caps."""
    import soundfile as sf

    if not isinstance(audio, (bytes, bytearray)) or len(audio) == 0:
        raise AudioError("the audio file is empty")
    if len(audio) > MAX_CLIP_BYTES:
        raise AudioError(f"the audio file is {len(audio) / 2**20:.1f} MB; at most {MAX_CLIP_BYTES // 2**20} MB")
    try:
        with sf.SoundFile(io.BytesIO(audio)) as f:
            rate = int(f.samplerate)
            if not 1000 <= rate <= 384000:
                raise AudioError(f"sample rate {rate} Hz is out of range")
            limit = MAX_CLIP_SECONDS if truncate_seconds is None else min(truncate_seconds, MAX_CLIP_SECONDS)
            # One sample more than the cap tells a clip over it from one exactly at it, without reading
            # all of a long file (frame counts in headers can lie: read, don't trust).
            data = f.read(int(limit * rate) + 1, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as e:
        raise AudioError(f"cannot read the audio file: {e}") from None
    samples = np.ascontiguousarray(data.mean(axis=1, dtype=np.float32))
    if truncate_seconds is None and samples.size > MAX_CLIP_SECONDS * rate:
        raise AudioError(f"the clip is longer than {MAX_CLIP_SECONDS} s")
    samples = samples[: int(limit * rate)]
    if samples.size < MIN_CLIP_SECONDS * rate:
        raise AudioError(f"the clip lasts {samples.size / rate:.2f} s; a voice needs at least {MIN_CLIP_SECONDS} s")
    if not np.isfinite(samples).all():
        raise AudioError("the audio file holds NaN or infinite samples")
    return samples, rate
