"""Word timestamps from the FlowLM's attention, by the rules of pocket-tts-timestamped 1.4.0 (MIT).

Each config has a few attention heads that follow the text as it is spoken (`TIMESTAMP_HEADS`, the
fork's per-config `timestamp_heads`). At every generated frame, those heads' attention over the
chunk's text tokens (a softmax over the text keys alone) is mapped onto text units, words and
punctuation runs, by how many characters of each unit a token covers, and averaged over the heads.
`WordAlignment` turns these scores into events:

- a voiced frame (RMS above 1e-3) with no word open opens the next word;
- while a word is open, it ends and the next one starts at the same frame as soon as the next word
  scores above it, or, once its own score has fallen below 0.001, any later word does;
- an unvoiced frame ends the open word if a later unit scores above it, or if it is the last word and
  no spoken punctuation follows it; the next word then starts on the next voiced frame;
- the end of a chunk's audio ends the word still open.

Times are the start of the frame (or the end of the audio) in seconds, on the caller's clock.
Pure numpy: the runtime provides the scores (`FlowLM.step(..., attention=...)`).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocket_ggml.errors import TimestampsUnavailable

# The fork's config/*.yaml `timestamp_heads`, (layer, head), in its order (which fixes the order of
# the float sums). Configs that share weights share heads; pocket-tts-timestamped has no entry for
# english_2026-10. tests/test_timestamps.py checks this table against the installed fork.
_ENGLISH_6L = ((3, 8), (2, 0))
_ENGLISH_24L = ((14, 10), (17, 11), (15, 4))
TIMESTAMP_HEADS: dict[str, tuple[tuple[int, int], ...]] = {
    "dutch": ((4, 5), (3, 9), (3, 14), (2, 0)),
    "dutch_24l": ((17, 13), (17, 11)),
    "english": _ENGLISH_6L,
    "english_18m_2026-10": ((2, 7), (3, 4)),
    "english_18m_refl_2026-10": ((2, 7), (3, 4)),
    "english_2026-01": _ENGLISH_6L,
    "english_2026-04": _ENGLISH_6L,
    "english_2026-04_24l": _ENGLISH_24L,
    "english_2026-09": _ENGLISH_6L,
    "english_2026-09_2": _ENGLISH_6L,
    "english_2026-09_24l": _ENGLISH_24L,
    "english_2m_2026-10": ((5, 2), (2, 2), (2, 0), (3, 0)),
    "english_2m_refl_2026-10": ((5, 2), (2, 2)),
    "english_7m_2026-10": ((2, 7), (2, 5)),
    "english_7m_refl_2026-10": ((2, 7), (2, 5)),
    "english_drifting_26-09": ((2, 15),),
    "french": ((3, 9),),
    "french_24l": ((17, 13), (16, 9), (18, 5), (17, 11)),
    "german": ((3, 14), (3, 9), (3, 10)),
    "german_24l": ((17, 11), (15, 4)),
    "italian": ((3, 9), (4, 5), (3, 10)),
    "italian_24l": ((17, 13), (13, 10), (18, 5), (14, 10)),
    "portuguese": ((3, 9), (4, 2), (4, 5), (3, 14), (3, 4)),
    "portuguese_24l": ((17, 13), (18, 1), (20, 12)),
    "spanish": ((3, 9), (4, 2), (4, 5), (3, 10)),
    "spanish_24l": ((17, 13), (17, 11), (18, 1)),
}

SILENCE_RMS = float(np.float32(1e-3))  # the fork's threshold is a float32 1e-3
LATER_WORD_THRESHOLD = 0.001  # below this score, any later word taking over ends the open word


def timestamp_heads(config_name: str) -> tuple[tuple[int, int], ...]:
    heads = TIMESTAMP_HEADS.get(config_name)
    if heads is None:
        raise TimestampsUnavailable(
            f"word timestamps need a config with timestamp heads; {config_name!r} has none "
            f"(configs with heads: {', '.join(sorted(TIMESTAMP_HEADS))})"
        )
    return heads


# ---------------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class WordStart:
    word: str
    word_index: int
    start_time: float


@dataclass(frozen=True, slots=True)
class WordEnd:
    word: str
    word_index: int
    start_time: float
    end_time: float


@dataclass(frozen=True, slots=True)
class WordTimestamp:
    """A finished word (what `generate_audio_with_timestamps` returns)."""

    word: str
    word_index: int
    start_time: float
    end_time: float


WordEvent = WordStart | WordEnd


def is_voiced(audio: np.ndarray) -> bool:
    """RMS above SILENCE_RMS (energy compared as the fork does, in float32)."""
    samples = np.asarray(audio, np.float32).reshape(-1)
    if not samples.size:
        return False
    return float(np.dot(samples, samples)) > SILENCE_RMS**2 * samples.size


# ---------------------------------------------------------------------------------- text -> units
@dataclass(frozen=True, slots=True)
class SourceWord:
    text: str
    word_index: int  # over the whole input text
    begin: int  # characters of the input text
    end: int


@dataclass(frozen=True, slots=True)
class TextUnit:
    """A word or a run of punctuation of one prepared chunk (characters begin:end of the chunk).
    `synthetic` punctuation was added by text preparation (the final period), not in the input."""

    text: str
    begin: int
    end: int
    word: SourceWord | None
    synthetic: bool = False

    @property
    def is_word(self) -> bool:
        return self.word is not None


@dataclass(frozen=True)
class TimestampChunk:
    """One prepared chunk: its units and the (tokens, units) share of each token's characters."""

    text: str
    units: tuple[TextUnit, ...]
    token_to_unit: np.ndarray  # float32 (tokens, units), rows sum to 1 (0 for a token in no unit)


_FOLD = str.maketrans({"\u2019": "'", "\u2010": "-", "\u2011": "-"})
_WORD_JOINERS = frozenset("-\u2010\u2011'\u2019")  # inside a word when a letter or digit follows


def _normalized_word(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    return "".join(c for c in folded if c.isalnum() or c in "'-")


def _word_spans(text: str) -> list[tuple[int, int]]:
    """Runs of letters and digits (with their combining marks), joined by - or ' between two."""
    spans, i, n = [], 0, len(text)
    while i < n:
        if not text[i].isalnum():
            i += 1
            continue
        begin = i
        while True:
            while i < n and (text[i].isalnum() or unicodedata.category(text[i]).startswith("M")):
                i += 1
            if i + 1 < n and text[i] in _WORD_JOINERS and text[i + 1].isalnum():
                i += 1
                continue
            break
        if _normalized_word(text[begin:i]):
            spans.append((begin, i))
    return spans


def source_words(text: str) -> list[SourceWord]:
    return [SourceWord(text[b:e], k, b, e) for k, (b, e) in enumerate(_word_spans(text))]


def _map_words(words: list[SourceWord], chunks: list[str]) -> tuple[list[list[tuple[SourceWord, int, int]]], list]:
    """Each chunk's (source word, begin, end): one to one when the prepared words are the source words;
    otherwise only the words that occur once on both sides, in order (the fork's best effort), the
    other prepared words then being units that are no word."""
    prepared = [
        (k, b, e, _normalized_word(chunk[b:e])) for k, chunk in enumerate(chunks) for b, e in _word_spans(chunk)
    ]
    mapped: list[list[tuple[SourceWord, int, int]]] = [[] for _ in chunks]
    ignored: list[list[tuple[int, int]]] = [[] for _ in chunks]
    keys = [_normalized_word(w.text) for w in words]
    if keys == [p[3] for p in prepared]:
        for w, (k, b, e, _) in zip(words, prepared):
            mapped[k].append((w, b, e))
        return mapped, ignored
    source_counts, prepared_counts = Counter(keys), Counter(p[3] for p in prepared)
    position = {p[3]: i for i, p in enumerate(prepared)}
    paired: set[int] = set()
    last = -1
    for w, key in zip(words, keys):
        if source_counts[key] != 1 or prepared_counts[key] != 1 or position[key] <= last:
            continue
        last = position[key]
        k, b, e, _ = prepared[last]
        mapped[k].append((w, b, e))
        paired.add(last)
    for i, (k, b, e, _) in enumerate(prepared):
        if i not in paired:
            ignored[k].append((b, e))
    return mapped, ignored


def _units(
    source: str, words: list[SourceWord], chunk: str, mapped: list[tuple[SourceWord, int, int]], ignored
) -> tuple[TextUnit, ...]:
    units = [TextUnit(w.text, b, e, w) for w, b, e in mapped]
    units += [TextUnit(chunk[b:e], b, e, None, synthetic=True) for b, e in ignored]
    covered = [False] * len(chunk)
    for u in units:
        covered[u.begin : u.end] = [True] * (u.end - u.begin)
    i = 0
    while i < len(chunk):
        if covered[i] or not unicodedata.category(chunk[i]).startswith("P"):
            i += 1
            continue
        end = i + 1
        while end < len(chunk) and not covered[end] and unicodedata.category(chunk[end]).startswith("P"):
            end += 1
        units.append(TextUnit(chunk[i:end], i, end, None, _added_punctuation(source, words, mapped, i)))
        i = end
    units.sort(key=lambda u: (u.begin, u.end))
    return tuple(units)


def _added_punctuation(source: str, words: list[SourceWord], mapped, begin: int) -> bool:
    """Punctuation after a chunk's last word where the input has none before its next word."""
    if not mapped or begin < mapped[-1][2]:
        return False
    last = mapped[-1][0]
    stop = words[last.word_index + 1].begin if last.word_index + 1 < len(words) else len(source)
    return not any(unicodedata.category(c).startswith("P") for c in source[last.end : stop])


def _token_to_unit(chunk: str, units: tuple[TextUnit, ...], spans, coordinates: str) -> np.ndarray:
    """Each token's overlap with each unit, normalised over the units (same coordinates as spans)."""
    if coordinates == "byte":
        edges = np.cumsum([0] + [len(c.encode("utf-8")) for c in chunk])
        unit_spans = [(int(edges[u.begin]), int(edges[u.end])) for u in units]
    else:
        unit_spans = [(u.begin, u.end) for u in units]
    out = np.zeros((len(spans), len(units)), np.float32)
    if not spans or not units:
        return out
    tb, te = (np.array([s[i] for s in spans])[:, None] for i in (0, 1))
    ub, ue = (np.array([s[i] for s in unit_spans])[None, :] for i in (0, 1))
    overlap = np.clip(np.minimum(te, ue) - np.maximum(tb, ub), 0, None).astype(np.float32)
    total = overlap.sum(axis=1, keepdims=True)
    return np.where(total > 0, overlap / np.maximum(total, 1), overlap).astype(np.float32)


def timestamp_chunks(source: str, chunks: Sequence[str], token_spans) -> list[TimestampChunk]:
    """The units of each prepared chunk of `source` (the text as given) and its token mapping;
    `token_spans(chunk)` -> (token spans, "byte" | "codepoint"), as `Tokenizer.token_spans` gives."""
    chunks = [unicodedata.normalize("NFKC", c) for c in chunks]
    words = source_words(source)
    mapped, ignored = _map_words(words, chunks)
    out = []
    for chunk, chunk_words, chunk_ignored in zip(chunks, mapped, ignored):
        units = _units(source, words, chunk, chunk_words, chunk_ignored)
        spans, coordinates = token_spans(chunk)
        out.append(TimestampChunk(chunk, units, _token_to_unit(chunk, units, spans, coordinates)))
    return out


# ------------------------------------------------------------------------------- scores -> events
def unit_scores(
    scores: np.ndarray, heads: Sequence[tuple[int, int]], head_dim: int, token_to_unit: np.ndarray
) -> np.ndarray:
    """(units,) float32: the mean over `heads` of each head's softmax over the text tokens of
    scores (heads, tokens) / sqrt(head_dim), mapped onto the units. Summed layer by layer in the order
    the model runs them, each layer's heads in config order, as the fork accumulates them."""
    logits = np.asarray(scores, np.float32) / np.float32(head_dim**0.5)
    logits = logits - logits.max(axis=1, keepdims=True)
    attention = np.exp(logits)
    attention /= attention.sum(axis=1, keepdims=True)
    per_head = attention @ token_to_unit
    total = None
    for layer in sorted({layer for layer, _ in heads}):
        rows = [i for i, (hl, _) in enumerate(heads) if hl == layer]
        layer_sum = per_head[rows].sum(axis=0)
        total = layer_sum if total is None else total + layer_sum
    assert total is not None
    return (total / np.float32(len(heads))).astype(np.float32)


class WordAlignment:
    """The fork's word state machine over one chunk's frames (see the module docstring)."""

    def __init__(self, units: tuple[TextUnit, ...]):
        self.units = units
        self._word_units = [i for i, u in enumerate(units) if u.is_word]
        self._next = 0  # position in _word_units of the next word to open
        self._open: int | None = None
        self._open_start = 0.0

    def _open_next(self, time: float) -> WordStart:
        word = self.units[self._word_units[self._next]].word
        assert word is not None
        self._open, self._open_start = self._next, time
        self._next += 1
        return WordStart(word.text, word.word_index, time)

    def _close(self, time: float) -> WordEnd:
        assert self._open is not None
        word = self.units[self._word_units[self._open]].word
        assert word is not None
        self._open = None
        return WordEnd(word.text, word.word_index, self._open_start, time)

    def _later_word_leads(self, scores: np.ndarray, current: int) -> bool:
        score = scores[current]
        if scores[self._word_units[self._next]] > score:
            return True
        if score >= LATER_WORD_THRESHOLD:
            return False
        return any(scores[u] > score for u in self._word_units[self._next + 1 :])

    def process_frame(self, scores: np.ndarray, voiced: bool, frame_start: float) -> list[WordEvent]:
        if scores.shape != (len(self.units),):
            raise ValueError(f"expected {len(self.units)} unit scores, got {scores.shape}")
        if not voiced:
            if self._open is None:
                return []
            current = self._word_units[self._open]
            later = scores[current + 1 :]
            overtaken = bool(later.size) and later.max() > scores[current]
            last_word = self._open == len(self._word_units) - 1
            spoken_punctuation_follows = any(not u.is_word and not u.synthetic for u in self.units[current + 1 :])
            if overtaken or (last_word and not spoken_punctuation_follows):
                return [self._close(frame_start)]
            return []
        if self._open is None:
            return [self._open_next(frame_start)] if self._next < len(self._word_units) else []
        if self._next >= len(self._word_units):
            return []
        if self._later_word_leads(scores, self._word_units[self._open]):
            return [self._close(frame_start), self._open_next(frame_start)]
        return []

    def finish(self, audio_end: float) -> list[WordEnd]:
        events = [self._close(audio_end)] if self._open is not None else []
        self._next = len(self._word_units)
        return events


class ChunkTimestamps:
    """The word events of one chunk, frame by frame, on a sample clock: `frame(text_scores, audio,
    start)` with the frame's attention scores (heads, tokens), its decoded audio and the sample at
    which that audio starts; `finish(end)` at the sample where the chunk's audio ends."""

    def __init__(self, chunk: TimestampChunk, heads: Sequence[tuple[int, int]], head_dim: int, sample_rate: int):
        self.chunk = chunk
        self.heads = tuple(heads)
        self.head_dim = head_dim
        self.sample_rate = sample_rate
        self.alignment = WordAlignment(chunk.units)

    def frame(self, text_scores: np.ndarray, audio: np.ndarray, start: int) -> list[WordEvent]:
        if text_scores.shape != (len(self.heads), self.chunk.token_to_unit.shape[0]):
            raise ValueError(
                f"attention scores of shape {text_scores.shape} for {len(self.heads)} heads over "
                f"{self.chunk.token_to_unit.shape[0]} tokens"
            )
        scores = unit_scores(text_scores, self.heads, self.head_dim, self.chunk.token_to_unit)
        return self.alignment.process_frame(scores, is_voiced(audio), start / self.sample_rate)

    def finish(self, end: int) -> list[WordEnd]:
        return self.alignment.finish(end / self.sample_rate)
