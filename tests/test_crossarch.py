"""pocket_ggml.bench.crossarch: the bars of the x86-vs-aarch64 comparison (scripts/check-aarch64.sh)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pocket_ggml.bench import crossarch
from pocket_ggml.bench.crossarch import SAMPLES_PER_FRAME, compare_runs, snr_db

FRAMES = 5


def _side(path, audio: dict[tuple[str, str], np.ndarray], sha: dict | None = None):
    path.mkdir()
    results = []
    for (config, type_), wav in audio.items():
        np.save(path / f"{config}-{type_}.npy", wav)
        results.append(
            {
                "config": config,
                "type": type_,
                "frames": len(wav) // SAMPLES_PER_FRAME,
                "samples": len(wav),
                "gguf_sha256": (sha or {}).get((config, type_), "same"),
                "synthesize_s": 1.0,
            }
        )
    info = {"machine": "test", "ggml_features": {"NEON": True}, "text": "t", "results": results}
    (path / "result.json").write_text(json.dumps(info))
    return path


def _noisy(wav: np.ndarray, snr: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(wav)).astype(np.float32)
    noise *= np.sqrt(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2) / 10 ** (snr / 10))
    return wav + noise


@pytest.fixture
def f32() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(FRAMES * SAMPLES_PER_FRAME).astype(np.float32)


def test_snr_db_is_infinite_for_identical_audio_and_measures_noise(f32):
    assert snr_db(f32, f32) == np.inf
    assert snr_db(_noisy(f32, 30.0, 1), f32) == pytest.approx(30.0, abs=0.01)


def test_each_type_is_held_to_its_bar(tmp_path, f32):
    q4_x86 = _noisy(f32, 20.0, 1)  # the quantization error: Q4_K_M is held to 20 dB
    x86 = _side(tmp_path / "x86", {("c", "F32"): f32, ("c", "Q8_0"): f32, ("c", "Q4_K_M"): q4_x86})
    arm = {
        ("c", "F32"): _noisy(f32, 61.0, 2),
        ("c", "Q8_0"): _noisy(f32, 41.0, 3),
        ("c", "Q4_K_M"): _noisy(q4_x86, 21.0, 4),
    }
    rows, ok = compare_runs(x86, _side(tmp_path / "arm", arm))
    assert ok and [r["passed"] for r in rows] == [True] * 3
    bars = {r["type"]: r["bar_db"] for r in rows}
    assert bars["F32"] == 60 and bars["Q8_0"] == 40 and bars["Q4_K_M"] == pytest.approx(20.0, abs=0.01)

    for key, snr in ((("c", "F32"), 59.0), (("c", "Q8_0"), 39.0), (("c", "Q4_K_M"), 19.0)):
        worse = dict(arm)
        worse[key] = _noisy(f32 if key[1] != "Q4_K_M" else q4_x86, snr, 5)
        rows, ok = compare_runs(x86, _side(tmp_path / f"arm-{key[1]}", worse))
        assert not ok and [r["type"] for r in rows if not r["passed"]] == [key[1]]


def test_frame_counts_and_f32_bytes_must_match(tmp_path, f32):
    x86 = _side(tmp_path / "x86", {("c", "F32"): f32, ("c", "Q8_0"): f32})
    longer = np.concatenate([f32, f32[:SAMPLES_PER_FRAME]])
    rows, ok = compare_runs(x86, _side(tmp_path / "a", {("c", "F32"): f32, ("c", "Q8_0"): longer}))
    assert not ok and [r["passed"] for r in rows] == [True, False]
    other_bytes = {("c", "F32"): "different"}
    rows, ok = compare_runs(x86, _side(tmp_path / "b", {("c", "F32"): f32, ("c", "Q8_0"): f32}, other_bytes))
    assert not ok and [r["passed"] for r in rows] == [False, True]
    _, ok = compare_runs(x86, _side(tmp_path / "c", {("c", "F32"): f32}))  # a model missing
    assert not ok


def test_compare_command_prints_the_table_and_fails_with_exit_1(tmp_path, f32):
    x86 = _side(tmp_path / "x86", {("c", "F32"): f32})
    good = _side(tmp_path / "good", {("c", "F32"): f32})
    r = CliRunner().invoke(crossarch.main, ["compare", str(x86), str(good), "--label", "arm"])
    assert r.exit_code == 0 and "| c F32 | 5 / 5 | identical | >= 60.0 | yes |" in r.output
    bad = _side(tmp_path / "bad", {("c", "F32"): _noisy(f32, 10.0, 1)})
    r = CliRunner().invoke(crossarch.main, ["compare", str(x86), str(bad), "--label", "arm"])
    assert r.exit_code == 1 and "FAILED" in r.output
