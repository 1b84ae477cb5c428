"""Issue #6: `pocket-quantize` writes atomically. Killed (SIGKILL) at any moment, it leaves nothing at
the destination, or the previous file there byte for byte; a run that completes leaves a complete
file that loads.

The converter writes a temporary `.{name}.*.part` beside the destination and renames it over the
destination only when complete (quantize/convert.py). After a SIGKILL nobody can delete that temporary
file, so it may remain; the destination itself is never partial.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pocket_ggml.runtime.model_file import ModelFile

CONFIG = "english_2m_2026-10"  # F32 with the encoder: a 47 MB file, written over about a second
N_KILLS = 6


def _command(output: Path) -> list[str]:
    exe = Path(sys.executable).with_name("pocket-quantize")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pocket_ggml.cli.quantize"]
    return [*cmd, "--synthetic", CONFIG, "--type", "F32", "-q", "-o", str(output)]


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A previous file (a different valid model), and one complete run: its bytes and timings."""
    from pocket_ggml.format.config import load_released_config
    from pocket_ggml.format.tokenizer import synthetic_tokenizer_record
    from pocket_ggml.quantize.convert import convert
    from pocket_ggml.quantize.policy import get_mix

    d = tmp_path_factory.mktemp("atomic")
    cfg = load_released_config(CONFIG)
    tok = synthetic_tokenizer_record(cfg.flow_lm.n_bins)
    previous = d / "previous.gguf"
    convert(cfg, previous, get_mix("Q8_0"), tok, synthetic_seed=1, keep_encoder=False)

    full = d / "full"
    full.mkdir()
    dest = full / "model.gguf"
    shutil.copy(previous, dest)
    t0 = time.perf_counter()
    proc = subprocess.Popen(_command(dest), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_part = None
    while proc.poll() is None:
        if t_part is None and _temporaries(full):
            t_part = time.perf_counter()
        time.sleep(0.002)
    t_end = time.perf_counter()
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert t_part is not None, "never saw the temporary file"
    # After a complete run: the destination is the whole new model, and no temporary file is left.
    assert _temporaries(full) == []
    mf = ModelFile(dest)
    assert mf.config.name == CONFIG and mf.info.has_encoder
    return {
        "previous": previous.read_bytes(),
        "new": dest.read_bytes(),
        "seconds": t_end - t0,
        "write_start": t_part - t0,
        "write_seconds": t_end - t_part,
    }


def test_a_complete_run_replaces_the_previous_file(runs):
    assert runs["new"] != runs["previous"]
    assert runs["new"][:4] == b"GGUF"


def test_sigkill_at_random_moments_leaves_the_previous_file_or_nothing(runs, tmp_path):
    rng = random.Random(6)
    killed = mid_write = 0
    log = []
    for i in range(N_KILLS):
        folder = tmp_path / f"kill{i}"
        folder.mkdir()
        dest = folder / "model.gguf"
        had_previous = i != 0  # the first run starts with no file at the destination
        if had_previous:
            dest.write_bytes(runs["previous"])
        proc = subprocess.Popen(_command(dest), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2:  # a moment while the temporary file is being written
            while proc.poll() is None and not _temporaries(folder):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.8 * runs["write_seconds"]))
        else:  # any moment of the run
            time.sleep(rng.uniform(0.0, runs["seconds"]))
        writing = bool(_temporaries(folder))
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        log.append((i, rc, writing))
        if rc == -signal.SIGKILL:
            killed += 1
            mid_write += writing
        # The destination is the previous file (or absent), or -- killed after the rename -- the new one.
        if dest.exists():
            got = dest.read_bytes()
            assert got == runs["previous"] or got == runs["new"], f"run {i}: a partial destination ({len(got)} B)"
            if not had_previous:
                assert got == runs["new"], f"run {i}: a file appeared that is not the complete model"
        else:
            assert not had_previous, f"run {i}: the previous file is gone"
        # Nothing else appears beside it but the converter's temporary file.
        others = {p.name for p in folder.iterdir()} - {"model.gguf"}
        assert all(n.startswith(".model.gguf.") and n.endswith(".part") for n in others), others
    print(f"\nSIGKILL runs (index, return code, temporary file present): {log}")
    assert killed >= N_KILLS // 2, log  # most kills land before the end of the run
    assert mid_write >= 2, log  # and some of them while the file is being written


def test_atomic_write_and_folder_all_or_nothing(tmp_path):
    """files.atomic_write / atomic_folder: a block that raises leaves the destination as it was and no
    temporary behind; a folder finished first by another writer is kept."""
    from pocket_ggml.files import atomic_folder, atomic_write

    dest = tmp_path / "kept.txt"
    dest.write_text("before")
    with pytest.raises(RuntimeError), atomic_write(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert dest.read_text() == "before"
    with atomic_write(dest) as tmp:
        tmp.write_text("after")
    assert dest.read_text() == "after"

    folder = tmp_path / "dump"
    with pytest.raises(RuntimeError), atomic_folder(folder) as tmp:
        (tmp / "meta.json").write_text("{}")
        raise RuntimeError("interrupted")
    assert not folder.exists()
    with atomic_folder(folder) as tmp:
        (tmp / "meta.json").write_text("first")
        with atomic_folder(folder) as other:
            (other / "meta.json").write_text("second")
    assert (folder / "meta.json").read_text() == "second"  # the inner writer finished first: its folder stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "kept.txt"]
