"""Word timestamps as files: SubRip (.srt), WebVTT (.vtt) or JSON, chosen by the extension.

Subtitle cues group words as they were written: a cue shows the text from its first word to the
next cue's first word (punctuation included) and ends after a sentence end or MAX_CUE_WORDS words;
it lasts from its first word's start to its last word's end. JSON keeps every word with its times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocket_ggml.api import WordEnd, WordTimestamp
from pocket_ggml.errors import OutputError
from pocket_ggml.files import atomic_write
from pocket_ggml.runtime.markup import parse_markup, spoken_text
from pocket_ggml.runtime.timestamps import source_words

FORMATS = (".srt", ".vtt", ".json")
MAX_CUE_WORDS = 7
_SENTENCE_END = ".!?\u2026"


def _clock(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def cues(text: str, words: Sequence[WordTimestamp]) -> list[tuple[float, float, str]]:
    """(start, end, text) subtitle cues of `words`, timed words of `text` (indices into its words)."""
    spans = source_words(text)
    out: list[tuple[float, float, str]] = []
    group: list[WordTimestamp] = []

    def shown(w: WordTimestamp) -> str:
        if w.word_index >= len(spans):
            return w.word
        begin = spans[w.word_index].begin
        end = spans[w.word_index + 1].begin if w.word_index + 1 < len(spans) else len(text)
        return " ".join(text[begin:end].split())

    for w in words:
        group.append(w)
        if shown(w)[-1:] in _SENTENCE_END or len(group) == MAX_CUE_WORDS or w is words[-1]:
            out.append((group[0].start_time, group[-1].end_time, " ".join(shown(g) for g in group)))
            group = []
    return out


def render(path: Path, text: str, words: Sequence[WordTimestamp], duration: float) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        items = [
            {"word": w.word, "word_index": w.word_index, "start_time": w.start_time, "end_time": w.end_time}
            for w in words
        ]
        return json.dumps({"duration": duration, "words": items}, ensure_ascii=False, indent=1) + "\n"
    blocks = []
    for k, (start, end, line) in enumerate(cues(text, words), 1):
        if suffix == ".srt":
            blocks.append(f"{k}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{line}\n")
        else:
            blocks.append(f"{_clock(start, '.')} --> {_clock(end, '.')}\n{line}\n")
    body = "\n".join(blocks)
    return body if suffix == ".srt" else "WEBVTT\n\n" + body


def check_destination(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise OutputError(f"timestamps are written as {', '.join(FORMATS)} (by extension), not {path.name!r}")
    if not path.parent.is_dir():
        raise OutputError(f"folder {str(path.parent)!r} does not exist")


def write(path: Path, text: str, words: Sequence[WordTimestamp], duration: float) -> None:
    """Atomically: an interrupted write leaves any previous file intact."""

    check_destination(path)
    with atomic_write(path) as tmp:
        tmp.write_text(render(path, text, words, duration), encoding="utf-8")


class Transcript:
    """The timed words of one run over every text it speaks, one after the other (lines of standard input:
    times and word indices go on from the previous text's), for one subtitle file."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.text = ""  # the texts spoken so far, one per line
        self.samples = 0  # of the texts before the current one
        self.current = 0  # samples of the current text
        self.first_index = 0  # word index of the current text's first word
        self.words: list[WordTimestamp] = []

    def add(self, item) -> dict | None:
        """Take an item of `generate_audio_stream(..., timestamps=True)`: a chunk of audio moves the clock; a
        word event is returned as the JSON-ready event, its time and index on the whole run's count."""
        if isinstance(item, np.ndarray):
            self.current += len(item)
            return None
        start, index = self._later(item.start_time), item.word_index + self.first_index
        if isinstance(item, WordEnd):
            end = self._later(item.end_time)
            self.words.append(WordTimestamp(item.word, index, start, end))
            return {"event": "word_end", "word": item.word, "word_index": index, "start_time": start, "end_time": end}
        return {"event": "word_start", "word": item.word, "word_index": index, "start_time": start}

    def _later(self, seconds: float) -> float:
        """A time of the current text on the clock of the whole run (event times count samples)."""
        return (self.samples + round(seconds * self.sample_rate)) / self.sample_rate

    def end_text(self, text: str, markup: bool) -> None:
        """The current text is spoken: the next one's times and word indices follow on."""
        if markup:  # word indices count the words spoken, not the markers'
            text = spoken_text(parse_markup(text))
        self.first_index += len(source_words(text))
        self.text += text.rstrip("\n") + "\n"
        self.samples += self.current
        self.current = 0

    def write(self, path: Path) -> None:
        write(path, self.text, self.words, self.samples / self.sample_rate)
