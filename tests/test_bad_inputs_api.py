"""Bad audio, text and parameters through the API and pocket-speak: a typed PocketError (exit code 2
with one line from the CLI) for what is invalid, success for what is merely unusual, and never a
crash. Every case runs in a subprocess; none may end by a signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _cli import assert_refused_in_one_line, run_cli

from pocket_ggml.voices.store import synthetic_voice_audio

SMALL = "english_2m_2026-10"
WORKER = Path(__file__).parent / "workers" / "api_cases.py"


@pytest.fixture(scope="module")
def voiced_model(tmp_path_factory) -> Path:
    """The small synthetic model with one stored voice."""
    out = tmp_path_factory.mktemp("voiced") / "small-voiced.gguf"
    wav = out.with_suffix(".wav")
    sf.write(wav, synthetic_voice_audio(24000), 24000)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pocket_ggml.cli.quantize",
            "--synthetic",
            SMALL,
            "-o",
            str(out),
            "--type",
            "Q8_0",
            "--voice",
            f"v={wav}",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return out


def _audio_cases(d: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    speech = synthetic_voice_audio(24000)
    cases = []

    def wav(name, data, rate, subtype=None, expect="ok", fmt=None):
        path = d / f"{name}.{'flac' if fmt == 'FLAC' else 'wav'}"
        sf.write(path, data, rate, subtype=subtype, format=fmt)
        cases.append({"name": f"audio {name}", "kind": "audio", "path": str(path), "expect": expect})

    wav("empty", np.zeros(0, np.float32), 24000, expect="error")
    wav("silent", np.zeros(48000, np.float32), 24000)
    wav("8-bit", speech, 24000, subtype="PCM_U8")
    wav("32-bit float", speech, 24000, subtype="FLOAT")
    wav("24-bit flac", speech, 24000, subtype="PCM_24", fmt="FLAC")
    wav("6 channels", np.stack([speech] * 6, axis=1), 24000)
    wav("8 kHz", speech[::3], 8000)
    wav("192 kHz", np.repeat(speech, 8), 192000)
    wav("one sample", speech[:1], 24000)
    wav("very long", np.tile(speech, 50)[: 24000 * 150], 24000, expect="error")
    wav("clipped noise", np.clip(rng.standard_normal(48000) * 3, -1, 1).astype(np.float32), 24000)
    for name, content in [
        ("not audio", b"this is text, not audio\n" * 100),
        ("empty file", b""),
        ("truncated wav header", b"RIFF\x00\x00\x00\x00WAVEfmt "),
    ]:
        p = d / f"{name.replace(' ', '_')}.wav"
        p.write_bytes(content)
        cases.append({"name": f"audio {name}", "kind": "audio", "path": str(p), "expect": "error"})
    cases.append({"name": "audio missing file", "kind": "audio", "path": str(d / "absent.wav"), "expect": "error"})
    cases.append({"name": "audio directory", "kind": "audio", "path": str(d), "expect": "error"})
    for name, arr, rate, expect in [
        ("nan samples", np.full(24000, np.nan, np.float32), 24000, "error"),
        ("inf samples", np.r_[speech[:1000], np.inf].astype(np.float32), 24000, "error"),
        ("int16 samples", (speech * 32767).astype(np.int16), 24000, "ok"),
        ("stereo samples", np.stack([speech, speech], axis=1), 24000, "ok"),
        ("3-D samples", np.zeros((2, 2, 2), np.float32), 24000, "error"),
        ("complex samples", np.zeros(100, np.complex64), 24000, "error"),
        ("rate 0", speech, 0, "error"),
        ("rate 10 MHz", speech, 10_000_000, "error"),
    ]:
        p = d / f"{name.replace(' ', '_')}.npy"
        np.save(p, arr)
        cases.append({"name": f"samples {name}", "kind": "samples", "path": str(p), "rate": rate, "expect": expect})
    return cases


def _text_cases(d: Path) -> list[dict]:
    big = d / "1MB.txt"
    big.write_text(("The quick brown fox jumps over the lazy dog. " * 23000)[:1_000_000], encoding="utf-8")
    ok = {
        "control characters": "Hello\x00\x07 there\x1b[31m world\x7f.",
        "emoji": "I love pizza \U0001f355\U0001f600 so much!",
        "right-to-left": "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd and hello \u0645\u0631\u062d\u0628\u0627",
        "mixed scripts": "Hello \u4f60\u597d \u041f\u0440\u0438\u0432\u0435\u0442 \u3053\u3093\u306b\u3061\u306f.",
        "only punctuation": "?!...,;:!!",
        "outside vocabulary": "\u2603\u2764\ufe0f\U00010348 \u0f00",
        "one letter": "a",
        "very long word": "x" * 5000,
        "newlines and tabs": "line one\n\n\tline two\r\nline three",
        "numbers": "3.14159 2.71828 1,000,000 42",
        "single emoji": "\U0001f600",
        "shouting": "STOP RIGHT THERE, THIS IS ALL CAPS!!!",
        "url and email": "See https://example.com/a?b=c or write to someone@example.org",
    }
    cases = [{"name": f"text {k}", "kind": "text", "text": v, "expect": "ok"} for k, v in ok.items()]
    cases.append({"name": "text 1 MB", "kind": "text", "path": str(big), "expect": "ok"})
    for k, v in {"empty": "", "whitespace": " \n\t  \r\n ", "deleted by rules": "\u200b"}.items():
        cases.append(
            {"name": f"text {k}", "kind": "text", "text": v, "expect": "error" if k != "deleted by rules" else "any"}
        )
    markers, unit = d / "markers.txt", "[pause:10] Go <break time='5ms'/> on. "
    markers.write_text(unit * (1_000_000 // len(unit)), encoding="utf-8")  # parsed whole before the first sample
    cases.append({"name": "markup 1 MB of markers", "kind": "text", "path": str(markers), "expect": "ok"})
    for k, (v, expect) in {
        "only pauses": ("[pause:10][pause:0]", "ok"),
        "malformed pause": ("Hi [pause:1.5", "error"),
        "pause of 11 s": ("Hi [pause:11]", "error"),
        "other tag": ("<speak>Hi <prosody rate='slow'>there</prosody></speak>", "error"),
        "unclosed speak": ("<speak>Hi", "error"),
        "bad character reference": ("<speak>&#xD800;</speak>", "error"),
        "less-than sign": ("3 < 4 and x<y", "ok"),
    }.items():
        cases.append({"name": f"markup {k}", "kind": "text", "text": v, "expect": expect})
    return cases


def _param_cases(model: Path) -> list[dict]:
    bad = {
        "negative temperature": {"temp": -0.5},
        "nan temperature": {"temp": float("nan")},
        "inf temperature": {"temp": float("inf")},
        "string temperature": {"temp": "hot"},
        "threads 0": {"threads": 0},
        "threads 1000": {"threads": 1000},
        "threads 1.5": {"threads": 1.5},
        "mimi threads -1": {"mimi_threads": -1},
        "nan eos threshold": {"eos_threshold": float("nan")},
        "lsd steps 0": {"lsd_decode_steps": 0},
        "lsd steps 1000": {"lsd_decode_steps": 1000},
        "frames after eos -1": {"frames_after_eos": -1},
        "max tokens 0": {"max_tokens": 0},
        "noise clamp 0": {"noise_clamp": 0.0},
        "noise clamp -1": {"noise_clamp": -1.0},
        "unknown quantization": {"quantization": "Q3_K"},
    }
    cases = [
        {"name": f"param {k}", "kind": "param", "model": str(model), "kwargs": v, "expect": "error"}
        for k, v in bad.items()
    ]
    cases.append(
        {
            "name": "param inf eos threshold",
            "kind": "param",
            "model": str(model),
            "kwargs": {"eos_threshold": float("inf")},
            "expect": "ok",
        }
    )
    for k, v in {
        "frames after eos 0": ({"frames_after_eos": 0}, "ok"),
        "max tokens -3": ({"max_tokens": -3}, "error"),
        "frames after eos -2": ({"frames_after_eos": -2}, "error"),
    }.items():
        cases.append({"name": f"generate {k}", "kind": "generate", "kwargs": v[0], "expect": v[1]})
    return cases


def _run_worker(model: Path, cases: list[dict], d: Path) -> dict[str, list[str]]:
    """All cases in one subprocess; a case that kills it is run again alone to name it."""
    spec = d / "cases.json"
    spec.write_text(json.dumps([{k: v for k, v in c.items() if k != "expect"} for c in cases]))
    r = subprocess.run(
        [sys.executable, str(WORKER), str(model), str(spec)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, GGML_NO_BACKTRACE="1"),
    )
    results = {ln.split("\t")[0]: ln.split("\t")[1:] for ln in r.stdout.splitlines() if "\t" in ln}
    if r.returncode != 0:
        assert r.returncode > 0, f"the worker died by signal {-r.returncode}: {r.stderr[-2000:]}"
        missing = [c for c in cases if c["name"] not in results]
        assert not missing, f"worker exited {r.returncode} before {missing[0]['name']}: {r.stderr[-2000:]}"
    return results


def test_api_bad_inputs_are_typed_errors_never_crashes(voiced_model, tmp_path):
    cases = _audio_cases(tmp_path) + _text_cases(tmp_path) + _param_cases(voiced_model)
    results = _run_worker(voiced_model, cases, tmp_path)
    problems = []
    for c in cases:
        status, exc, msg = results[c["name"]]
        if status == "untyped" or (c["expect"] != "any" and status != c["expect"]):
            problems.append(f"{c['name']}: expected {c['expect']}, got {status} {exc} {msg}")
    assert not problems, "\n".join(problems)
    assert len(cases) >= 60


CLI_CASES = {
    "nan temperature": ["--temp", "nan"],
    "negative temperature": ["--temp", "-1"],
    "threads 0": ["--threads", "0"],
    "threads 1000": ["--threads", "1000"],
    "nan eos": ["--eos-threshold", "nan"],
    "lsd 0": ["--lsd-decode-steps", "0"],
    "frames after eos -1": ["--frames-after-eos", "-1"],
    "max tokens 0": ["--max-tokens", "0"],
    "bad voice": ["--voice", "/nonexistent/voice.wav"],
    "unknown stored voice": ["--voice", "nobody"],
    "bad model": ["--model", "/nonexistent/model.gguf"],
    "bad extension": ["-o", "out.mp3"],
    "text not a number": ["--temp", "warm"],
    "empty text": ["--text", ""],
    "whitespace text": ["--text", " \n "],
    "output folder missing": ["-o", "/nonexistent/folder/out.wav"],
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_inputs_exit_2_with_one_line(voiced_model, tmp_path, case):
    args = ["--model", str(voiced_model), "--text", "Hello.", "-o", str(tmp_path / "out.wav"), *CLI_CASES[case]]
    assert_refused_in_one_line(run_cli("speak", *args, timeout=300, cwd=tmp_path), case)
