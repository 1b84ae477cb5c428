"""pocket-bench end to end on the small synthetic model (english_2m, Q4_K_M), with the reference.

One benchmark run (a handful of frames, one warm run, --reference, --json) serves every check: the
JSON has every field of every record, finite and positive where numeric, and our/ref ratios. No
timing is asserted. The reference is required (a failure, not a skip, in CI).
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
from pathlib import Path

import click
import pytest
from _cli import run_cli
from _parity_runs import synthetic_model
from _reference import require_reference

from pocket_ggml.bench.assets import write_wav16
from pocket_ggml.bench.flops import count_flops
from pocket_ggml.bench.report import RATIO_METRICS, RECORD_FIELDS
from pocket_ggml.cli.bench import _counts
from pocket_ggml.format.config import load_released_config
from pocket_ggml.voices.store import synthetic_voice_audio

SMALL = "english_2m_2026-10"
FRAMES = 4
TEXT_FIELDS = {"backend", "variant", "stage_method", "roof_method", "weights_kind", "model_file_format"}


def _bench(args: list[str], cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_cli("bench", *args, timeout=timeout, env={"POCKET_GGML_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    require_reference()
    _, gguf = synthetic_model(SMALL, "Q4_K_M")
    tmp = tmp_path_factory.mktemp("bench")
    out, wav = tmp / "bench.json", tmp / "voice-1s.wav"
    write_wav16(wav, synthetic_voice_audio(24000, seconds=1.0), 24000)  # a short prompt: a quicker test
    args = ["--model", str(gguf), "--voice", str(wav), "--frames", str(FRAMES), "--runs", "1"]
    r = _bench([*args, "--reference", "--json", str(out)], tmp / "cache")
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(out.read_text()), r


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_every_field_present_finite_positive(bench_run):
    doc, _ = bench_run
    records = doc["results"]
    assert [(r["backend"], r["variant"]) for r in records] == [
        ("pocket-ggml", "Q4_K_M"),
        ("pocket-tts", "fp32"),
        ("pocket-tts", "int8"),
    ]
    for rec in records:
        missing = [f for f in RECORD_FIELDS if f not in rec]
        assert not missing, (rec["backend"], rec["variant"], missing)
        for field in RECORD_FIELDS:
            value = rec[field]
            if field in TEXT_FIELDS:
                assert isinstance(value, str) and value, (field, value)
            elif field == "cores":
                assert value and all(isinstance(c, int) for c in value)
            else:
                assert _positive(value), (rec["backend"], rec["variant"], field, value)
        assert rec["frames"] == FRAMES and rec["runs"] == 1
        assert rec["weights_kind"] == "synthetic"
        assert rec["realtime_factor"] == pytest.approx(1 / rec["rtf"])
        assert rec["audio_s"] == pytest.approx(FRAMES * 0.08) and rec["voice_seconds"] == pytest.approx(1.0)
    ours = records[0]
    assert ours["model_file_format"] == "gguf" and ours["threads"] == ours["mimi_threads"] == 1
    assert records[1]["model_file_format"] == "safetensors"
    assert doc["model"]["weights_kind"] == "synthetic" and doc["model"]["config"] == SMALL
    for key in ("model", "logical_cpus", "isa_flags", "ggml_features"):
        assert key in doc["hardware"]
    for key in ("python", "numpy", "ggml-python", "pocket-ggml", "pocket-tts", "torch"):
        assert doc["versions"].get(key), key
    assert _positive(doc["flops"]["per_frame"]) and _positive(doc["flops"]["text_prefill"])


def test_reference_ratios(bench_run):
    doc, r = bench_run
    ratios = doc["ratios"]
    assert [(x["threads"], x["reference"]) for x in ratios] == [(1, "fp32"), (1, "int8")]
    for row in ratios:
        for m in RATIO_METRICS:
            assert _positive(row[m]), (row["reference"], m, row[m])
    # markdown on stdout (the results table and the ratios), progress on stderr
    assert "| **realtime factor** (audio s / wall s)" in r.stdout
    assert "ours / reference" in r.stdout and "pocket-tts int8" in r.stdout
    assert "pocket-bench:" in r.stderr and "pocket-bench:" not in r.stdout


def test_info(tmp_path):
    r = _bench(["--info"], tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ggml CPU features:")
    # this machine (x86 with AVX2, as CI) has ggml's Q4_K repack kernel
    assert lines[1].startswith("CPU_REPACK: yes")


def test_missing_reference_is_a_message(tmp_path):
    fake = tmp_path / "python-without-torch"
    fake.write_text("#!/bin/sh\necho torch pocket_tts\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    r = _bench(["--reference", "--reference-python", str(fake), "--frames", "2"], tmp_path, timeout=120)
    assert r.returncode == 2
    assert "needs the official pocket-tts 4.0.1" in r.stderr and "Traceback" not in r.stderr


def test_count_lists():
    assert _counts("1,2", "thread", 64) == (1, 2)
    assert _counts("2, 2,1", "core", 4096) == (2, 1)
    assert _counts(None, "core", 4096) == ()
    with pytest.raises(click.BadParameter):
        _counts("0", "core", 4096)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a sweep over 2 and 1 cores needs 2 CPUs")
def test_a_cores_sweep_measures_each_core_count(tmp_path):
    """--cores 2,1: every configuration on the first two CPUs, then pinned to the first one; each record
    says its CPUs and the table names them."""
    _, gguf = synthetic_model(SMALL, "Q4_K_M")
    wav, out = tmp_path / "voice-1s.wav", tmp_path / "bench.json"
    write_wav16(wav, synthetic_voice_audio(24000, seconds=1.0), 24000)
    args = ["--model", str(gguf), "--voice", str(wav), "--frames", "4", "--runs", "1", "--cores", "2,1"]
    r = _bench([*args, "--json", str(out)], tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-4000:]
    cpus = sorted(os.sched_getaffinity(0))
    assert [rec["cores"] for rec in json.loads(out.read_text())["results"]] == [cpus[:2], cpus[:1]]
    assert "pocket-ggml Q4_K_M 1T 2 cores | pocket-ggml Q4_K_M 1T 1 core |" in r.stdout
    r = _bench([*args[:-1], str(len(cpus) + 1)], tmp_path / "cache", timeout=120)
    assert r.returncode == 2 and f"--cores {len(cpus) + 1}" in r.stderr


def test_flops_match_the_parameter_count():
    """english: the FlowLM transformer is ~75.5 M weights, so ~151 MFLOP per frame plus attention."""
    fc = count_flops(load_released_config("english"), frames=125, text_tokens=50, voice_rows=40)
    assert 2 * 75.0e6 < fc.flow_lm_transformer < 2 * 80e6
    assert fc.per_run == pytest.approx(125 * fc.per_frame + fc.text_prefill)


def test_feed_mode_times_every_sentence_end(tmp_path):
    """--feed-wps: one latency per sentence of the text (fed word by word), and the one-shot first
    audio with and without first_chunk_tokens; figures present and positive, none asserted."""
    _, gguf = synthetic_model(SMALL, "Q4_K_M")
    wav, out = tmp_path / "voice-1s.wav", tmp_path / "feed.json"
    write_wav16(wav, synthetic_voice_audio(24000, seconds=1.0), 24000)
    text = "One sentence here. And a second one, a bit longer than the first! Third."
    args = ["--model", str(gguf), "--voice", str(wav), "--text", text, "--runs", "2", "--feed-wps", "40"]
    r = _bench([*args, "--first-chunk-tokens", "5", "--json", str(out)], tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(out.read_text())
    streamed = doc["streamed_first_audio_ms"] + doc["streamed_first_audio_after_busy_ms"]
    assert len(streamed) == 3 * 2  # at 40 words/s, most sentences end while the one before generates
    assert set(doc["one_shot_first_audio_ms"]) == {"reference chunking", "first_chunk_tokens=5"}
    figures = streamed + [x for v in doc["one_shot_first_audio_ms"].values() for x in v]
    assert all(_positive(x) for x in figures)
    assert "last word -> its first chunk" in r.stdout and "first_chunk_tokens=5" in r.stdout
