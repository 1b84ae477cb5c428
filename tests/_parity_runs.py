"""Synthetic models and reference runs shared by the parity tests.

`synthetic_model(config, mix)` writes (once per session) the seeded synthetic checkpoint in the
released layout (for the reference) and a GGUF of the same weights (for us). `reference_run(...)`
runs the official pocket-tts 4.0.1 on those weights through ../shared/reference/run_reference.py
(offline, every intermediate dumped) and returns the dump folder.

The root folder may be shared by sessions running side by side (pytest-xdist workers, a kept
POCKET_PARITY_DIR): each file is made under `made_once`'s lock, so one session makes it and the
others wait for it and read it whole.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _reference import require_reference, shared_path

from pocket_ggml.format.config import load_released_config
from pocket_ggml.format.tokenizer import read_tokenizer
from pocket_ggml.quantize.convert import convert as convert_checkpoint
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.quantize.synthetic import save_synthetic_safetensors

SEED = 0
TEXT = "Hello world, this is a test of the pocket runtime."
_ROOT: list[Path] = []


def set_root(path: Path) -> None:
    _ROOT[:] = [path]


def _root() -> Path:
    assert _ROOT, "call set_root() from a session fixture first"
    return _ROOT[0]


@contextmanager
def made_once(path: Path) -> Iterator[None]:
    """Held while `path` is checked for and made: an exclusive lock on a file beside it, so that of the
    sessions sharing the root one makes `path` and the others find it made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def synthetic_model(config: str, mix: str = "F32", *, safetensors: bool = False) -> tuple[Path, Path]:
    """(released-layout safetensors, GGUF) of the synthetic model `config` with seed SEED; the
    safetensors file (the reference's input) is only written when `safetensors` is true."""
    st = _root() / f"{config}-synthetic.safetensors"
    gguf = _root() / f"{config}-{mix}.gguf"
    cfg = load_released_config(config)
    with made_once(st):
        if safetensors and not st.exists():
            save_synthetic_safetensors(cfg, SEED, st)
    with made_once(gguf):
        if not gguf.exists():
            tok = read_tokenizer(shared_path("assets", "tokenizer.model"), cfg.flow_lm.n_bins)
            convert_checkpoint(cfg, gguf, get_mix(mix), tok, synthetic_seed=SEED)
    return st, gguf


@dataclass(frozen=True)
class Dump:
    path: Path
    meta: dict

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy")

    def __contains__(self, name: str) -> bool:
        return (self.path / f"{name}.npy").exists()


def reference_run(
    config: str,
    *,
    temp: float,
    frames: int,
    eos_threshold: float = float("inf"),
    text: str = TEXT,
    dump_layers: bool = True,
) -> Dump:
    tag = f"{config}-t{temp}-f{frames}-e{eos_threshold}-{zlib.crc32(text.encode()):08x}"
    out = _root() / "dumps" / tag
    with made_once(out):
        # run_reference.py writes meta.json last; a dump made earlier (POCKET_PARITY_DIR, e.g. on x86 for the
        # aarch64 check) needs no reference here
        if not (out / "meta.json").exists():
            _run_reference(out, config, temp, frames, eos_threshold, text, dump_layers)
    return Dump(out, json.loads((out / "meta.json").read_text()))


def _run_reference(
    out: Path, config: str, temp: float, frames: int, eos_threshold: float, text: str, dump_layers: bool
) -> None:
    require_reference()
    st, _ = synthetic_model(config, safetensors=True)
    cmd = [
        sys.executable,
        str(shared_path("reference", "run_reference.py")),
        "--weights",
        str(st),
        "--tokenizer",
        str(shared_path("assets", "tokenizer.model")),
        "--text",
        text,
        "--voice-wav",
        str(shared_path("assets", "voices", "speaker-48k.wav")),
        "--frames",
        str(frames),
        "--seed",
        str(SEED),
        "--dump-dir",
        str(out),
        "--config",
        config,
        "--temp",
        str(temp),
        "--eos-threshold",
        str(eos_threshold),
    ] + (["--dump-layers", "--dump-layers-frames", str(frames)] if dump_layers else [])
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
