"""Text that arrives in pieces: sentences found as the one-shot splitter finds them, prompted while
they are written, and spoken exactly as `generate_audio_stream` speaks each sentence."""

from __future__ import annotations

import numpy as np
import pytest
from _ggml_parity import rel_err
from _parity_runs import synthetic_model

from pocket_ggml import ParameterError, TTSModel
from pocket_ggml.format.config import TextRules
from pocket_ggml.models import synthetic_model as english_model
from pocket_ggml.runtime.model import PocketRuntime
from pocket_ggml.runtime.prefill import IncrementalPrompt
from pocket_ggml.runtime.text import (
    SentencePieces,
    SentenceStream,
    Tokenizer,
    _boundaries,
    _segments,
    prepare_text_prompt,
    stable_prompt_tokens,
)
from pocket_ggml.voices.state import clone_voice

SMALL = "english_2m_2026-10"
TEXT = (
    "Hello there, my friend. The price went from 3.5 to 4. 5 dollars is a lot! Is it?! "
    'He said "yes." Then (it rained all day.) The long day, with all its noise and its work, came to a quiet '
    "end... ok"
)
# Audio made from a prompt in pieces differs from the one-shot prompt's by float rounding only: F32
# rows multiplied in other groups take other kernels (Q4_K_M ones quantize each row alike, so its
# audio comes out bit-identical).
AUDIO_TOL = 1e-6


def _words(text: str) -> list[str]:
    return [w + " " for w in text.split(" ")]


def _llm_pieces(text: str) -> list[str]:
    """Pieces as a language model streams them: a leading space, words cut in two."""
    pieces = []
    for i, w in enumerate(text.split(" ")):
        lead = "" if i == 0 else " "
        pieces += [lead + w[:2], w[2:]] if len(w) > 3 else [lead + w]
    return [p for p in pieces if p]


def _sentences(pieces: list[str], tok: Tokenizer) -> list[str]:
    stream = SentenceStream(tok, TextRules())
    out = [s for p in pieces for s in stream.feed(p)]
    rest = stream.close()
    return out + ([rest] if rest else [])


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    return Tokenizer(tokenizer_path.read_bytes())


@pytest.mark.parametrize("feed", [_words, _llm_pieces, list])
def test_sentences_are_the_one_shot_splitters(tokenizer, feed):
    """The sentence segments `split_into_best_sentences` finds in the whole text (before it groups
    them into chunks), however the text is cut into pieces."""
    prepared = prepare_text_prompt(TEXT, TextRules()).text
    tokens = tokenizer.encode(prepared)
    marks = tokenizer.encode(".!...?")[1:]
    expected = [s.strip() for _, s in _segments(tokens, _boundaries(tokens, marks, tokenizer), tokenizer)]
    found = _sentences(feed(TEXT), tokenizer)
    assert len(found) == 6
    # the one-shot splitter sees the prepared text: its last sentence has the added period
    assert found[:-1] == expected[:-1] and found[-1] + "." == expected[-1]


def test_a_period_after_a_digit_waits_for_the_next_word(tokenizer):
    stream = SentenceStream(tokenizer, TextRules())
    assert stream.feed("It costs 3. ") == []
    assert stream.feed("5 dollars. And ") == ["It costs 3. 5 dollars."]
    assert stream.feed("then 4. ") == []
    assert stream.feed("Done") == ["And then 4."]
    assert stream.close() == "Done"


@pytest.mark.parametrize("feed", [_words, _llm_pieces, list])
def test_sentence_pieces_cut_where_the_stream_ends_sentences(tokenizer, feed):
    """One sentence per speaker call: each sentence's texts joined are `SentenceStream`'s sentence, a
    `SentenceStream` fed them alone finds no earlier end, and a sentence is handed out as far as its
    complete words while it is written."""
    pieces = feed(TEXT)
    cutter = SentencePieces(tokenizer, TextRules())
    sentences, current = [], []
    for piece in pieces:
        for text, ends in cutter.feed(piece):
            assert ends or text[-1].isspace(), "only complete words before a sentence ends"
            current.append(text)
            if ends:
                sentences.append(current)
                current = []
    sentences.append([*current, cutter.close()])
    assert ["".join(texts).strip() for texts in sentences] == _sentences(pieces, tokenizer)
    for texts in sentences:
        alone = SentenceStream(tokenizer, TextRules())
        assert [s for t in texts for s in alone.feed(t)] == [] and alone.close() == "".join(texts).strip()


@pytest.mark.parametrize("pad", [False, True])
def test_stable_tokens_begin_every_continuation(tokenizer, pad):
    """What is prompted early is the start of the finished sentence's tokens, for any ending; with
    the padding of short texts, nothing is prompted before a fifth word has begun."""
    rules = TextRules(pad_with_spaces_for_short_inputs=pad)
    sentence = "the weather today, my friend, is quite nice and warm for the season"
    words = sentence.split(" ")
    for n in range(1, len(words)):
        partial = " ".join(words[:n]) + " "
        stable = stable_prompt_tokens(tokenizer, partial, rules, 50)
        if pad and n < 4:
            assert stable == []
        else:
            assert len(stable) >= n
        for ending in ("x", "Mr. Smith.", ", and then?", "5 6 7 8 9 10 11 12"):
            final = tokenizer.encode(prepare_text_prompt(partial + ending, rules).text)
            assert final[: len(stable)] == stable, (partial, ending)


def test_a_sentence_is_prompted_while_it_is_written(voice_wav):
    rt = PocketRuntime(synthetic_model(SMALL)[1])
    voice = clone_voice(rt, *_read(voice_wav)).snapshot
    prompt = IncrementalPrompt(rt, voice, 50)
    sentence = "The weather today is quite nice and warm for the season."
    words = sentence.split(" ")
    for n in range(1, len(words)):
        prompt.update(" ".join(words[:n]) + " ")
    ((tokens, _),) = prompt.chunks(sentence)
    assert prompt.prompted == tokens[: len(prompt.prompted)]
    assert rt.flow_lm.offset == voice.n_rows + len(prompt.prompted)
    assert len(tokens) - len(prompt.prompted) <= 3  # the last word and the period
    rt.close()


def _read(path):
    from pocket_ggml.voices.audio import read_audio

    return read_audio(path)


@pytest.fixture(scope="module", params=["F32", "Q4_K_M"])
def gguf(request):
    return synthetic_model(SMALL, request.param)[1]


def _one_shot_sentences(gguf, voice, sentences: list[str], **kwargs) -> list[np.ndarray]:
    """Each sentence spoken alone by `generate_audio_stream`, one after the other on one model (seed 5)."""
    model = TTSModel.load_model(gguf, seed=5)
    return [c for s in sentences for c in model.generate_audio_stream(voice, s, **kwargs)]


def _check_streamed(got: list[np.ndarray], expected: list[np.ndarray], gguf, f32_expected) -> None:
    """At F32, chunk for chunk within float rounding. A quantized mix's audio depends on how its prompt
    was cut into calls (`test_quantized_streamed_text_is_as_close_to_f32_as_one_shot`; on an AVX2-only
    build even english_2m's mostly-Q8_0 mix moves), so there: as close to F32's one-shot audio as the
    one-shot audio is, 3 dB of slack (`f32_expected()` gives F32's)."""
    if gguf.stem.endswith("F32"):
        assert len(got) == len(expected) > 0
        for i, (a, b) in enumerate(zip(got, expected)):
            assert rel_err(a, b) <= AUDIO_TOL if b.any() else not a.any(), f"chunk {i}"
        return
    f32 = np.concatenate(f32_expected())
    streamed, one_shot = np.concatenate(got), np.concatenate(expected)
    n = min(len(f32), len(streamed), len(one_shot))
    assert n > 0
    assert _snr_db(f32[:n], streamed[:n]) >= _snr_db(f32[:n], one_shot[:n]) - 3.0


@pytest.mark.parametrize("max_tokens", [50, 12])
def test_streamed_text_sounds_as_each_sentence_spoken_alone(gguf, voice_wav, max_tokens):
    """max_tokens 12 splits the long sentence into clause chunks: they too are the one-shot path's."""
    model = TTSModel.load_model(gguf)
    voice = model.get_state_for_audio_prompt(voice_wav)
    for feed in (_words, _llm_pieces, list) if max_tokens == 50 else (_words,):
        pieces = feed(TEXT)
        sentences = _sentences(pieces, model._rt.tokenizer)
        expected = _one_shot_sentences(gguf, voice, sentences, max_tokens=max_tokens)
        streamed = TTSModel.load_model(gguf, seed=5)
        got = list(streamed.generate_audio_for_text_stream(voice, iter(pieces), max_tokens=max_tokens))
        _check_streamed(
            got,
            expected,
            gguf,
            lambda sentences=sentences: _one_shot_sentences(
                synthetic_model(SMALL)[1], voice, sentences, max_tokens=max_tokens
            ),
        )


def test_bad_pieces_are_parameter_errors(gguf, voice_wav):
    model = TTSModel.load_model(gguf)
    voice = model.get_state_for_audio_prompt(voice_wav)
    with pytest.raises(ParameterError):
        list(model.generate_audio_for_text_stream(voice, ["Hello ", 3]))
    with pytest.raises(ParameterError):
        list(model.generate_audio_for_text_stream(voice, ["Hello ", None]))
    with pytest.raises(ParameterError):
        list(model.generate_audio_for_text_stream(voice, ["Hello."], max_tokens=0))
    with pytest.raises(ParameterError):
        model.generate_audio_for_text_stream(voice, 42)
    assert list(model.generate_audio_for_text_stream(voice, [" ", "\n"])) == []


def test_streamed_text_plays_each_sentences_pauses(gguf, voice_wav):
    """Markup belongs to the sentence it is in: fed word by word, `A. [pause:0.5] B` sounds as each
    sentence spoken alone by `generate_audio_stream`, its silence included, sample for sample in length."""
    text = "Hello there, my friend. [pause:0.5] The price went up. Done [pause:120ms] now."
    one_shot = TTSModel.load_model(gguf, seed=5)
    voice = one_shot.get_state_for_audio_prompt(voice_wav)
    pieces = _words(text)
    sentences = _sentences(pieces, one_shot._rt.tokenizer)
    assert len(sentences) == 3 and sentences[1].startswith("[pause:0.5]")
    expected = _one_shot_sentences(gguf, voice, sentences)
    streamed = TTSModel.load_model(gguf, seed=5)
    got = list(streamed.generate_audio_for_text_stream(voice, iter(pieces)))
    assert [len(c) for c in got] == [len(c) for c in expected]
    silent = [i for i, c in enumerate(expected) if not c.any()]
    assert sum(len(expected[i]) for i in silent) == round(0.5 * 24000) + round(0.12 * 24000)
    assert all(not got[i].any() for i in silent)
    _check_streamed(got, expected, gguf, lambda: _one_shot_sentences(synthetic_model(SMALL)[1], voice, sentences))
    literal = TTSModel.load_model(gguf, seed=5)
    spoken = list(literal.generate_audio_for_text_stream(voice, iter(pieces), markup=False))
    assert all(c.any() for c in spoken)


def _snr_db(signal: np.ndarray, other: np.ndarray) -> float:
    assert len(signal) == len(other)
    return float(10 * np.log10(np.sum(signal**2) / np.sum((signal - other) ** 2)))


@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M"])
def test_quantized_streamed_text_is_as_close_to_f32_as_one_shot(voice_wav, mix):
    """english's quantized matrices: a float rounding that differs (a prompt in pieces is not
    multiplied in the same groups of rows as a whole one) can move an activation across a rounding
    step of ggml's 8-bit activation quantization, so the streamed audio is not the one-shot's sample
    for sample: their difference is of the quantization error's order. The streamed audio must be as
    close to F32's as the one-shot audio is (3 dB of slack)."""
    text = "The harbour lights came on one by one as the fishing boats returned."
    audio = {}
    for name in ("F32", mix):
        model = TTSModel.load_model(english_model(name))
        voice = model.get_state_for_audio_prompt(voice_wav)
        one_shot = np.concatenate(list(model.generate_audio_stream(voice, text, seed=7)))
        streamed = np.concatenate(list(model.generate_audio_for_text_stream(voice, _words(text), seed=7)))
        audio[name] = one_shot, streamed
        model.close()
    f32, (one_shot, streamed) = audio["F32"][0], audio[mix]
    assert rel_err(audio["F32"][1], f32) <= AUDIO_TOL
    assert _snr_db(f32, streamed) >= _snr_db(f32, one_shot) - 3.0
