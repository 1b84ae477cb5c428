"""`first_chunk_tokens`: the first chunk cut short for first audio, the rest as the chunking says."""

from __future__ import annotations

import numpy as np
import pytest
from _parity_runs import synthetic_model

from pocket_ggml import ParameterError, TTSModel
from pocket_ggml.format.config import TextRules
from pocket_ggml.runtime.text import Tokenizer, prepare_text_prompt, shorten_first_chunk, split_into_best_sentences

TEXT = "Well, the weather today is quite nice and warm for the season, and we should go out. Then we rest."


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    return Tokenizer(tokenizer_path.read_bytes())


def _n_tokens(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(prepare_text_prompt(text, TextRules()).text))


@pytest.mark.parametrize("budget", [1, 3, 8, 12, 16, 40])
def test_the_first_chunk_is_cut_within_the_budget_and_nothing_is_lost(tokenizer, budget):
    rules = TextRules()
    chunks = split_into_best_sentences(tokenizer, TEXT, rules)
    out = shorten_first_chunk(tokenizer, chunks, rules, budget)
    assert " ".join(out).split() == " ".join(chunks).split()
    if _n_tokens(tokenizer, chunks[0]) <= budget:
        assert out == chunks
        return
    assert out[2:] == chunks[1:] and len(out) == len(chunks) + 1
    head = out[0]
    assert _n_tokens(tokenizer, head) <= budget or len(head.split()) == 1
    # the next word would not have fitted, unless the head stops at a clause end
    longer = " ".join(chunks[0].split()[: len(head.split()) + 1])
    assert head.endswith(",") or _n_tokens(tokenizer, longer) > budget


def test_a_clause_end_is_preferred_to_a_word_boundary(tokenizer):
    rules = TextRules()
    head = shorten_first_chunk(tokenizer, [TEXT], rules, 16)[0]
    assert head == "Well, the weather today is quite nice and warm for the season,"
    # "Well," alone keeps less than half of what fits in 8 tokens: the words that fit instead
    assert shorten_first_chunk(tokenizer, [TEXT], rules, 8)[0] == "Well, the weather today is"


def test_audio_is_the_chunking_it_produces(voice_wav):
    """With the option, the audio is that of each chunk it makes, spoken in turn (same noise)."""
    gguf = synthetic_model("english_2m_2026-10", "Q4_K_M")[1]
    model = TTSModel.load_model(gguf, seed=9)
    voice = model.get_state_for_audio_prompt(voice_wav)
    rt = model._rt
    chunks = shorten_first_chunk(
        rt.tokenizer, split_into_best_sentences(rt.tokenizer, TEXT, rt.config.text), rt.config.text, 8
    )
    assert len(chunks) == 2  # both sentences were one chunk
    got = list(model.generate_audio_stream(voice, TEXT, first_chunk_tokens=8))
    alone = TTSModel.load_model(gguf, seed=9)
    expected = [c for chunk in chunks for c in alone.generate_audio_stream(voice, chunk)]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    for bad in (0, True, 2.5):
        with pytest.raises(ParameterError):
            model.generate_audio_stream(voice, TEXT, first_chunk_tokens=bad)
