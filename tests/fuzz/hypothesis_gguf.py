"""Hypothesis fuzzing of the GGUF loader: byte flips, field overwrites, insertions, deletions and
truncations of a valid small GGUF, with a fixed seed and a bounded number of examples.

    python tests/fuzz/hypothesis_gguf.py BASE.gguf WORKDIR [--examples 300] [--seed 0]

Prints `FUZZ hypothesis examples=N loaded=L rejected=R seconds=S`; exits non-zero (with the
shrunk failing mutation) if an input breaks the property of `_fuzz_common.check_file`. Before each
input the mutation is written to WORKDIR/last.json, so that a crash can be attributed.
"""

from __future__ import annotations

import argparse
import collections
import json
import struct
import time
from pathlib import Path

from _fuzz_common import check_file, structure
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

U64_EDGES = [0, 1, 2, 3, 31, 32, 63, 64, 255, 1 << 16, 1 << 31, 1 << 32, 1 << 40, 1 << 62, 1 << 63, (1 << 64) - 1]


def apply(base: bytes, ops: list[tuple]) -> bytes:
    data = bytearray(base)
    for op in ops:
        kind, pos = op[0], min(op[1], len(data))
        if kind == "flip" and pos < len(data):
            data[pos] ^= op[2]
        elif kind == "u64" and pos + 8 <= len(data):
            struct.pack_into("<Q", data, pos, op[2])
        elif kind == "u32" and pos + 4 <= len(data):
            struct.pack_into("<I", data, pos, op[2] & 0xFFFFFFFF)
        elif kind == "insert":
            data[pos:pos] = op[2]
        elif kind == "delete":
            del data[pos : pos + op[2]]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("workdir")
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    base, header_end, fields = structure(a.base)
    size = len(base)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    target, last = work / "case.gguf", work / "last.json"

    anywhere_in_header = st.integers(0, header_end + 64)
    at_field = st.sampled_from(fields)
    u64 = st.sampled_from(U64_EDGES) | st.integers(0, (1 << 64) - 1) | st.integers(0, size)
    op = st.one_of(
        st.tuples(st.just("flip"), anywhere_in_header, st.integers(1, 255)),
        st.tuples(st.just("u64"), at_field, u64),
        st.tuples(st.just("u32"), at_field, st.sampled_from([0, 1, 2, 3, 4, 9, 13, 99]) | st.integers(0, 1 << 32)),
        st.tuples(st.just("insert"), anywhere_in_header, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), anywhere_in_header, st.integers(1, 16)),
        st.tuples(st.just("truncate"), st.integers(0, size)),
        st.tuples(st.just("flip"), st.integers(header_end, size - 1), st.integers(1, 255)),  # weight bytes
    )
    counts: collections.Counter[str] = collections.Counter()

    @seed(a.seed)
    @settings(
        max_examples=a.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(ops=st.lists(op, min_size=1, max_size=4))
    def fuzz(ops):
        last.write_text(json.dumps([[x.hex() if isinstance(x, bytes) else x for x in o] for o in ops]))
        target.write_bytes(apply(base, ops))
        counts[check_file(str(target))] += 1

    t0 = time.perf_counter()
    fuzz()
    print(
        f"FUZZ hypothesis examples={sum(counts.values())} loaded={counts['loaded']} rejected={counts['error']} "
        f"seconds={time.perf_counter() - t0:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
