"""Coverage-guided fuzzing (atheris/libFuzzer) of the GGUF loader.

The fuzzer's input replaces the header of a valid small GGUF (metadata and tensor infos, everything
before the tensor data), whose tensor data is appended unchanged; the seed corpus is the valid
header. The header scan and the metadata reading are instrumented for coverage.

    POCKET_FUZZ_BASE=base.gguf POCKET_FUZZ_WORK=dir python tests/fuzz/atheris_gguf.py \
        -max_total_time=20 -seed=1 CORPUS_DIR

libFuzzer prints `Done N runs in S second(s)`; an input that breaks the property of
`_fuzz_common.check_file` (or crashes the interpreter) stops it with a non-zero exit and a
crash-* artifact.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(
    include=[
        "pocket_ggml.runtime.gguf_header",
        "pocket_ggml.runtime.model_file",
        "pocket_ggml.runtime.gguf_metadata",
    ]
):
    from _fuzz_common import check_file, structure

BASE, HEADER_END, _ = structure(os.environ["POCKET_FUZZ_BASE"])
TAIL = BASE[HEADER_END:]
TARGET = Path(os.environ["POCKET_FUZZ_WORK"]) / "case.gguf"


def test_one_input(data: bytes) -> None:
    TARGET.write_bytes(data + TAIL)
    check_file(str(TARGET))


def write_seed_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "valid-header").write_bytes(BASE[:HEADER_END])


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for c in corpus:
        if not any(Path(c).glob("*")):
            write_seed_corpus(Path(c))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
