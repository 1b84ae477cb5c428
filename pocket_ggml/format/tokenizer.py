"""The tokenizer a pocket-tts GGUF embeds (`tokenizer.data`), and its checks.

A model's text table has one row per piece, so a tokenizer fits a model only with exactly `n_bins`
pieces. The kinds: a SentencePiece `.model` ("sentencepiece") or a Hugging Face `tokenizer.json`
("tokenizers"); `gguf_keys.TOKENIZER_KINDS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pocket_ggml.errors import TokenizerError


@dataclass(frozen=True)
class TokenizerRecord:
    """A tokenizer file's bytes as a GGUF stores them, with its kind and vocabulary size."""

    kind: str  # "sentencepiece" or "tokenizers"
    data: bytes
    vocab_size: int
    # the SentencePiece model the check parsed, handed on so that loading a model parses it once
    processor: object | None = field(default=None, compare=False, repr=False)


def read_tokenizer(path: str | Path, n_bins: int) -> TokenizerRecord:
    """A SentencePiece `.model` or a `tokenizer.json`, checked to have the model's vocabulary size."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer {str(p)!r}: {e.strerror or e}") from None
    return check_tokenizer(data, "tokenizers" if p.suffix == ".json" else "sentencepiece", n_bins, repr(str(p)))


def check_tokenizer(data: bytes, kind: str, n_bins: int, where: str = "tokenizer") -> TokenizerRecord:
    """`data` parsed as a tokenizer of `kind`, checked to have `n_bins` pieces."""
    processor = None
    if kind == "tokenizers":
        try:
            size = len(json.loads(data.decode("utf-8"))["model"]["vocab"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise TokenizerError(f"{where} is not a tokenizers (HF) tokenizer.json") from None
    else:
        import sentencepiece

        try:
            processor = sentencepiece.SentencePieceProcessor(model_proto=data)
            size = processor.vocab_size()
        except (RuntimeError, TypeError, ValueError):
            raise TokenizerError(f"{where} is not a SentencePiece model") from None
    if size != n_bins:
        raise TokenizerError(f"{where} has {size} pieces; the model's text table needs {n_bins}")
    return TokenizerRecord(kind, data, size, processor)


def synthetic_tokenizer_record(n_bins: int) -> TokenizerRecord:
    """The `synthetic_tokenizer` of `n_bins` pieces, as the record a synthetic model embeds."""
    return check_tokenizer(synthetic_tokenizer(n_bins), "sentencepiece", n_bins)


def synthetic_tokenizer(n_pieces: int) -> bytes:
    """A SentencePiece unigram model of exactly `n_pieces` pieces (characters, then letter pairs and
    triples with and without the word-start marker), for synthetic models made without a tokenizer
    file. It tokenizes any English text, so synthetic models run end to end; it is not the released
    vocabulary, and a GGUF made with it says so (`pocket-tts.weights_kind = synthetic`)."""
    import itertools
    import string

    from sentencepiece import sentencepiece_model_pb2 as sp_model

    model = sp_model.ModelProto()
    model.trainer_spec.model_type = sp_model.TrainerSpec.UNIGRAM
    model.trainer_spec.vocab_size = n_pieces
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    specials = [
        ("<unk>", sp_model.ModelProto.SentencePiece.UNKNOWN),
        ("<s>", sp_model.ModelProto.SentencePiece.CONTROL),
        ("</s>", sp_model.ModelProto.SentencePiece.CONTROL),
    ]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    pairs = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2)]
    triples = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=3)]
    normal = ["\u2581", *chars, *("\u2581" + c for c in chars), *pairs, *("\u2581" + p for p in pairs), *triples]
    if n_pieces < len(specials) + len(chars) + 1 or n_pieces > len(specials) + len(normal):
        raise ValueError(
            f"a synthetic tokenizer holds {len(specials) + len(chars) + 1}..{len(specials) + len(normal)} pieces"
        )
    for piece, kind in specials:
        model.pieces.add(piece=piece, score=0.0, type=kind)
    for i, piece in enumerate(normal[: n_pieces - len(specials)]):
        # longer pieces win (single characters cost extra), earlier ones break ties
        model.pieces.add(piece=piece, score=-0.001 * i - (5.0 if len(piece) == 1 else 0.0))
    return model.SerializeToString()
