"""One exception family for everything a user can get wrong.

Every error that bad input can cause is a `PocketError`: the CLIs print its message on one line and
exit with code 2; the API lets it propagate. Nothing a user gives us may reach a GGML_ASSERT (which
aborts the interpreter), so inputs are checked in Python and rejected with one of these first.
"""


class PocketError(Exception):
    """Base class: a clear, one-line message about what was wrong with the input."""


class ConfigError(PocketError):
    """Unknown config name, malformed reference yaml, or hyperparameters out of range."""


class CheckpointError(PocketError):
    """Unreadable / non-safetensors file, or tensors missing, extra or misshaped for the config."""


class TokenizerError(PocketError):
    """Unreadable tokenizer, or one whose vocabulary does not match the model."""


class QuantizationError(PocketError):
    """Unknown quant type or mix, or a `--tensor-type` override that cannot apply."""


class ModelFileError(PocketError):
    """A GGUF file that is not a valid pocket-tts model (truncated, corrupt, inconsistent)."""


class OutputError(PocketError):
    """The destination cannot be written."""


class ParameterError(PocketError):
    """A generation parameter out of range (NaN or negative temperature, threads < 1, a pause over 10 s, ...)."""


class VoiceCloningUnavailable(PocketError):
    """The model file was made without the Mimi encoder (`pocket-quantize --no-encoder`)."""


class LatentError(PocketError):
    """Latents the Mimi decoder cannot take (wrong shape, too many frames, NaN or infinite values)."""


class TextError(PocketError):
    """Text that cannot be spoken (empty after preparation)."""


class GenerationError(PocketError):
    """A generation request that cannot run (e.g. a prompt longer than the model can hold)."""


class TimestampsUnavailable(PocketError):
    """Word timestamps asked of a model whose config has no timestamp heads."""


class MarkupError(ParameterError):
    """A pause marker or tag that cannot be read; `position` is the index in the text where it starts."""

    def __init__(self, what: str, position: int, hint: str = ""):
        super().__init__(f"{what} at position {position}" + (f": {hint}" if hint else ""))
        self.position = position


class AudioError(PocketError):
    """Audio that cannot be read or used as a voice prompt."""


class VoiceStateError(PocketError):
    """A voice-state file that cannot be read or does not fit the model."""


class ModelNotAvailable(PocketError):
    """A model name that cannot be resolved here (no network, or huggingface_hub missing)."""


class BusyError(PocketError):
    """One TTSModel used by two generations at once (use one instance per thread)."""


class Overloaded(PocketError):
    """Every instance is busy and the waiting queue is full (or the wait for an instance timed out)."""

    def __init__(self, message: str, retry_after: float, *, timed_out: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.timed_out = timed_out  # waited in the queue for too long (else: the queue was full)


class UnknownVoice(PocketError):
    """A voice that is neither stored in the model nor registered."""


class VoiceRegistryError(PocketError):
    """A registration the server cannot do (the model has no voice encoder, a stored voice cannot be deleted)."""


class WyomingServiceError(PocketError):
    """The service cannot start as asked (a bad URI, seed or cap; the address is in use)."""


class PlotUnavailable(PocketError):
    """--plot without matplotlib installed."""


class BenchSetupError(PocketError):
    """A benchmark that cannot be set up as asked (bad option combination, missing file)."""


class BenchRunError(PocketError):
    """A benchmark child process failed (its stderr tail is in the message)."""


class ReferenceUnavailable(PocketError):
    """--reference without torch / pocket_tts in the reference interpreter."""


class ParityError(PocketError):
    """The parity run cannot be done (reference missing, bad inputs, reference run failed)."""
