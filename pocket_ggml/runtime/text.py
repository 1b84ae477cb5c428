"""Text preparation and sentence chunking, exactly as the reference does them.

`prepare_text_prompt` applies the model's text rules (character replacements, capital first letter,
terminal punctuation, space padding of short inputs); `split_into_best_sentences` splits on sentence
ends (never on a decimal point), sub-splits oversized sentences on , ; : and regroups the pieces
into chunks of at most `max_tokens` tokens. Chunks are decoded back to text and generated one at a
time, each from a fresh copy of the voice state (pocket_tts.models.text_chunking).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pocket_ggml.errors import TextError, TokenizerError
from pocket_ggml.format.config import TextRules

MAX_TOKENS_PER_CHUNK = 50
_DECIMAL_WINDOW = 8  # tokens decoded on each side of a sentence end to spot a decimal point
TERMINAL_PUNCTUATION = ".!?\u2026"
_WEAK_PUNCTUATION = ",;:-\u2013\u2014"
CLOSERS = "\"'\u201d\u2019)]\u00bb"


class Tokenizer:
    """The model's tokenizer, from the bytes embedded in the GGUF: SentencePiece, or a
    `tokenizer.json` (the released english models; needs the optional `tokenizers` package)."""

    def __init__(self, data: bytes, kind: str = "sentencepiece", processor: object | None = None):
        """`processor`: the SentencePiece model already parsed from `data` (by the file's check), if any."""
        if kind == "tokenizers":
            try:
                import tokenizers
            except ImportError:
                raise TokenizerError("this model's tokenizer.json needs the `tokenizers` package") from None
            try:
                tok = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, Exception):  # tokenizers raises its own Exception type
                raise TokenizerError("the embedded tokenizer.json is unreadable") from None
            self._encode = lambda text: tok.encode(text).ids
            self._decode = tok.decode
            self._pieces = lambda text: _json_pieces(tok, text)
            self.vocab_size = tok.get_vocab_size()
            return
        if kind != "sentencepiece":
            raise TokenizerError(f"unknown tokenizer kind {kind!r}")
        import sentencepiece

        try:
            sp = processor or sentencepiece.SentencePieceProcessor(model_proto=data)
        except (RuntimeError, TypeError, ValueError):
            raise TokenizerError("the embedded tokenizer is not a SentencePiece model") from None
        self._encode = lambda text: sp.encode(text, out_type=int)
        self._decode = sp.decode
        self._pieces = lambda text: _sentencepiece_pieces(sp, text)
        self.vocab_size = sp.vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def decode(self, tokens: list[int]) -> str:
        return self._decode(tokens)

    def pieces(self, text: str) -> tuple[list[int], list[tuple[int, int]], str]:
        """(ids, each token's span of `text`, the spans' unit: "byte" or "codepoint"), the ids being
        `encode(text)`. Byte-fallback tokens of one character all get that character's span."""
        return self._pieces(text)


def _sentencepiece_pieces(sp, text: str) -> tuple[list[int], list[tuple[int, int]], str]:
    enc = sp.encode(text, return_type="offset_mapping", return_bytes=True)
    pieces = [p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in enc["pieces"]]
    spans = [(int(b), int(e)) for b, e in enc["offsets"]]
    return [int(i) for i in enc["ids"]], _byte_fallback_spans(spans, pieces), "byte"


def _json_pieces(tok, text: str) -> tuple[list[int], list[tuple[int, int]], str]:
    enc = tok.encode(text)
    spans = [(int(b), int(e)) for b, e in enc.offsets]
    return list(enc.ids), _byte_fallback_spans(spans, [str(p) for p in enc.tokens]), "codepoint"


def _byte_value(piece: str) -> int | None:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return int(piece[3:5], 16)
        except ValueError:
            return None
    return None


def _byte_fallback_spans(spans: list[tuple[int, int]], pieces: list[str]) -> list[tuple[int, int]]:
    """The bytes of one UTF-8 character, each its own <0xNN> piece, all share the character's span."""
    out, i = list(spans), 0
    while i < len(pieces):
        first = _byte_value(pieces[i])
        if first is None:
            i += 1
            continue
        length = 2 if 0xC2 <= first <= 0xDF else 3 if 0xE0 <= first <= 0xEF else 4 if 0xF0 <= first <= 0xF4 else 1
        values = [_byte_value(p) for p in pieces[i : i + length]]
        valid = len(values) == length and all(v is not None for v in values)
        valid = valid and all(v is not None and 0x80 <= v <= 0xBF for v in values[1:])
        end = i + length if valid else i + 1
        begin_offset, end_offset = min(b for b, _ in spans[i:end]), max(e for _, e in spans[i:end])
        if end_offset > begin_offset:
            out[i:end] = [(begin_offset, end_offset)] * (end - i)
        i = end
    return out


@dataclass(frozen=True)
class PreparedText:
    text: str
    frames_after_eos_guess: int  # 3 for texts of <= 4 words, else 1 (the caller adds 2)


def prepare_text_prompt(text: str, rules: TextRules) -> PreparedText:
    text = text.strip()
    if rules.replace_characters:
        text = " ".join(text.translate(str.maketrans(dict(rules.replace_characters))).split())
        # Deleted quotes turn '"Hi?", she said' into 'Hi?, she said': keep only the sentence mark.
        text = re.sub(r"([.!?\u2026])\s*[,;:]", r"\1", text)
    if text == "":
        raise TextError("the text is empty")
    text = text.replace("\n", " ").replace("\r", " ").replace("  ", " ")
    if rules.remove_semicolons:
        text = text.replace(";", ",")
    guess = 3 if len(text.split()) <= 4 else 1
    if rules.capitalize_first_letter and not text[0].isupper():
        text = text[0].upper() + text[1:]
    if rules.append_terminal_punctuation:
        text = _ensure_terminal_punctuation(text)
    if rules.pad_with_spaces_for_short_inputs and len(text.split()) < 5:
        text = " " * 8 + text  # the model does poorly on very few tokens
    return PreparedText(text, guess)


def _ensure_terminal_punctuation(text: str) -> str:
    """Sentence-final punctuation, after any closing quote or bracket; a trailing , : or dash
    becomes a period (the splitter only knows a bare period token)."""
    core = text.rstrip(CLOSERS + " ")
    closers = text[len(core) :].strip()
    if not core or core[-1] in TERMINAL_PUNCTUATION:
        return text
    if core[-1] in _WEAK_PUNCTUATION:
        return core.rstrip(_WEAK_PUNCTUATION + " ") + "." + closers
    return text + "."


def _is_decimal_period_boundary(tokens: list[int], start: int, tok: Tokenizer) -> bool:
    """Whether `start` follows a decimal point ("3." then "5"). The reference decodes the whole
    prefix and suffix at every sentence end, quadratic in the text length (minutes for 1 MB of text);
    the last two characters before and the first one after only need a few tokens on each side."""
    width = _DECIMAL_WINDOW
    while True:
        prefix = tok.decode(tokens[max(0, start - width) : start])
        if len(prefix) >= 2 or width >= start:
            break
        width *= 2
    suffix = tok.decode(tokens[start : start + _DECIMAL_WINDOW])
    return len(prefix) >= 2 and prefix[-1] == "." and prefix[-2].isdigit() and bool(suffix) and suffix[0].isdigit()


def _boundaries(tokens: list[int], boundary_tokens: list[int], tok: Tokenizer | None = None) -> list[int]:
    """Segment starts: a token right after a run of boundary tokens (0 and len(tokens) included)."""
    marks = set(boundary_tokens)
    out, after_mark = [0], False
    for i, t in enumerate(tokens):
        if t in marks:
            after_mark = True
            continue
        if after_mark and not (tok is not None and _is_decimal_period_boundary(tokens, i, tok)):
            out.append(i)
        after_mark = False
    out.append(len(tokens))
    return out


def _segments(tokens: list[int], bounds: list[int], tok: Tokenizer) -> list[tuple[int, str]]:
    return [(b - a, tok.decode(tokens[a:b])) for a, b in zip(bounds, bounds[1:])]


def split_into_best_sentences(
    tok: Tokenizer, text: str, rules: TextRules, max_tokens: int = MAX_TOKENS_PER_CHUNK
) -> list[str]:
    if max_tokens < 1:
        raise TextError(f"max_tokens must be at least 1, got {max_tokens}")
    prepared = prepare_text_prompt(text, rules).text.strip()
    tokens = tok.encode(prepared)
    sentence_ends = tok.encode(".!...?")[1:]  # drop the word-start piece
    segments = _segments(tokens, _boundaries(tokens, sentence_ends, tok), tok)
    clause_ends = tok.encode(",;:")[1:]
    refined: list[tuple[int, str]] = []
    for n, sentence in segments:
        if n > max_tokens:
            sub = tok.encode(sentence.strip())
            parts = _segments(sub, _boundaries(sub, clause_ends), tok)
            if len(parts) > 1:
                refined.extend(parts)
                continue
        refined.append((n, sentence))
    chunks: list[str] = []
    current, count = "", 0
    for n, sentence in refined:
        if current == "":
            current, count = sentence, n
        elif count + n > max_tokens:
            chunks.append(current.strip())
            current, count = sentence, n
        else:
            current, count = current + " " + sentence, count + n
    if current != "":
        chunks.append(current.strip())
    return chunks


_SENTENCE_MARK_RUN = re.compile(r"[.!?]+")
_LAST_WHITESPACE = re.compile(r"\s(?=\S*$)")


def _sentence_end(text: str, tok: Tokenizer, rules: TextRules) -> int | None:
    """Where the first sentence of `text` ends, once that is settled (None: not yet).

    `split_into_best_sentences`' rule: a sentence ends at the first token after a run of . ! ...
    ? tokens, in the prepared text. A candidate is a run of . ! ? followed by closing quotes or
    brackets and whitespace, so that no later piece can extend the run or its closers; the
    tokenizer then decides, on the candidate followed by a word, whether the splitter ends the
    sentence there, after the closers, or before them (a closer token starts the next sentence), or
    not at all (e.g. a '."' piece is no sentence-end token). A period after a digit waits for the
    next word, which is a decimal ("3. 5" as "3.5") if it starts with a digit. A run with no word
    before it stays with the sentence that follows."""
    marks = set(tok.encode(".!...?")[1:])
    for run in _SENTENCE_MARK_RUN.finditer(text):
        if not any(c.isalnum() for c in text[: run.start()]):
            continue
        after = run.end()
        while after < len(text) and text[after] in CLOSERS:
            after += 1
        if after == len(text):
            return None  # the run or its closers may go on
        if not text[after].isspace():
            continue  # inside a word: "3.5", "e.g.x"
        if run.group() == "." and text[run.start() - 1].isdigit() and after == run.end():
            rest = text[after:].lstrip()
            if not rest:
                return None
            if rest[0].isdigit():
                continue
        # the candidate, then a word: the splitter sees it as in the whole text (its own final
        # punctuation would only come after that word)
        probe = prepare_text_prompt(text[:after] + " A", replace(rules, append_terminal_punctuation=False))
        tokens = tok.encode(probe.text)
        starts = _boundaries(tokens, list(marks))
        if len(tokens) - 1 in starts:
            return after
        closers = text[run.end() : after].strip()
        if closers and any(tok.decode(tokens[b:-1]).strip() == closers for b in starts[1:-1]):
            return run.end()
    return None


class SentenceStream:
    """Sentences of a text that arrives in pieces, each handed out as soon as its end is settled
    (see `_sentence_end`); `pending` is the sentence still being written."""

    def __init__(self, tok: Tokenizer, rules: TextRules) -> None:
        self.tok = tok
        self.rules = rules
        self.pending = ""

    def feed(self, piece: str) -> list[str]:
        self.pending += piece
        sentences = []
        while (end := _sentence_end(self.pending, self.tok, self.rules)) is not None:
            sentences.append(self.pending[:end].strip())
            self.pending = self.pending[end:]
        return sentences

    def close(self) -> str | None:
        """The text after the last sentence end (the stream is over), or None when it is blank."""
        rest, self.pending = self.pending.strip(), ""
        return rest or None


class SentencePieces:
    """Text that arrives in pieces, cut for a speaker that takes one sentence at a time (e.g. one
    `generate_audio_for_text_stream` call per sentence): `feed` returns (text, ends) pairs in order,
    the sentence being written handed out as far as its last white space (its complete words: all
    that can be prompted ahead) and `ends` True where `SentenceStream` ends a sentence. A
    sentence's texts joined are that sentence, give or take white space around it, and a
    `SentenceStream` fed them finds no other end in them."""

    def __init__(self, tok: Tokenizer, rules: TextRules) -> None:
        self.tok = tok
        self.rules = rules
        self._pending = ""  # the sentence being written
        self._given = 0  # how much of it `feed` handed out

    def feed(self, piece: str) -> list[tuple[str, bool]]:
        self._pending += piece
        out = []
        while (end := _sentence_end(self._pending, self.tok, self.rules)) is not None:
            # a period after a digit waits with the white space after it already handed out
            out.append((self._pending[self._given : end], True))
            self._pending, self._given = self._pending[max(end, self._given) :], 0
        cut = _LAST_WHITESPACE.search(self._pending)
        if cut is not None and cut.end() > self._given:
            out.append((self._pending[self._given : cut.end()], False))
            self._given = cut.end()
        return out

    def close(self) -> str:
        """What was not handed out (the stream is over: it ends the last sentence)."""
        rest, self._pending, self._given = self._pending[self._given :], "", 0
        return rest


def _first_chunk_tokens(tok: Tokenizer, text: str, rules: TextRules, max_tokens: int) -> list[int]:
    """The token ids the one-shot path prompts for the first chunk of `text`."""
    first = split_into_best_sentences(tok, text, rules, max_tokens)[0]
    return tok.encode(prepare_text_prompt(first, rules).text)


# Two continuations that share nothing after their first space, of <= 1 and >= 5 words: whatever
# they share is in the prefix itself, and a prefix short enough to be padded shares nothing.
_PROBES = (" a", " b c d e f")


def stable_prompt_tokens(tok: Tokenizer, partial: str, rules: TextRules, max_tokens: int) -> list[int]:
    """The tokens that the first chunk of a sentence beginning with `partial` starts with, whatever
    comes next, as far as they can be known: only the words followed by whitespace count (the last
    may still grow), and of their tokens only those two different continuations agree on, which
    leaves out what the text rules change with the rest (the capital letter stays, the padding of
    short texts and the final punctuation do not) and pieces a tokenizer merges across the word
    boundary. A guess: the caller checks it against the finished sentence's chunks."""
    cut = _LAST_WHITESPACE.search(partial)
    if cut is None or not partial[: cut.start()].strip():
        return []
    done = partial[: cut.start()]
    a, b = (_first_chunk_tokens(tok, done + probe, rules, max_tokens) for probe in _PROBES)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


_CLAUSE_END = re.compile(r"[,;:\u2013\u2014-][\"'\u201d\u2019)\]\u00bb]*$")


def shorten_first_chunk(tok: Tokenizer, chunks: list[str], rules: TextRules, first_chunk_tokens: int) -> list[str]:
    """`chunks` with the first one cut in two when it is prompted with more than
    `first_chunk_tokens` tokens: the head ends at the last clause end (, ; : or a dash) that keeps it
    within the budget and holds at least half the words that fit, else at the last word that fits
    (at least one word). This changes where the chunks split: the head is spoken as a chunk of its
    own, which the text rules end with a period (as they end the clauses a long sentence is split
    into), and the rest starts the next chunk."""
    if first_chunk_tokens < 1:
        raise TextError(f"first_chunk_tokens must be at least 1, got {first_chunk_tokens}")
    if not chunks:
        return chunks

    def n_tokens(text: str) -> int:
        return len(tok.encode(prepare_text_prompt(text, rules).text))

    words = chunks[0].split()
    if n_tokens(chunks[0]) <= first_chunk_tokens or len(words) < 2:
        return chunks
    fit = 1
    while fit + 1 < len(words) and n_tokens(" ".join(words[: fit + 1])) <= first_chunk_tokens:
        fit += 1
    # a clause end, unless it keeps less than half of what fits: "Well," alone is no better a chunk
    # than the words that fit
    cut = next((i for i in range(fit, (fit + 1) // 2 - 1, -1) if i and _CLAUSE_END.search(words[i - 1])), fit)
    return [" ".join(words[:cut]), " ".join(words[cut:]), *chunks[1:]]
