"""Parity of the quantized mixes with the official pocket-tts 4.0.1 (issue #3, quantized part), measured
by pocket_ggml.bench.parity with ggml's real kernels (quantized weights, activations quantized in the
matmuls) on the seeded synthetic english weights, teacher-forced at temp 0.

Required (issue #3): teacher-forced centred latent cosine (the F32 reference's mean latent subtracted
from both; see ../shared/docs/quantization-study.md) >= 0.99 for the Q8_0 mix and >= 0.85 for Q4_K_M,
and our F32 baseline within 1e-4 of the reference at every stage.
"""

from __future__ import annotations

import numpy as np
import pytest
from _ggml_parity import REL_TOL
from _parity_runs import TEXT, reference_run, synthetic_model
from _reference import require_reference, shared_path
from click.testing import CliRunner

from pocket_ggml.bench.parity import ReferenceDump, RuntimeParity, Workdir, main, measure_runtime

CONFIG = "english"
FRAMES = 10  # test_parity's english temp-0 dump: made once per session, shared
CLI_FRAMES = 3  # the CLI test makes its own (short) reference run through the subprocess path
MIN_CENTRED_COSINE = {"Q8_0": 0.99, "Q4_K_M": 0.85}  # issue #3
MIN_BASELINE_SNR_DB = 60.0  # F32 audio against the reference, as in test_parity


@pytest.fixture(scope="module")
def dump() -> ReferenceDump:
    return ReferenceDump(reference_run(CONFIG, temp=0.0, frames=FRAMES).path)


def _measure(mix: str, dump: ReferenceDump) -> RuntimeParity:
    _, gguf = synthetic_model(CONFIG, mix)
    voice = shared_path("assets", "voices", "speaker-48k.wav")
    return measure_runtime(gguf, dump, voice_wav=voice, text=TEXT, frames=FRAMES, temp=0.0, label=mix)


@pytest.fixture(scope="module")
def baseline(dump: ReferenceDump) -> RuntimeParity:
    return _measure("F32", dump)


def test_f32_baseline_matches_reference_at_every_stage(baseline: RuntimeParity):
    bad = {k: v for k, v in baseline.stage_errors.items() if not v <= REL_TOL}
    assert not bad, f"F32 stages over {REL_TOL}: {bad}"
    assert len(baseline.stage_errors) >= 4 + 6 + 3 + 4  # prompts, 6 layers, hidden/EOS/latent, Mimi
    assert baseline.tokens_match
    assert baseline.latent_cosine_centred > 1 - 1e-6
    assert baseline.mimi_tf_snr_db >= MIN_BASELINE_SNR_DB
    assert baseline.free_running_snr_db >= MIN_BASELINE_SNR_DB


@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M"])
def test_quantized_mix_keeps_teacher_forced_centred_latent_cosine(
    mix: str, dump: ReferenceDump, baseline: RuntimeParity
):
    result = _measure(mix, dump)
    assert result.model_bytes < baseline.model_bytes / 3  # really quantized
    assert result.stage_errors.keys() == baseline.stage_errors.keys()
    assert result.stage_errors["latent (flow output)"] > 100 * baseline.stage_errors["latent (flow output)"]
    assert result.latent_cosine_centred >= MIN_CENTRED_COSINE[mix], result
    assert np.isfinite(result.free_running_snr_db) and result.free_running_snr_db > 0, result


def _link(target, link) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _paths() -> list[str]:
    return [
        "--reference-script",
        str(shared_path("reference", "run_reference.py")),
        "--tokenizer",
        str(shared_path("assets", "tokenizer.model")),
        "--voice-wav",
        str(shared_path("assets", "voices", "speaker-48k.wav")),
    ]


def test_cli_runs_the_reference_and_prints_the_table(tmp_path):
    require_reference()
    wd = Workdir(tmp_path)
    st, f32 = synthetic_model(CONFIG, safetensors=True)
    _link(st, wd.safetensors(CONFIG))
    _link(f32, wd.gguf(CONFIG, "F32"))
    _link(synthetic_model(CONFIG, "Q8_0")[1], wd.gguf(CONFIG, "Q8_0"))
    args = ["--type", "q8_0", "--frames", str(CLI_FRAMES), "--text", TEXT, "--workdir", str(tmp_path), *_paths()]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = [ln for ln in result.output.splitlines() if ln.startswith("|")]
    assert table[0].split("|")[2:4] == [" ours F32 ", " ours Q8_0 "]
    rows = {ln.split("|")[1].strip() for ln in table[2:]}
    assert {"step layer 5", "latent (flow output)", "Mimi SEANet", "latent cosine, centred"} <= rows
    assert "audio SNR, free-running (dB)" in rows
    assert all(len(ln.split("|")) == 5 for ln in table)
    assert (wd.dump(CONFIG, 0.0, CLI_FRAMES, TEXT) / "meta.json").is_file()  # made by the subprocess


def test_cli_rejects_an_unknown_type_in_one_line():
    result = CliRunner().invoke(main, ["--type", "Q3_XL"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Q3_XL" in lines[0] and "Q4_K_M" in lines[0], result.output


def test_cli_without_the_reference_script_fails_in_one_line(tmp_path):
    missing = tmp_path / "run_reference.py"
    args = ["--type", "Q8_0", "--workdir", str(tmp_path / "wd"), *_paths(), "--reference-script", str(missing)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], result.output
    assert not (tmp_path / "wd").exists()  # failed before making any model
