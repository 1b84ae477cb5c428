"""Text preparation and chunking equal the reference's, on the real tokenizer."""

from __future__ import annotations

import pytest
from _reference import require_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from pocket_ggml.errors import TextError
from pocket_ggml.format.config import TextRules, load_released_config
from pocket_ggml.runtime.text import Tokenizer, prepare_text_prompt, split_into_best_sentences

SAMPLES = [
    "hello world",
    "Hello world. I am Kyutai's Pocket TTS. I'm fast enough to run on small CPUs. I hope you'll like me.",
    "It costs 3.50 dollars, or 4.25 euros; that's all!",
    '"Hi?", she said (quietly) \u2014 and left\u2026',
    "one, two, three, four, five, six, seven, eight, nine, ten, " * 8,
    "a",
    "What?!  Really...  yes:",
    "\u2018quoted\u2019 text \u2013 with dashes",
    "Numbers: 1, 2, 3. End",
]
RULES = {
    name: load_released_config(name).text for name in ("english", "dutch", "english_2026-01", "english_2m_2026-10")
}


@pytest.fixture(scope="module")
def tokenizers(tokenizer_path):
    require_reference()
    from pocket_tts.modules.text_conditioner import SentencePieceTokenizer

    return Tokenizer(tokenizer_path.read_bytes()), SentencePieceTokenizer(4000, str(tokenizer_path))


def _reference_chunks(ref_tok, text: str, rules: TextRules, max_tokens: int) -> list[str]:
    from pocket_tts.models.text_chunking import split_into_best_sentences as ref_split

    return ref_split(
        ref_tok,
        text,
        max_tokens,
        rules.pad_with_spaces_for_short_inputs,
        rules.remove_semicolons,
        rules.append_terminal_punctuation,
        rules.capitalize_first_letter,
        dict(rules.replace_characters),
    )


@pytest.mark.parametrize("rules_name", list(RULES))
@pytest.mark.parametrize("text", SAMPLES)
def test_prepare_and_chunk_match_reference(tokenizers, rules_name, text):
    from pocket_tts.models.text_chunking import prepare_text_prompt as ref_prepare

    ours, ref_tok = tokenizers
    rules = RULES[rules_name]
    p = prepare_text_prompt(text, rules)
    assert (p.text, p.frames_after_eos_guess) == ref_prepare(
        text,
        rules.pad_with_spaces_for_short_inputs,
        rules.remove_semicolons,
        rules.append_terminal_punctuation,
        rules.capitalize_first_letter,
        dict(rules.replace_characters),
    )
    for max_tokens in (8, 50):
        assert split_into_best_sentences(ours, text, rules, max_tokens) == _reference_chunks(
            ref_tok, text, rules, max_tokens
        )


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("abcXYZ 019.,;:!?'\"()-\u2014\u2019\n")), min_size=1, max_size=200),
    st.integers(min_value=3, max_value=60),
)
def test_chunking_matches_reference_on_generated_text(tokenizers, text, max_tokens):
    ours, ref_tok = tokenizers
    rules = RULES["english"]
    try:
        expected = _reference_chunks(ref_tok, text, rules, max_tokens)
    except ValueError:  # the reference's "Text prompt cannot be empty"
        with pytest.raises(TextError):
            split_into_best_sentences(ours, text, rules, max_tokens)
        return
    assert split_into_best_sentences(ours, text, rules, max_tokens) == expected


def test_empty_text_is_a_text_error(tokenizer_path):
    with pytest.raises(TextError):
        prepare_text_prompt("   \n ", RULES["english"])
