"""Pauses written in the text: `[pause:1.5]`, `[pause:1.5s]`, `[pause:300ms]` and SSML `<break time="500ms"/>`,
optionally inside one `<speak>...</speak>` wrapper.

`parse_markup(text)` splits the text at its pauses into text pieces and `Pause`s, in order. The rules:

- A duration is a decimal number (`1`, `1.5`, `.5`) of seconds, bare or followed by `s`, or of milliseconds
  followed by `ms`; each pause is 0 to 10 s inclusive. Anything else where a duration is written is a
  `MarkupError` naming its position: markup that cannot be read is never spoken as text instead.
- `[pause` starts a marker (case-insensitive, `[pauses]` does not): it must read `[pause:DURATION]`.
- `<break`, `</break`, `<speak` and `</speak` always start markup that must be well-formed: `<break time="..."/>`
  (or `'...'`, space before `/>` allowed, no other attribute), and `<speak ...>` first in the text (its
  attributes, e.g. `xml:lang`, are ignored) closed by `</speak>` last. Any other complete tag (`<emphasis>`,
  `<b>`, `</p>`, `<?xml ...?>`, `<!-- -->`) is refused rather than spoken; a `<` that starts no tag (`a < b`,
  `x<y`) is text.
- Inside `<speak>` the text is XML: `&amp; &lt; &gt; &quot; &apos;` and `&#NN;` / `&#xNN;` are decoded; any
  other `&` stays as written. Outside `<speak>`, `&` is plain text (`Tom &amp; Jerry` is spoken as written).
- A marker separates words (`one[pause:1]two` is two pieces); the whitespace around it is not part of either
  piece, and a piece that is only whitespace is dropped.
- Adjacent pauses are kept as they are written (each rounds to whole samples on its own) and play back to back:
  `[pause:1][pause:0.5]` is 1.5 s of silence.
- A text of pauses only is that silence; a text with neither words nor pauses is empty (`[]`).

The module knows nothing about the model: it is a pure function of the text (the model turns each piece into
sentence chunks and each pause into samples).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pocket_ggml.errors import MarkupError

MAX_PAUSE_SECONDS = 10.0
_SNIPPET = 40  # characters of the offending markup quoted in an error

# Where markup may start: `[pause` as a word, and `<` before a name or `/`, `?`, `!` (a `<` before anything
# else is text). Whether a `<` really starts a tag is decided by _TAG and _ALWAYS_MARKUP below.
_CANDIDATE = re.compile(r"\[\s*pause\b|<(?=[/?!A-Za-z_])", re.IGNORECASE)
_PAUSE = re.compile(r"\[\s*pause\s*(?::(?P<value>[^\[\]<>\n]*))?\]", re.IGNORECASE)
_DURATION = re.compile(r"\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>ms|s)?\s*", re.IGNORECASE)
_NAME = r"[A-Za-z_][\w.:-]*"
_TAG = re.compile(
    rf"""<(?P<close>/)?(?P<name>{_NAME})(?P<attrs>(?:\s+{_NAME}\s*=\s*(?:"[^"<>]*"|'[^'<>]*'))*)\s*(?P<empty>/)?>"""
)
_ATTRIBUTE = re.compile(rf"""({_NAME})\s*=\s*(?:"([^"<>]*)"|'([^'<>]*)')""")
_ALWAYS_MARKUP = re.compile(r"</?(?:break|speak)\b", re.IGNORECASE)
_DECLARATION = re.compile(r"<[?!][^<>]*>")
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_NAMED_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


@dataclass(frozen=True)
class Pause:
    """Silence of `seconds` (0 to 10)."""

    seconds: float

    def samples(self, sample_rate: int) -> int:
        """Its length in samples, `round(seconds * sample_rate)`."""
        return round(self.seconds * sample_rate)


Segment = str | Pause


def spoken_text(segments: list[Segment]) -> str:
    """The words of `segments` as spoken: the text pieces joined by a space (a marker separates words, no more)."""
    return " ".join(segment for segment in segments if not isinstance(segment, Pause))


def parse_markup(text: str) -> list[Segment]:
    """The text pieces (stripped, never empty) and pauses of `text`, in order; see the module's rules."""
    segments: list[Segment] = []
    speak_at: int | None = None  # where <speak> opened
    in_speak = False  # between <speak> and </speak>: XML text, entities decoded
    done = 0  # text[:done] is read

    def add_text(end: int) -> None:
        piece = text[done:end]
        if in_speak:
            piece = _decode_entities(piece, done)
        piece = piece.strip()
        if piece:
            segments.append(piece)

    for m in _CANDIDATE.finditer(text):
        start = m.start()
        if start < done:  # inside a tag already read
            continue
        if text[start] == "[":
            marker = _PAUSE.match(text, start)
            if marker is None:
                raise MarkupError(f"malformed pause marker {_snippet(text, start)}", start, _PAUSE_SYNTAX)
            add_text(start)
            segments.append(_pause(marker.group("value"), text, start, _PAUSE_SYNTAX))
            done = marker.end()
            continue
        if text[start + 1] in "?!":  # <?xml ...?>, <!-- ... -->, <!DOCTYPE ...>
            if _DECLARATION.match(text, start):
                raise MarkupError(f"unsupported markup {_snippet(text, start)}", start, _SUPPORTED)
            continue
        tag = _TAG.match(text, start)
        if tag is None:
            if always := _ALWAYS_MARKUP.match(text, start):
                hint = _BREAK_SYNTAX if always.group().lower().endswith("break") else "write <speak>...</speak>"
                raise MarkupError(f"malformed tag {_snippet(text, start)}", start, hint)
            continue  # a '<' that starts no tag is text
        name = tag.group("name").lower()
        closing, empty = bool(tag.group("close")), bool(tag.group("empty"))
        attributes = _attributes(tag.group("attrs"), text, start)
        if name == "break":
            if closing or not empty or set(attributes) != {"time"}:
                raise MarkupError(f"malformed break {_snippet(text, start)}", start, _BREAK_SYNTAX)
            add_text(start)
            segments.append(_pause(attributes["time"], text, start, _BREAK_SYNTAX))
        elif name == "speak" and not closing:
            if speak_at is not None or segments or text[:start].strip():
                raise MarkupError("<speak> not at the start of the text", start, "it may only wrap the whole text")
            if empty:
                raise MarkupError("empty <speak/>", start, "write <speak>...</speak>")
            speak_at, in_speak = start, True
        elif name == "speak":
            if not in_speak or attributes or empty:
                raise MarkupError(f"unexpected {_snippet(text, start)}", start, "no <speak> is open")
            add_text(start)
            in_speak = False
            after = text[tag.end() :]
            if after.strip():
                raise MarkupError("text after </speak>", tag.end() + len(after) - len(after.lstrip()))
        else:
            raise MarkupError(f"unsupported tag {_snippet(text, start)}", start, _SUPPORTED)
        done = tag.end()
    if in_speak:
        raise MarkupError("<speak> never closed by </speak>", speak_at)
    add_text(len(text))
    return segments


_PAUSE_SYNTAX = "write [pause:1.5], [pause:1.5s] or [pause:300ms]"
_BREAK_SYNTAX = 'write <break time="1.5s"/> or <break time="300ms"/>'
_SUPPORTED = (
    'only [pause:1.5], <break time="500ms"/> and <speak>...</speak> are understood (turn markup off to speak it)'
)


def _pause(value: str | None, text: str, position: int, syntax: str) -> Pause:
    duration = _DURATION.fullmatch(value or "")
    if duration is None:
        raise MarkupError(f"malformed duration in {_snippet(text, position)}", position, syntax)
    number, unit = duration.group("number"), (duration.group("unit") or "s").lower()
    seconds = float(number) / (1000.0 if unit == "ms" else 1.0)
    if not 0.0 <= seconds <= MAX_PAUSE_SECONDS:
        raise MarkupError(
            f"pause of {number}{unit} out of range", position, f"each pause is 0 to {MAX_PAUSE_SECONDS:g} s"
        )
    return Pause(seconds + 0.0)  # -0 is 0


def _attributes(source: str, text: str, position: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, double, single in _ATTRIBUTE.findall(source):
        if name.lower() in out:
            raise MarkupError(f"attribute {name} repeated in {_snippet(text, position)}", position)
        out[name.lower()] = double or single
    return out


def _decode_entities(piece: str, offset: int) -> str:
    def decode(m: re.Match) -> str:
        if m.group(1):
            return _NAMED_ENTITIES[m.group(1)]
        code = int(m.group(2), 10) if m.group(2) else int(m.group(3), 16)
        # XML's Char: no NUL or other C0 control but tab and newlines, no surrogate, nothing above U+10FFFF
        if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF:
            return chr(code)
        raise MarkupError(f"character reference {m.group()} is not an XML character", offset + m.start())

    return _ENTITY.sub(decode, piece)


def _snippet(text: str, start: int) -> str:
    """The markup starting at `start` up to its closing > or ], quoted, at most _SNIPPET characters."""
    end = text.find(">" if text[start] == "<" else "]", start)
    end = len(text) if end < 0 else end + 1
    quoted = text[start : min(end, start + _SNIPPET)].split("\n")[0]
    return repr(quoted + ("..." if end > start + _SNIPPET else ""))
