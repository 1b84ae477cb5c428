"""pocket-speak through click's runner and through a real subprocess pipe."""

from __future__ import annotations

import select
import subprocess
import sys

import numpy as np
import soundfile as sf
from _cli import assert_refused_in_one_line, run_cli
from _parity_runs import synthetic_model
from click.testing import CliRunner

from pocket_ggml.cli.speak import _pcm16
from pocket_ggml.cli.speak import main as speak

SMALL = "english_2m_2026-10"
FIXED = ["--temp", "0", "--eos-threshold", "inf", "--max-tokens", "50"]


def test_writes_wav_flac_ogg(tmp_path, voice_wav):
    model = str(synthetic_model(SMALL)[1])
    for ext in ("wav", "flac", "ogg"):
        out = tmp_path / f"a.{ext}"
        r = CliRunner().invoke(
            speak, ["--model", model, "--voice", str(voice_wav), "--text", "Hello there.", "-o", str(out), *FIXED]
        )
        assert r.exit_code == 0, r.output
        audio, rate = sf.read(out)
        assert rate == 24000 and audio.size > 0 and audio.size % 1920 == 0
        assert "synthetic weights" in r.output  # click's runner mixes stderr in


def test_stdin_lines_stream_as_raw_pcm_through_a_pipe(tmp_path, voice_wav):
    model = str(synthetic_model(SMALL)[1])
    cmd = [
        sys.executable,
        "-m",
        "pocket_ggml.cli.speak",
        "--model",
        model,
        "--voice",
        str(voice_wav),
        "--stream",
        *FIXED,
        "-q",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = None
    proc.stdin.write(b"First line of text.\n")
    proc.stdin.flush()
    first = proc.stdout.read(1920 * 2)  # one frame of audio arrives before the next line is sent
    proc.stdin.write(b"Second line.\n")
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    pcm = np.frombuffer(first + rest, dtype="<i2")
    assert len(first) == 3840 and pcm.size % 1920 == 0 and pcm.size >= 2 * 7 * 1920
    assert np.abs(pcm).max() > 0


def test_a_sentence_ends_within_a_line_and_sounds_as_through_the_api(voice_wav):
    """stdin is read as it arrives, not by lines: the first sentence is spoken before its line ends,
    and the audio is the API's for the same pieces (a line break ends a text)."""
    from pocket_ggml import TTSModel

    model = str(synthetic_model(SMALL, "Q4_K_M")[1])
    sampling = ["--seed", "3", "--eos-threshold", "-2"]
    cmd = [sys.executable, "-m", "pocket_ggml.cli.speak", "--model", model, "--voice", str(voice_wav), "--stream"]
    proc = subprocess.Popen(cmd + sampling + ["-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(b"Hello there my friend. How ")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:  # the sentence waited for its line to end: stop the process, not the test run
        proc.kill()
    assert ready, "no audio before the line ended"
    first = proc.stdout.read(1920 * 2)  # the first sentence is spoken while its line is still open
    proc.stdin.write("are you\nThird line, caf\u00e9.\n".encode())
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    tts = TTSModel.load_model(model, seed=3, eos_threshold=-2.0)
    voice = tts.get_state_for_audio_prompt(str(voice_wav))
    texts = [["Hello there my friend. How ", "are you"], ["Third line, caf\u00e9."]]
    audio = np.concatenate([c for pieces in texts for c in tts.generate_audio_for_text_stream(voice, pieces)])
    assert len(first) == 3840 and first + rest == _pcm16(audio)


def test_bad_input_is_one_line_and_exit_2(tmp_path, voice_wav):
    model = str(synthetic_model(SMALL)[1])
    cases = [
        ["--model", model, "--text", "hi", "-o", str(tmp_path / "x.wav"), "--temp", "nan"],
        ["--model", model, "--text", "hi", "-o", str(tmp_path / "x.wav"), "--threads", "0"],
        ["--model", model, "--text", "hi", "-o", str(tmp_path / "x.wav"), "--voice", str(tmp_path / "none.wav")],
        ["--model", str(tmp_path / "none.gguf"), "--text", "hi", "-o", str(tmp_path / "x.wav")],
        ["--model", model, "--text", "   ", "-o", str(tmp_path / "x.wav"), "--voice", str(voice_wav)],
        ["--model", model, "--text", "hi", "-o", str(tmp_path / "x.mp3")],
        ["--model", model, "--text", "hi"],
    ]
    for args in cases:
        assert_refused_in_one_line(run_cli("speak", *args, env={"PYTHONWARNINGS": "ignore"}), args)
        assert not (tmp_path / "x.wav").exists()


def test_list_voices(tmp_path):
    r = CliRunner().invoke(speak, ["--model", str(synthetic_model(SMALL)[1]), "--list-voices"])
    assert r.exit_code == 0 and "no stored voices" in r.output


def test_quantize_stores_voices_computed_with_its_own_weights(tmp_path, voice_wav):
    from pocket_ggml import TTSModel
    from pocket_ggml.cli.quantize import main as quantize

    out = tmp_path / "voiced.gguf"
    r = CliRunner().invoke(
        quantize, ["--synthetic", SMALL, "-o", str(out), "--type", "Q8_0", "--voice", f"me={voice_wav}", "-q"]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(speak, ["--model", str(out), "--list-voices"])
    assert r.output.split() == ["me"]
    model = TTSModel.load_model(out)
    stored, cloned = model.get_state_for_audio_prompt("me"), model.get_state_for_audio_prompt(voice_wav)
    np.testing.assert_array_equal(stored.snapshot.k, cloned.snapshot.k)
    r = CliRunner().invoke(quantize, ["--synthetic", SMALL, "-o", str(tmp_path / "y.gguf"), "--voice", "bad name=x"])
    assert r.exit_code == 2
