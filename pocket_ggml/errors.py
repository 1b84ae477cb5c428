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
