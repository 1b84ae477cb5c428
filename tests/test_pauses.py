"""Pauses through TTSModel and pocket-speak: exact silences, each side spoken as a text of its own,
markup errors before any audio, --no-markup; and a property test over texts with markers.

The sampling noise is one sequence across a text's chunks and pauses, so `A [pause] B` on a model
loaded with seed s must equal, sample for sample, `generate_audio(A)` then `generate_audio(B)` on a
second model loaded with seed s, with the zeros of the pause between them."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
from _parity_runs import synthetic_model
from hypothesis import given, settings
from hypothesis import strategies as st

from pocket_ggml import ParameterError, TTSModel
from pocket_ggml.errors import MarkupError, TextError
from pocket_ggml.runtime.generate import estimate_max_frames
from pocket_ggml.runtime.text import prepare_text_prompt

SMALL = "english_2m_2026-10"
RATE = 24000
FRAME = 1920


def _model(seed: int | None = None, **kwargs) -> TTSModel:
    return TTSModel.load_model(synthetic_model(SMALL)[1], temp=0.3, seed=seed, **kwargs)


@pytest.fixture(scope="module")
def voice(voice_wav):
    model = _model()
    try:
        return model.get_state_for_audio_prompt(voice_wav)
    finally:
        model.close()


def _spoken_separately(voice, parts: list, seed: int, **kwargs) -> list[np.ndarray]:
    """The audio of each of `parts` (texts and pause seconds): each text generated alone, in order, on a
    model seeded like the one under test, and round(seconds * rate) zeros for each pause."""
    model = _model(seed)
    try:
        return [
            np.zeros(round(p * RATE), np.float32) if isinstance(p, float) else model.generate_audio(voice, p, **kwargs)
            for p in parts
        ]
    finally:
        model.close()


@pytest.mark.parametrize(
    "text,parts",
    [
        ("Hello there. [pause:0.3] How are you?", ["Hello there.", 0.3, "How are you?"]),
        ('<speak>Hello there.<break time="1.25s"/>How are you?</speak>', ["Hello there.", 1.25, "How are you?"]),
        ("[pause:10ms]Hi.[pause:1][pause:0.5s] Bye. [pause:7ms]", [0.01, "Hi.", 1.0, 0.5, "Bye.", 0.007]),
    ],
)
def test_pauses_are_exact_zeros_between_sides_spoken_as_alone(voice, text, parts):
    model = _model(seed=11)
    try:
        audio = model.generate_audio(voice, text)
    finally:
        model.close()
    pieces = _spoken_separately(voice, parts, seed=11)
    assert audio.dtype == np.float32 and audio.size == sum(p.size for p in pieces)
    np.testing.assert_array_equal(audio, np.concatenate(pieces))
    for part, piece in zip(parts, pieces):  # the zeros are the pauses: no speech is silent
        assert piece.any() != isinstance(part, float) or piece.size == 0


def test_a_seeded_call_speaks_the_first_side_as_that_text_alone(voice):
    model = _model()
    try:
        whole = model.generate_audio(voice, "First side here. [pause:0.5] Second side.", seed=4, max_tokens=4)
        first = model.generate_audio(voice, "First side here.", seed=4, max_tokens=4)
    finally:
        model.close()
    np.testing.assert_array_equal(whole[: first.size], first)
    assert not whole[first.size : first.size + RATE // 2].any() and whole[first.size + RATE // 2 :].any()


def test_silence_comes_in_frame_sized_pieces_and_adjacent_pauses_join(voice):
    model = _model()
    try:
        pieces = [c.size for c in model.generate_audio_stream(voice, "[pause:0.3][pause:10ms]")]
        assert pieces == [FRAME, FRAME, FRAME, 7200 + 240 - 3 * FRAME]
        assert model.generate_audio(voice, "<speak> [pause:0] </speak>").size == 0
        for empty in ["", "  \n", "<speak> </speak>"]:
            with pytest.raises(TextError):
                model.generate_audio_stream(voice, empty)
    finally:
        model.close()


def test_markup_errors_are_raised_at_call_time_before_any_audio(voice):
    model = _model()
    try:
        for text, position in [("Hi [pause:abc] there", 3), ("Hi. [pause:11] there", 4), ("Hi <em>x</em>", 3)]:
            with pytest.raises(MarkupError) as e:
                model.generate_audio_stream(voice, text)  # not iterated: the call itself raises
            assert e.value.position == position and isinstance(e.value, ParameterError)
        with pytest.raises(ParameterError, match="markup must be True or False"):
            model.generate_audio_stream(voice, "Hi.", markup="no")
        assert model.generate_audio(voice, "Still usable.").size > 0  # nothing was left half-started
    finally:
        model.close()


def test_stop_ends_a_pause(voice):
    model = _model()
    try:
        stop = threading.Event()
        got = []
        for chunk in model.generate_audio_stream(voice, "[pause:10] Never spoken.", stop=stop):
            got.append(chunk)
            if len(got) == 2:
                stop.set()
        assert len(got) == 2 and not np.concatenate(got).any()
    finally:
        model.close()


def test_markup_false_speaks_the_brackets(voice):
    model = TTSModel.load_model(synthetic_model(SMALL)[1], temp=0.0, eos_threshold=float("inf"))
    try:
        text = "Hi [pause:abc] there <em>x</em>"
        audio = model.generate_audio(voice, text, markup=False)
        tokens = model._rt.tokenizer.encode(prepare_text_prompt(text, model.config.text).text)
        assert audio.size == FRAME * estimate_max_frames(len(tokens), model.config.mimi.frame_rate)
    finally:
        model.close()


# ---------------------------------------------------------------------- property: any text with any markers
_WORDS = st.lists(st.sampled_from(["hello", "sea", "Wind,", "blue.", "Why?", "42", "and"]), min_size=1, max_size=3)
_MARKERS = st.one_of(
    st.integers(0, 10_000).map(lambda ms: (f"[pause:{ms}ms]", ms / 1000)),
    st.integers(0, 10_000).map(lambda ms: (f'<break time="{ms / 1000}s"/>', ms / 1000)),
)
_BAD_MARKERS = st.sampled_from(["[pause:abc]", "[pause:12]", "<break/>", "<b>", "[pause:1"]).map(lambda m: (m, None))


@st.composite
def _parts(draw) -> list:
    """Words and markers; one time in four, a bad marker somewhere."""
    parts = draw(st.lists(st.one_of(_WORDS.map(" ".join), _MARKERS), min_size=1, max_size=5))
    if draw(st.integers(0, 3)) == 0:
        parts.insert(draw(st.integers(0, len(parts))), draw(_BAD_MARKERS))
    return parts


@settings(max_examples=20, deadline=None)
@given(parts=_parts(), seed=st.integers(0, 2**16))
def test_any_text_with_markers_is_its_pieces_and_pauses_or_the_documented_error(voice, parts, seed):
    text, first_bad = "", None
    expected_parts: list = []  # texts between markers joined, as the parser must split them
    for p in parts:
        text += " " if text else ""
        if isinstance(p, str):
            if expected_parts and isinstance(expected_parts[-1], str):
                expected_parts[-1] += " " + p
            else:
                expected_parts.append(p)
            text += p
            continue
        if p[1] is None and first_bad is None:
            first_bad = len(text)
        expected_parts.append(p[1])
        text += p[0]
    model = _model(seed)
    try:
        if first_bad is not None:
            with pytest.raises(MarkupError) as e:
                model.generate_audio_stream(voice, text, max_tokens=4)
            assert e.value.position == first_bad
            return
        audio = model.generate_audio(voice, text, max_tokens=4)
    finally:
        model.close()
    pieces = _spoken_separately(voice, expected_parts, seed, max_tokens=4)
    assert audio.size == sum(p.size for p in pieces)
    np.testing.assert_array_equal(audio, np.concatenate(pieces))


# ---------------------------------------------------------------------- pocket-speak
def _speak(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    model = str(synthetic_model(SMALL)[1])
    cmd = [sys.executable, "-m", "pocket_ggml.cli.speak", "--model", model, "--temp", "0", "--eos-threshold", "inf"]
    return subprocess.run([*cmd, *args], input=stdin, capture_output=True, timeout=300, check=False)


def test_cli_writes_the_pauses(tmp_path, voice_wav, voice):
    out = tmp_path / "p.wav"
    text = "Ready? [pause:0.5] Go!"
    r = _speak(["--voice", str(voice_wav), "--text", text, "-o", str(out), "-q"])
    assert r.returncode == 0, r.stderr
    audio, rate = sf.read(out, dtype="int16")
    model = TTSModel.load_model(synthetic_model(SMALL)[1], temp=0.0, eos_threshold=float("inf"))
    try:
        ready = model.generate_audio(voice, "Ready?").size
        expected = model.generate_audio(voice, text)
    finally:
        model.close()
    assert rate == RATE and audio.size == expected.size
    assert not audio[ready : ready + RATE // 2].any() and audio[:ready].any() and audio[ready + RATE // 2 :].any()


def test_cli_stream_lines_take_markup(voice_wav):
    r = _speak(["--voice", str(voice_wav), "--stream", "-q"], stdin=b"[pause:0.5]\nHi. [pause:100ms] There.\n")
    assert r.returncode == 0, r.stderr
    pcm = np.frombuffer(r.stdout, dtype="<i2")
    assert not pcm[: RATE // 2].any() and pcm[RATE // 2 :].any()
    assert (pcm.size - RATE // 2 - 2400) % FRAME == 0


@pytest.mark.parametrize(
    "text,position", [("Hi [pause:abc] there", 3), ("Hi [pause:20]", 3), ("<speak>Hi <em>x</em></speak>", 10)]
)
def test_cli_bad_markup_exits_2_with_one_line_and_writes_nothing(tmp_path, voice_wav, text, position):
    out = tmp_path / "x.wav"
    r = _speak(["--voice", str(voice_wav), "--text", text, "-o", str(out)])
    lines = [ln for ln in r.stderr.decode().splitlines() if ln.strip() and "synthetic weights" not in ln]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("pocket-speak: error:") and f"at position {position}" in lines[0]
    assert not out.exists()


def test_cli_no_markup_speaks_brackets_literally(tmp_path, voice_wav):
    out = tmp_path / "x.wav"
    r = _speak(["--voice", str(voice_wav), "--text", "Hi [pause:abc] there <em>x</em>", "--no-markup", "-o", str(out)])
    assert r.returncode == 0, r.stderr
    audio, _ = sf.read(out, dtype="int16")
    assert audio.size > 0 and audio.size % FRAME == 0
