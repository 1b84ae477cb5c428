"""The pause markup parser (pocket_ggml.runtime.markup): each syntax, the bounds, malformed markup named
by its position, other tags refused, and a property test over generated texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pocket_ggml
import pocket_ggml.api
from pocket_ggml.errors import MarkupError, ParameterError
from pocket_ggml.runtime.markup import MAX_PAUSE_SECONDS, Pause, parse_markup


@pytest.mark.parametrize(
    "text,segments",
    [
        ("Wait [pause:1.5] now", ["Wait", Pause(1.5), "now"]),
        ("Wait [pause:1.5s] now", ["Wait", Pause(1.5), "now"]),
        ("Wait [pause:300ms] now", ["Wait", Pause(0.3), "now"]),
        ("Wait [pause:2] now", ["Wait", Pause(2.0), "now"]),
        ("Wait [pause:.5] now", ["Wait", Pause(0.5), "now"]),
        ("Wait [ PAUSE : 2 S ] now", ["Wait", Pause(2.0), "now"]),
        ('Wait <break time="500ms"/> now', ["Wait", Pause(0.5), "now"]),
        ('Wait <break time="1.5s"/> now', ["Wait", Pause(1.5), "now"]),
        ("Wait <break time='1.5s'/> now", ["Wait", Pause(1.5), "now"]),
        ('Wait <break time="2s" /> now', ["Wait", Pause(2.0), "now"]),
        ('Wait <BREAK TIME="2s"/> now', ["Wait", Pause(2.0), "now"]),
        ('<speak>Wait <break time="1s"/> now</speak>', ["Wait", Pause(1.0), "now"]),
        ("  <speak>\n Wait [pause:1] now \n</speak>\n", ["Wait", Pause(1.0), "now"]),
        ('<speak version="1.1" xml:lang="en-US">Wait</speak>', ["Wait"]),
    ],
)
def test_each_syntax(text, segments):
    assert parse_markup(text) == segments


def test_a_marker_separates_words_and_takes_the_whitespace_around_it():
    assert parse_markup("one[pause:1]two") == ["one", Pause(1.0), "two"]
    assert parse_markup("one \n [pause:1]\t two ") == ["one", Pause(1.0), "two"]
    assert parse_markup("  [pause:1]  ") == [Pause(1.0)]


def test_adjacent_pauses_stay_separate_and_play_back_to_back():
    assert parse_markup("a [pause:1] [pause:500ms]<break time='2s'/> b") == [
        "a",
        Pause(1.0),
        Pause(0.5),
        Pause(2.0),
        "b",
    ]


def test_a_text_of_pauses_only_is_its_silence_and_no_text_is_empty():
    assert parse_markup("[pause:1][pause:0]") == [Pause(1.0), Pause(0.0)]
    assert parse_markup("") == [] and parse_markup(" \n\t ") == [] and parse_markup("<speak> </speak>") == []


def test_what_is_not_markup_stays_text():
    for text in [
        "a < b and x<y",
        "see [1] and [pauses] and [paused 3]",
        "I <3 you",
        "Tom &amp; Jerry & co",  # outside <speak>, & is plain text
        "a > b ] [ c",
        "color\x1b[31m red",
    ]:
        assert parse_markup(text) == [text.strip()]


def test_entities_are_decoded_inside_speak_only():
    assert parse_markup("<speak>Tom &amp; Jerry &lt;3 &quot;x&apos; &#65;&#x42; & co &nbsp;</speak>") == [
        "Tom & Jerry <3 \"x' AB & co &nbsp;"
    ]
    assert parse_markup("<speak>&lt;b&gt;bold&lt;/b&gt;</speak>") == ["<b>bold</b>"]


@pytest.mark.parametrize(
    "text,seconds",
    [("[pause:0]", 0.0), ("[pause:10]", 10.0), ("[pause:10000ms]", 10.0), ("[pause:0ms]", 0.0), ("[pause:-0]", 0.0)],
)
def test_bounds_are_inclusive(text, seconds):
    (pause,) = parse_markup(text)
    assert pause == Pause(seconds) and MAX_PAUSE_SECONDS == 10.0


@pytest.mark.parametrize(
    "text,position",
    [
        ("Hi [pause:10.001]", 3),
        ("Hi [pause:10001ms]", 3),
        ("Hi [pause:-1]", 3),
        ('Hi <break time="11s"/>', 3),
        ("Hi [pause:99999999999999999999999]", 3),
    ],
)
def test_out_of_bounds_is_a_parameter_error_naming_the_position(text, position):
    with pytest.raises(ParameterError, match=rf"out of range at position {position}: each pause is 0 to 10 s") as e:
        parse_markup(text)
    assert isinstance(e.value, MarkupError) and e.value.position == position


@pytest.mark.parametrize(
    "text,position,what",
    [
        ("Hi [pause:abc] there", 3, "malformed duration in '[pause:abc]'"),
        ("Hi [pause:1.5", 3, "malformed pause marker '[pause:1.5'"),
        ("Hi [pause:1.5 there [pause:1]", 3, "malformed pause marker"),
        ("Hi [pause] there", 3, "malformed duration"),
        ("Hi [pause 1] there", 3, "malformed pause marker"),
        ("Hi [pause:1e3] there", 3, "malformed duration"),
        ("Hi [pause:nan] there", 3, "malformed duration"),
        ("Hi [pause:1 5] there", 3, "malformed duration"),
        ("Hi [pause:1h] there", 3, "malformed duration"),
        ("Hi <break> there", 3, "malformed break '<break>'"),
        ("Hi <break/> there", 3, "malformed break"),
        ('Hi <break time="x"/> there', 3, "malformed duration in '<break time=\"x\"/>'"),
        ('Hi <break time="1s"> there', 3, "malformed break"),
        ('Hi <break time="1s"></break> there', 3, "malformed break"),
        ('Hi <break strength="weak"/> there', 3, "malformed break"),
        ('Hi <break time="1s" strength="weak"/> there', 3, "malformed break"),
        ('Hi <break time="1s" time="2s"/> there', 3, "attribute time repeated"),
        ("Hi <break time=1s/> there", 3, "malformed tag"),
        ('Hi <break time="1s"', 3, "malformed tag"),
        ("<speak>Hi", 0, "<speak> never closed"),
        ("Hi <speak>there</speak>", 3, "<speak> not at the start"),
        ("[pause:1]<speak>there</speak>", 9, "<speak> not at the start"),
        ("<speak><speak>Hi</speak></speak>", 7, "<speak> not at the start"),
        ("<speak>Hi</speak> there", 18, "text after </speak>"),
        ("Hi </speak>", 3, "unexpected '</speak>'"),
        ("<speak/>", 0, "empty <speak/>"),
        ("<speak>&#0;</speak>", 7, "character reference &#0;"),
        ("<speak>Hi &#xD800;</speak>", 10, "character reference"),
    ],
)
def test_malformed_markup_names_its_position(text, position, what):
    with pytest.raises(MarkupError) as e:
        parse_markup(text)
    assert e.value.position == position and what in str(e.value) and f"at position {position}" in str(e.value)


@pytest.mark.parametrize(
    "text,position",
    [
        ("Hello <emphasis>there</emphasis>", 6),
        ("<speak>Hello <prosody rate='slow'>there</prosody></speak>", 13),
        ("Hi <b>bold</b>", 3),
        ("Hi </p>", 3),
        ('<speak><voice name="x">Hi</voice></speak>', 7),
        ('Hi <say-as interpret-as="date">1/2</say-as>', 3),
        ("Hi <breakfast>", 3),
        ("<?xml version='1.0'?><speak>Hi</speak>", 0),
        ("Hi <!-- a comment -->", 3),
    ],
)
def test_other_tags_are_refused_not_spoken(text, position):
    with pytest.raises(MarkupError, match="are understood") as e:
        parse_markup(text)
    assert e.value.position == position


def test_parameter_error_is_one_class_wherever_it_is_imported_from():
    assert pocket_ggml.api.ParameterError is ParameterError is pocket_ggml.ParameterError
    assert issubclass(MarkupError, ParameterError) and issubclass(MarkupError, pocket_ggml.PocketError)


# ---------------------------------------------------------------------- property: generated texts
# A text is a list of parts: words (an alphabet without markup characters) and markers, valid or not.
# The expected segments follow from the parts alone, not from the parser.
_WORDS = st.text(alphabet="abcXYZ019 ,.!?'\n\t", max_size=12)
_MILLISECONDS = st.integers(0, int(MAX_PAUSE_SECONDS * 1000))


@st.composite
def _valid_marker(draw) -> tuple[str, Pause]:
    ms = draw(_MILLISECONDS)
    value = draw(st.sampled_from([f"{ms}ms", f"{ms / 1000}", f"{ms / 1000}s", f"{ms / 1000}S", f" {ms} ms "]))
    form = draw(st.sampled_from(["[pause:{}]", '<break time="{}"/>', "<break time='{}' />"]))
    return form.format(value.strip() if form[0] == "<" else value), Pause(ms / 1000)


_INVALID_MARKERS = st.sampled_from(
    ["[pause:abc]", "[pause:", "[pause]", "[pause:10.5]", "[pause:-2s]", "<break/>", '<break time="x"/>', "<em>"]
)


@st.composite
def _texts(draw) -> tuple[str, list, int | None]:
    parts = draw(
        st.lists(
            st.one_of(_WORDS.map(lambda w: ("text", w)), _valid_marker().map(lambda m: ("pause", m))),
            max_size=8,
        )
    )
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), ("bad", draw(_INVALID_MARKERS)))
    wrapped = draw(st.booleans())
    text, segments, words, error_at = "<speak>" if wrapped else "", [], "", None
    for kind, part in parts:
        if kind == "text":
            text, words = text + part, words + part
            continue
        if kind == "bad" and error_at is None:
            error_at = len(text)
        if words.strip():
            segments.append(words.strip())
        words = ""
        if kind == "pause":
            text += part[0]
            segments.append(part[1])
        else:
            text += part
    if words.strip():
        segments.append(words.strip())
    return text + ("</speak>" if wrapped else ""), segments, error_at


@settings(max_examples=300, deadline=None)
@given(_texts())
def test_generated_texts_parse_to_their_parts_or_fail_at_the_first_bad_marker(case):
    text, segments, error_at = case
    if error_at is None:
        assert parse_markup(text) == segments
    else:
        with pytest.raises(MarkupError) as e:
            parse_markup(text)
        assert e.value.position == error_at


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("[]<>/&;#=\"' :.sm0159pauseSPEAKbrktime\n")) | st.characters(), max_size=60)
)
def test_any_text_parses_or_raises_a_markup_error(text):
    try:
        segments = parse_markup(text)
    except MarkupError as e:
        assert 0 <= e.position < len(text)
        return
    for s in segments:
        assert (isinstance(s, str) and s == s.strip() and s) or (
            isinstance(s, Pause) and 0 <= s.seconds <= MAX_PAUSE_SECONDS
        )


def test_a_pause_is_its_seconds_rounded_to_whole_samples():
    assert Pause(1 / 3).samples(24000) == 8000 and Pause(0.3).samples(24000) == 7200
    assert Pause(0.00003).samples(24000) == 1 and Pause(0.00002).samples(24000) == 0
    assert Pause(10.0).samples(48000) == 480000
