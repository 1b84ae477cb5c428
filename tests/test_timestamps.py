"""Word timestamps: each piece against pocket-tts-timestamped 1.4.0 in this process (head table, word
units and token mapping, head reduction, voicing, the word state machine), the FlowLM step's
attention output, and the API's event stream (order, clock, chunks). End-to-end parity with the fork
is tests/test_timestamp_parity.py."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import require_timestamped_reference, shared_path
from _timestamp_runs import PEAK_LOGIT, shaped_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocket_ggml import TimestampedAudio, TimestampsUnavailable, TTSModel, WordEnd, WordStart
from pocket_ggml.format.config import load_released_config
from pocket_ggml.runtime.flow_lm import TextAttention
from pocket_ggml.runtime.generate import estimate_max_frames
from pocket_ggml.runtime.model import PocketRuntime
from pocket_ggml.runtime.text import Tokenizer, prepare_text_prompt, split_into_best_sentences
from pocket_ggml.runtime.timestamps import (
    TIMESTAMP_HEADS,
    WordAlignment,
    is_voiced,
    timestamp_chunks,
    timestamp_heads,
    unit_scores,
)

TEXTS = [
    "Hello world, this is a test of the pocket runtime.",
    "Don't stop - it's well-known, isn't it? Yes: 3.5 times!",
    "Héllo wörld, naïve café; Æsir ﬁne ｗｉｄｅ text",
    "\u201cQuoted\u201d text\u2026 and (brackets) [here] \u2014 done",
    "First sentence here. Second one follows! And a third? Fourth, with a clause; and more words.",
]


@pytest.fixture(scope="module")
def fork():
    require_timestamped_reference()
    import pocket_tts_timestamped.timestamps as fork

    return fork


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    return Tokenizer(tokenizer_path.read_bytes())


def test_head_table_is_the_forks(fork):
    import yaml
    from pocket_tts_timestamped.utils.config import CONFIGS_DIR

    table = {}
    for path in sorted(CONFIGS_DIR.glob("*.yaml")):
        heads = yaml.safe_load(path.read_text(encoding="utf-8")).get("timestamp_heads")
        if heads is not None:
            table[path.stem] = tuple((h["layer"], h["head"]) for h in heads)
    assert table == TIMESTAMP_HEADS


def test_a_config_without_heads_is_a_typed_error():
    with pytest.raises(TimestampsUnavailable, match="english_2026-10"):
        timestamp_heads("english_2026-10")


def _prepared(tokenizer, text: str, max_tokens: int) -> list[str]:
    rules = load_released_config("english").text
    return [prepare_text_prompt(c, rules).text for c in split_into_best_sentences(tokenizer, text, rules, max_tokens)]


@pytest.mark.parametrize("max_tokens", [50, 8])
@pytest.mark.parametrize("text", TEXTS)
def test_units_and_token_mapping_are_the_forks(fork, tokenizer, tokenizer_path, text, max_tokens):
    import sentencepiece
    from pocket_tts_timestamped.timestamps.text import _iter_timestamp_text_chunks

    prepared = _prepared(tokenizer, text, max_tokens)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_path))
    theirs = list(_iter_timestamp_text_chunks(text, prepared, sp, best_effort=True))
    ours = timestamp_chunks(text, prepared, lambda t: tokenizer.pieces(t)[1:])
    assert len(ours) == len(theirs) == len(prepared)
    for o, t in zip(ours, theirs):
        assert o.text == t.text
        assert [(u.text, u.begin, u.end, u.synthetic) for u in o.units] == [
            (u.text, u.chunk_begin, u.chunk_end, u.synthetic) for u in t.units
        ]
        assert [u.word and (u.word.text, u.word.word_index, u.word.begin, u.word.end) for u in o.units] == [
            u.word and (u.word.text, u.word.word_index, u.word.begin, u.word.end) for u in t.units
        ]
        np.testing.assert_array_equal(o.token_to_unit, t.token_to_unit.numpy())
        assert tokenizer.pieces(o.text)[0] == t.prepared_tokens[0].tolist()


def test_head_reduction_is_the_forks(fork):
    import torch

    rng = np.random.default_rng(0)
    heads = ((3, 8), (2, 0), (3, 1))
    n_heads, d, n_tokens, n_units = 16, 64, 11, 6
    token_to_unit = rng.random((n_tokens, n_units)).astype(np.float32)
    token_to_unit /= token_to_unit.sum(axis=1, keepdims=True)
    query = rng.standard_normal((1, n_heads, 1, d)).astype(np.float32) * 3
    keys = rng.standard_normal((1, n_heads, 20 + n_tokens, d)).astype(np.float32)
    capture = fork.SelectedAttentionCapture(heads, 20, 20 + n_tokens, torch.from_numpy(token_to_unit))
    capture.begin_frame()
    for layer in (2, 3):  # the order the model runs its layers
        capture.capture_attention(layer, torch.from_numpy(query), torch.from_numpy(keys))
    theirs = capture.finish_frame().numpy()
    scores = np.stack([keys[0, h, 20:] @ query[0, h, 0] for _, h in heads])
    np.testing.assert_allclose(unit_scores(scores, heads, d, token_to_unit), theirs, rtol=1e-5, atol=1e-7)


def test_voicing_is_the_forks(fork):
    import torch

    rng = np.random.default_rng(1)
    for rms in (0.0, 5e-4, 0.99e-3, 1.01e-3, 2e-3, 0.3):
        audio = (rng.standard_normal(1920) * rms).astype(np.float32)
        assert is_voiced(audio) == fork.is_voiced(torch.from_numpy(audio)), rms
    assert not is_voiced(np.zeros(0, np.float32))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_word_state_machine_is_the_forks(fork, tokenizer, data):
    """Any sequence of unit scores (ties and sub-threshold values included) and voiced flags."""
    import torch

    text = data.draw(st.sampled_from(TEXTS))
    ours_chunk = timestamp_chunks(text, _prepared(tokenizer, text, 50), lambda t: tokenizer.pieces(t)[1:])[0]
    theirs_chunk = fork.build_timestamp_text_chunks(text, [ours_chunk.text], tokenizer_sp())[0]
    n_units = len(ours_chunk.units)
    levels = st.sampled_from([0.0, 0.0005, 0.001, 0.002, 0.1, 0.25, 0.5, 0.9])
    frames = data.draw(
        st.lists(st.tuples(st.lists(levels, min_size=n_units, max_size=n_units), st.booleans()), max_size=40)
    )
    ours, theirs = WordAlignment(ours_chunk.units), fork.WordAlignment(theirs_chunk.units)
    our_events, their_events = [], []
    for i, (scores, voiced) in enumerate(frames):
        s = np.asarray(scores, np.float32)
        our_events += ours.process_frame(s, voiced, i * 0.08)
        their_events += theirs.process_frame(torch.from_numpy(s), voiced, i * 0.08)
    our_events += ours.finish(len(frames) * 0.08)
    their_events += theirs.finish(len(frames) * 0.08)
    as_tuples = [(type(e).__name__, *(getattr(e, f) for f in e.__slots__)) for e in our_events]
    assert as_tuples == [(type(e).__name__, *(getattr(e, f) for f in e.__slots__)) for e in their_events]


def tokenizer_sp():
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(shared_path("assets", "tokenizer.model")))


# ------------------------------------------------------------------------------ the FlowLM step
SHAPED = "english_2m_2026-10"
LAG = 15.75


def test_step_attention_is_the_shaped_pattern_and_changes_nothing_else(voice_wav):
    """The shaped heads' q.k is known in closed form: sum_i PEAK_LOGIT cos(theta_i (distance - LAG)).
    The tapped rows must be those values at those heads and slots; the step's outputs stay bit for
    bit those of a step without the tap."""
    _, gguf = shaped_model(SHAPED, LAG)
    rt = PocketRuntime(gguf)
    try:
        cfg, heads = rt.config.flow_lm, timestamp_heads(SHAPED)
        voice = rt.voice_state(np.random.default_rng(2).standard_normal((40, rt.config.mimi.speaker_dim)).astype("f4"))
        tokens, _ = rt.tokens("Hello world, this is a test of the pocket runtime.")
        flm = rt.flow_lm
        theta = cfg.max_period ** (-2.0 * np.arange(cfg.head_dim // 2) / cfg.head_dim)
        runs = []
        for attention_on in (False, True):
            flm.restore(voice, extra_rows=len(tokens) + 5)
            start = flm.offset
            flm.text_prompt(tokens)
            attention = TextAttention(heads, (start, flm.offset)) if attention_on else None
            latent, outs = None, []
            for _ in range(5):
                position = flm.offset
                out = flm.step(latent, attention=attention)
                outs.append(out)
                latent = out.latent
                if attention_on:
                    distance = position - np.arange(start, start + len(tokens))
                    expected = PEAK_LOGIT * np.cos(theta[:, None] * (distance[None, :] - LAG)).sum(axis=0)
                    assert out.text_scores.shape == (len(heads), len(tokens))
                    np.testing.assert_allclose(out.text_scores, np.tile(expected, (len(heads), 1)), atol=2e-3)
                else:
                    assert out.text_scores is None
            runs.append(outs)
        for plain, tapped in zip(*runs):
            np.testing.assert_array_equal(plain.latent, tapped.latent)
            assert plain.eos_logit == tapped.eos_logit
    finally:
        rt.close()


# ------------------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def shaped():
    return TTSModel.load_model(shaped_model(SHAPED, LAG)[1], temp=0.3, eos_threshold=float("inf"))


@pytest.fixture(scope="module")
def shaped_voice(shaped, voice_wav):
    return shaped.get_state_for_audio_prompt(voice_wav)


def _check_stream(items: list, sample_rate: int) -> tuple[np.ndarray, list]:
    """Audio of a timestamped stream and its events; each event's time is the sample clock of the
    audio after it (a start) or at it (an end), times never go back and stay inside the audio."""
    clock, events, last = 0, [], 0.0
    open_words: dict[int, float] = {}
    for item in items:
        if isinstance(item, np.ndarray):
            clock += len(item)
            continue
        events.append(item)
        if isinstance(item, WordStart):
            assert item.start_time == clock / sample_rate and item.word_index not in open_words
            open_words[item.word_index] = item.start_time
        else:
            assert open_words.pop(item.word_index) == item.start_time <= item.end_time == clock / sample_rate
        assert item.start_time >= last and 0 <= item.start_time
        last = item.start_time
    assert not open_words
    audio = np.concatenate([i for i in items if isinstance(i, np.ndarray)])
    assert all(e.end_time <= len(audio) / sample_rate for e in events if isinstance(e, WordEnd))
    return audio, events


def test_stream_with_timestamps_has_the_same_audio_and_times_on_its_clock(shaped, shaped_voice):
    text = "Hello world, this is a test of the pocket runtime."
    plain = list(shaped.generate_audio_stream(shaped_voice, text, seed=3))
    items = list(shaped.generate_audio_stream(shaped_voice, text, seed=3, timestamps=True))
    audio, events = _check_stream(items, shaped.sample_rate)
    np.testing.assert_array_equal(audio, np.concatenate(plain))
    ended = [e.word for e in events if isinstance(e, WordEnd)]
    assert len(ended) >= 8 and ended == sorted(ended, key=text.index)


def test_times_are_absolute_across_sentence_chunks(shaped, shaped_voice):
    """With EOS off, each chunk lasts the reference's frame cap for its tokens: the words of the
    second chunk start after the first chunk's audio, numbered on from the first chunk's."""
    text = "Hello world, this is a test. Of the pocket runtime, which speaks."
    rt = shaped._rt
    chunks = split_into_best_sentences(rt.tokenizer, text, rt.config.text, 8)
    assert len(chunks) >= 2
    first_words = len(chunks[0].split())
    first_end = estimate_max_frames(len(rt.tokens(chunks[0])[0]), rt.config.mimi.frame_rate) * rt.config.mimi.frame_size
    items = list(shaped.generate_audio_stream(shaped_voice, text, seed=4, timestamps=True, max_tokens=8))
    _, events = _check_stream(items, shaped.sample_rate)
    later = [e for e in events if isinstance(e, WordStart) and e.word_index >= first_words]
    assert later and all(e.start_time >= first_end / shaped.sample_rate for e in later)
    assert [e.word_index for e in events if isinstance(e, WordStart)] == sorted({e.word_index for e in events})


def test_with_timestamps_returns_the_audio_and_the_ended_words(shaped, shaped_voice):
    text = "Hello world, this is a test."
    result = shaped.generate_audio_with_timestamps(shaped_voice, text, seed=5)
    assert isinstance(result, TimestampedAudio)
    audio, words = result
    np.testing.assert_array_equal(audio, shaped.generate_audio(shaped_voice, text, seed=5))
    assert [w.word for w in words] == ["Hello", "world", "this", "is", "a", "test"][: len(words)]
    assert len(words) >= 4
    assert all(0 <= w.start_time <= w.end_time <= len(audio) / shaped.sample_rate for w in words)


def test_stop_closes_the_open_word(shaped, shaped_voice):
    import threading

    stop = threading.Event()
    items = []
    text = "Hello world, this is a test."
    for item in shaped.generate_audio_stream(shaped_voice, text, seed=6, timestamps=True, stop=stop):
        items.append(item)
        if sum(isinstance(i, np.ndarray) for i in items) == 4:
            stop.set()
    audio, events = _check_stream(items, shaped.sample_rate)
    assert len(audio) <= 5 * 1920
    assert isinstance(events[-1], WordEnd) and events[-1].end_time == len(audio) / shaped.sample_rate


def test_pauses_move_later_words_by_their_length_and_are_not_words(shaped, shaped_voice):
    """Silence counts on the stream's clock like audio; word indices count the spoken words only."""
    before, after = "Hello world, this is a test.", "Of the pocket runtime."
    first = shaped.generate_audio(shaped_voice, before, seed=8)
    items = list(shaped.generate_audio_stream(shaped_voice, f"{before} [pause:1.5] {after}", seed=8, timestamps=True))
    audio, events = _check_stream(items, shaped.sample_rate)
    pause = round(1.5 * shaped.sample_rate)
    np.testing.assert_array_equal(audio[: len(first)], first)
    assert not audio[len(first) : len(first) + pause].any()
    later = [e for e in events if isinstance(e, WordStart) and e.start_time >= len(first) / shaped.sample_rate]
    assert later and all(e.start_time >= (len(first) + pause) / shaped.sample_rate for e in later)
    assert {e.word for e in later} <= set(after.rstrip(".").split())
    assert all(e.word_index >= len(before.split()) for e in later)


_WORDS = st.sampled_from(["hello", "world", "it's", "well-known", "3.5", "café", "a", "test", "Pocket"])
_PUNCT = st.sampled_from(["", "", ",", ".", "?", "!", ";", " -", " [pause:0.2]", ' <break time="40ms"/>'])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.tuples(_WORDS, _PUNCT), min_size=1, max_size=6), max_tokens=st.sampled_from([6, 50]))
def test_any_text_gives_monotonic_times_inside_the_audio(shaped, shaped_voice, words, max_tokens):
    text = " ".join(w + p for w, p in words)
    items = list(shaped.generate_audio_stream(shaped_voice, text, seed=7, timestamps=True, max_tokens=max_tokens))
    _check_stream(items, shaped.sample_rate)


# ------------------------------------------------------------------------------------- the CLI
FIXED = ["--temp", "0", "--eos-threshold", "inf", "--max-tokens", "50"]
CLI_TEXT = "Hello world, this is a test. Of the pocket runtime!"


def _speak(*args: str):
    from click.testing import CliRunner

    from pocket_ggml.cli.speak import main as speak

    return CliRunner().invoke(speak, ["--model", str(shaped_model(SHAPED, LAG)[1]), *args, *FIXED])


def test_cli_writes_srt_vtt_and_json_of_the_apis_words(tmp_path, voice_wav):
    import json
    import re

    model = TTSModel.load_model(shaped_model(SHAPED, LAG)[1], temp=0.0, eos_threshold=float("inf"))
    _, words = model.generate_audio_with_timestamps(model.get_state_for_audio_prompt(voice_wav), CLI_TEXT)
    assert len(words) >= 8
    for ext in ("srt", "vtt", "json"):
        out = tmp_path / f"words.{ext}"
        r = _speak(
            "--voice", str(voice_wav), "--text", CLI_TEXT, "-o", str(tmp_path / "a.wav"), "--timestamps", str(out)
        )
        assert r.exit_code == 0, r.output
        body = out.read_text(encoding="utf-8")
        if ext == "json":
            got = json.loads(body)["words"]
            assert [(w["word"], w["word_index"], w["start_time"], w["end_time"]) for w in got] == [
                (w.word, w.word_index, w.start_time, w.end_time) for w in words
            ]
            continue
        sep = "," if ext == "srt" else r"\."
        stamp = rf"(\d\d):(\d\d):(\d\d){sep}(\d\d\d)"
        times = [
            [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in pair]
            for pair in (re.findall(stamp, line) for line in body.splitlines() if "-->" in line)
        ]
        assert body.startswith("WEBVTT\n\n" if ext == "vtt" else "1\n")
        assert times and all(a <= b for a, b in times) and all(p[1] <= q[0] for p, q in zip(times, times[1:]))
        assert "Hello world, this is a test." in body  # punctuation kept, a cue ends at the sentence end
        assert abs(times[0][0] - words[0].start_time) < 1e-3 and abs(times[-1][1] - words[-1].end_time) < 1e-3


def test_cli_refuses_other_timestamp_files_before_generating(tmp_path, voice_wav):
    for bad in (tmp_path / "words.txt", tmp_path / "missing" / "words.srt"):
        r = _speak("--voice", str(voice_wav), "--text", "Hi.", "-o", str(tmp_path / "a.wav"), "--timestamps", str(bad))
        assert r.exit_code == 2 and "pocket-speak: error:" in r.output and not bad.exists()
    assert not (tmp_path / "a.wav").exists()


def test_cli_stream_echoes_events_as_json_lines_on_stderr_over_stdin_lines(tmp_path, voice_wav):
    import json
    import subprocess
    import sys

    out = tmp_path / "words.json"
    cmd = [sys.executable, "-m", "pocket_ggml.cli.speak", "--model", str(shaped_model(SHAPED, LAG)[1])]
    cmd += ["--voice", str(voice_wav), "--stream", "--timestamps", str(out), "-q", *FIXED]
    lines = "Hello world, this is a test.\nOf the pocket runtime.\n"
    r = subprocess.run(cmd, input=lines.encode(), capture_output=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    events = [json.loads(line) for line in r.stderr.decode().splitlines()]
    duration = len(r.stdout) / 2 / 24000
    assert {e["event"] for e in events} == {"word_start", "word_end"}
    at = [e.get("end_time", e["start_time"]) for e in events]  # when each event happened
    assert at == sorted(at) and 0 <= at[0] and at[-1] <= duration
    indices = [e["word_index"] for e in events if e["event"] == "word_end"]
    assert indices == sorted(indices) and max(indices) >= 7  # the second line's words are numbered on
    second = [e for e in events if e["word_index"] >= 6]
    assert second and min(e["start_time"] for e in second) >= 8 * 0.08
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert [w["word_index"] for w in saved["words"]] == indices and saved["duration"] == duration
