"""What both GGUF fuzzers share: the base file's structure and the property checked on each input.

The property (issue #6): `ModelFile` on any bytes either loads or raises `ModelFileError` -- never
another exception type, never one from its catch-all (a gap in the explicit checks), never a message
of more than one line -- and a file that loads can be used (PocketRuntime, FlowLM, Mimi) with at most
a PocketError. A crash or hang kills the fuzzing process, which the calling test reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: _gguf_corpus

from _gguf_corpus import layout, use

from pocket_ggml.errors import ModelFileError, PocketError  # noqa: E402
from pocket_ggml.runtime.model_file import UNANTICIPATED, ModelFile  # noqa: E402


def structure(path: str) -> tuple[bytes, int, list[int]]:
    """The base's bytes, where its tensor data starts, and the offset of every header field
    (counts, lengths, types, dimensions, data offsets): where a mutation is most telling."""
    lay = layout(path)
    positions = {4, 8, 16}
    for e in lay["kv"].values():
        positions |= {v for k, v in e.items() if k in ("key_len", "type", "itype", "count", "str_len", "value")}
    for t in lay["tensors"]:
        positions |= {t["name_len"], t["n_dims"], t["dims"], t["type"], t["offset"]}
        positions |= {t["dims"] + 8 * i for i in range(t["ndim"])}
    return Path(path).read_bytes(), lay["data"], sorted(positions)


def check_file(path: str) -> str:
    """'error' or 'loaded'; anything that breaks the property raises AssertionError (or propagates)."""
    try:
        ModelFile(path)
    except ModelFileError as e:
        msg = str(e)
        assert UNANTICIPATED not in msg, f"ModelFileError from the catch-all: {msg}"
        assert msg.isprintable() and msg.strip(), f"not a one-line message: {msg!r}"
        return "error"
    try:
        use(path)
    except PocketError:
        pass
    return "loaded"
