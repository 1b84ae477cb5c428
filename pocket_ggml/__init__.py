"""pocket-ggml: Kyutai's Pocket TTS as a quantized GGML runtime.

from pocket_ggml import TTSModel
model = TTSModel.load_model()  # the synthetic default; or a .gguf / released .safetensors
"""

from pocket_ggml.api import TimestampedAudio, TTSModel
from pocket_ggml.errors import BusyError, ParameterError, PocketError, TimestampsUnavailable
from pocket_ggml.runtime.timestamps import WordEnd, WordStart, WordTimestamp
from pocket_ggml.voices.state import VoiceState, load_voice_state, save_voice_state

__all__ = [
    "BusyError",
    "ParameterError",
    "PocketError",
    "TTSModel",
    "TimestampedAudio",
    "TimestampsUnavailable",
    "VoiceState",
    "WordEnd",
    "WordStart",
    "WordTimestamp",
    "load_voice_state",
    "save_voice_state",
]
