"""pocket_ggml.bench.crossarch: the bars of the x86-vs-aarch64 comparison (scripts/check-aarch64.sh)."""

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from pocket_ggml.bench import crossarch
from pocket_ggml.bench.crossarch import SAMPLES_PER_FRAME, compare_runs, snr_db

FRAMES = 5
LATENT_DIM = 32


def _noisy(x: np.ndarray, snr: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2) / 10 ** (snr / 10))
    return x + noise


def _model(seed: int = 0, frames: int = FRAMES) -> dict[str, np.ndarray]:
    """One model's arrays as synth writes them: free-running audio, teacher-forced latents and audio."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal(frames * SAMPLES_PER_FRAME).astype(np.float32)
    return {"": audio, "-tf-latents": rng.standard_normal((frames, LATENT_DIM)).astype(np.float32), "-tf": audio}


def _side(path, models: dict[tuple[str, str], dict[str, np.ndarray]], sha: dict | None = None, quantization=None):
    """A synth output folder; `quantization`: {model: {measure: SNR of the type against F32}}."""
    quantization = quantization or {}
    path.mkdir()
    results = []
    for (config, type_), arrays in models.items():
        for suffix, a in arrays.items():
            np.save(path / f"{config}-{type_}{suffix}.npy", a)
        results.append(
            {
                "config": config,
                "type": type_,
                "frames": len(arrays[""]) // SAMPLES_PER_FRAME,
                "samples": len(arrays[""]),
                "gguf_sha256": (sha or {}).get((config, type_), "same"),
                "noise_floor_db": 38.0,
                "synthesize_s": 1.0,
            }
        )
        if type_ != "F32":
            results[-1]["quantization_snr_db"] = dict(quantization.get((config, type_), {}))
    info = {"machine": "test", "ggml_features": {"NEON": True}, "text": "t", "results": results}
    (path / "result.json").write_text(json.dumps(info))
    return path


def _moved(model: dict[str, np.ndarray], suffix: str, snr: float) -> dict[str, np.ndarray]:
    return {**model, suffix: _noisy(model[suffix], snr, 7)}


def test_snr_db_is_infinite_for_identical_audio_and_measures_noise():
    x = _model()[""]
    assert snr_db(x, x) == np.inf
    assert snr_db(_noisy(x, 30.0, 1), x) == pytest.approx(30.0, abs=0.01)


@pytest.mark.parametrize(
    ("type_", "suffix", "snr", "passes"),
    [
        ("F32", "", 61.0, True),
        ("F32", "", 59.0, False),  # F32: >= 60 dB on every measure
        ("F32", "-tf", 59.0, False),
        ("F32", "-tf-latents", 59.0, False),
        ("Q8_0", "-tf", 41.0, True),
        ("Q8_0", "-tf", 39.0, False),  # quantized: >= 40 dB where quantization moves x86 less than 46 dB
        ("Q8_0", "", 39.0, False),
        ("Q4_K_M", "-tf-latents", 25.0, True),  # ... else its SNR against F32 (here 30 dB) less 6 dB
        ("Q4_K_M", "-tf-latents", 23.0, False),
    ],
)
def test_each_measure_is_held_to_its_bar(tmp_path, type_, suffix, snr, passes):
    model = _model()
    quantization = {("c", "Q4_K_M"): {"-tf-latents": 30.0, "": 50.0}}
    x86 = _side(tmp_path / "x86", {("c", type_): model}, quantization=quantization)
    rows, ok = compare_runs(x86, _side(tmp_path / "arm", {("c", type_): _moved(model, suffix, snr)}))
    assert ok is passes and rows[0]["passed"] is passes


def test_frame_counts_and_f32_bytes_must_match(tmp_path):
    x86 = _side(tmp_path / "x86", {("c", "F32"): _model(), ("c", "Q8_0"): _model()})
    longer = _model(frames=FRAMES + 1)
    rows, ok = compare_runs(x86, _side(tmp_path / "a", {("c", "F32"): _model(), ("c", "Q8_0"): longer}))
    assert not ok and [r["passed"] for r in rows] == [True, False]
    other_bytes = {("c", "F32"): "different", ("c", "Q8_0"): "different"}  # Q8_0's may differ
    rows, ok = compare_runs(x86, _side(tmp_path / "b", {("c", "F32"): _model(), ("c", "Q8_0"): _model()}, other_bytes))
    assert not ok and [r["passed"] for r in rows] == [False, True]
    _, ok = compare_runs(x86, _side(tmp_path / "c", {("c", "F32"): _model()}))  # a model missing
    assert not ok


def test_the_emulated_side_may_run_the_subset_it_names(tmp_path):
    x86 = _side(tmp_path / "x86", {("c", "F32"): _model(), ("c", "Q8_0"): _model(), ("d", "F32"): _model()})
    arm = _side(tmp_path / "arm", {("c", "F32"): _model(), ("d", "F32"): _model()})
    rows, ok = compare_runs(x86, arm, crossarch.parse_models("c:F32,d:F32"))
    assert ok and [(r["config"], r["type"]) for r in rows] == [("c", "F32"), ("d", "F32")]
    assert not compare_runs(x86, arm, crossarch.parse_models("c:F32,c:Q8_0,d:F32"))[1]  # one named is missing
    assert not compare_runs(x86, arm, crossarch.parse_models("c:F32"))[1]  # one more than named
    arm_extra = _side(tmp_path / "extra", {("c", "F32"): _model(), ("e", "F32"): _model()})
    assert not compare_runs(x86, arm_extra, crossarch.parse_models("c:F32,e:F32"))[1]  # x86 has no e
    with pytest.raises(click.BadParameter):
        crossarch.parse_models("c-F32")


def test_compare_command_prints_the_table_and_fails_with_exit_1(tmp_path):
    model = _model()
    x86 = _side(tmp_path / "x86", {("c", "Q8_0"): model})
    good = _side(tmp_path / "good", {("c", "Q8_0"): _moved(model, "", 45.0)})
    r = CliRunner().invoke(crossarch.main, ["compare", str(x86), str(good), "--label", "arm"])
    assert r.exit_code == 0, r.output
    row = (
        "| c Q8_0 | 5 / 5 | yes | 45.0 (>= 40.0) | identical (>= 40.0) | identical (>= 40.0) | 38.0 | 1.0 / 1.0 | ok |"
    )
    assert row in r.output
    bad = _side(tmp_path / "bad", {("c", "Q8_0"): _moved(model, "-tf", 10.0)})
    r = CliRunner().invoke(crossarch.main, ["compare", str(x86), str(bad), "--label", "arm"])
    assert r.exit_code == 1 and "FAILED" in r.output


@pytest.mark.parametrize("type_", ["F32", "Q4_K_M"])
def test_the_teacher_forced_pass_reproduces_this_machines_free_run(tmp_path, tokenizer_path, voice_wav, type_):
    """What the ARM check's comparisons stand on: fed its own latents, the teacher-forced pass (the FlowLM's
    steps made as the free run makes them) predicts them and their audio bit for bit (synthesize raises
    otherwise)."""
    result = crossarch.synthesize("english_2m_2026-10", type_, tmp_path, tokenizer_path, voice_wav, 0.5, None)
    assert result["frames"] > 0


def test_a_model_may_run_on_the_teachers_gguf(tmp_path, tokenizer_path, voice_wav):
    """--teachers-gguf: the other side runs the reference side's GGUF (bytes copied, not quantized there)."""
    model = "english_2m_2026-10:Q8_0"
    common = ["--tokenizer", str(tokenizer_path), "--voice", str(voice_wav), "--voice-seconds", "0.5"]
    ref, other = tmp_path / "ref", tmp_path / "other"
    r = CliRunner().invoke(crossarch.main, ["synth", "--out", str(ref), "--models", model, *common])
    assert r.exit_code == 0, r.output
    args = ["synth", "--out", str(other), "--models", model, "--teacher", str(ref), "--teachers-gguf", model]
    r = CliRunner().invoke(crossarch.main, [*args, *common])
    assert r.exit_code == 0, r.output
    name = "english_2m_2026-10-Q8_0.gguf"
    assert (other / name).read_bytes() == (ref / name).read_bytes()
    rows, ok = compare_runs(ref, other, crossarch.parse_models(model))
    assert ok and rows[0]["same_gguf"]
    r = CliRunner().invoke(crossarch.main, [*args[:-1], "english_2m_2026-10:F32", *common])
    assert r.exit_code == 2 and "--teachers-gguf" in r.output
