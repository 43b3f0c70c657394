"""Tokenizers behind one interface (encode/decode, pieces, save, `load_tokenizer`), each saved as one file.

- `Tokenizer`: SentencePiece, character-level for poems, unigram for general text, lossless on any string.
  Byte fallback encodes characters outside the vocabulary as UTF-8 bytes. No normalisation (full-width ，。
  stay as they are: they mark line structure), spaces kept as written; SentencePiece writes a space as the
  meta symbol ▁, so a literal ▁ in the input is encoded as its three UTF-8 byte pieces, which decode back to
  ▁ rather than a space.
- `WordTokenizer`: a closed word vocabulary (the Penn Treebank's 10,000 words), split on whitespace; a word
  outside it is unk, written `<unk>` as in the corpus. Saved as JSON.
Fixed special ids in both: pad 0, unk 1, bos 2, eos 3.
"""

import io
import json
import os
from pathlib import Path

import sentencepiece as spm

from textvae.atomic import write_bytes
from textvae.errors import TextVAEError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_META_SPACE = "\u2581"
_MIN_VOCAB = 262
_MODEL_TYPES = {"char": "char", "unigram": "unigram"}


class Tokenizer:
    """Wraps a SentencePiece model; ids from `encode` exclude BOS/EOS (the model adds them)."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.model_proto = model_proto
        self._meta_bytes = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in _META_SPACE.encode()]

    @classmethod
    def train(cls, texts: list[str], kind: str = "char", vocab_size: int = 8000) -> "Tokenizer":
        """Train on `texts`; `vocab_size` is an upper bound (a small corpus gets fewer pieces)."""
        if kind not in _MODEL_TYPES:
            raise TextVAEError(f"tokenizer kind must be one of {sorted(_MODEL_TYPES)}, not {kind!r}")
        if vocab_size < _MIN_VOCAB:
            raise TextVAEError(f"vocab_size must be at least {_MIN_VOCAB} (256 byte pieces, 4 special ids, the "
                               f"space piece and some characters), not {vocab_size}")
        if not any(texts):
            raise TextVAEError("cannot train a tokenizer on an empty corpus")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type=_MODEL_TYPES[kind],
            vocab_size=vocab_size, hard_vocab_limit=False, byte_fallback=True,
            character_coverage=0.9999 if kind == "char" else 0.9995,
            normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
            user_defined_symbols=[_META_SPACE], split_digits=True, max_sentence_length=1 << 16,
            input_sentence_size=2_000_000, shuffle_input_sentence=True,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, minloglevel=2, num_threads=os.cpu_count())
        return cls(model.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        try:
            return cls(path.read_bytes())
        except FileNotFoundError as e:
            raise TextVAEError(f"tokenizer file {path} does not exist") from e
        except (RuntimeError, OSError) as e:
            raise TextVAEError(f"{path} is not a SentencePiece model ({e}); it may be corrupt") from e

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, then rename."""
        write_bytes(path, self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encoded = self.sp.encode(list(texts))
        for i, text in enumerate(texts):
            if _META_SPACE in text:
                encoded[i] = self._encode_with_literal_meta(text)
        return encoded

    def _encode_with_literal_meta(self, text: str) -> list[int]:
        pieces = self.sp.encode(text.split(_META_SPACE))
        ids = pieces[0]
        for piece in pieces[1:]:
            ids = ids + self._meta_bytes + piece
        return ids

    def decode(self, ids) -> str:
        """Special tokens (pad, bos, eos) are skipped; unk decodes as ' ⁇ '."""
        return self.sp.decode([int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID)])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def is_byte(self, i: int) -> bool:
        return self.sp.is_byte(i)

    def piece_score(self, i: int) -> float:
        """A piece's score: for a character or unigram vocabulary, its log-probability in the training texts."""
        return self.sp.get_score(i)

    def unknown_characters(self, text: str) -> list[str]:
        """Characters of `text` that have no piece of their own (they fall back to bytes or unk)."""
        return sorted({c for c in text if c != " " and self.sp.piece_to_id(c) == UNK_ID})


class WordTokenizer:
    """A closed vocabulary of whitespace-separated words; `model_proto` is its JSON file's bytes (compared by
    check_same_tokenizer and checksummed like a SentencePiece model)."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
    KIND = "words"
    SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")

    def __init__(self, words: list[str]):
        self.pieces = [*self.SPECIALS, *(w for w in words if w not in self.SPECIALS)]
        self.ids = {piece: i for i, piece in enumerate(self.pieces)}
        if len(self.ids) != len(self.pieces):
            raise TextVAEError("a word vocabulary lists a word twice")
        bad = [w for w in self.pieces if not w or w != w.strip() or len(w.split()) != 1]
        if bad:
            raise TextVAEError(f"a vocabulary word must be one whitespace-free token, not {bad[0]!r}")
        self.model_proto = json.dumps(dict(kind=self.KIND, words=self.pieces[len(self.SPECIALS):]),
                                      ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_proto(cls, content: bytes) -> "WordTokenizer":
        return cls(json.loads(content)["words"])

    def save(self, path: str | Path) -> None:
        write_bytes(path, self.model_proto)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(word, UNK_ID) for word in text.split()]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids) -> str:
        """Words joined by single spaces; special tokens (pad, bos, eos) are skipped, unk is `<unk>`."""
        return " ".join(self.pieces[int(i)] for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID))

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def piece_to_id(self, piece: str) -> int:
        return self.ids.get(piece, UNK_ID)

    def is_byte(self, i: int) -> bool:
        return False

    def piece_score(self, i: int) -> float:
        """Every word alike: a closed vocabulary keeps no frequencies."""
        return 0.0

    def unknown_characters(self, text: str) -> list[str]:
        """The words of `text` outside the vocabulary (they become unk); the SentencePiece method's counterpart."""
        return sorted({w for w in text.split() if w not in self.ids})


def load_tokenizer(path: str | Path) -> "Tokenizer | WordTokenizer":
    """The tokenizer saved at `path`: a word vocabulary (JSON) or a SentencePiece model."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError as e:
        raise TextVAEError(f"tokenizer file {path} does not exist") from e
    except OSError as e:
        raise TextVAEError(f"cannot read the tokenizer {path}: {e.strerror or e}") from e
    if content.startswith(b'{"kind": "words"'):
        try:
            return WordTokenizer.from_proto(content)
        except (ValueError, KeyError, TypeError) as e:
            raise TextVAEError(f"{path} is not a word vocabulary ({e}); it may be corrupt") from e
    return Tokenizer.load(path)


def check_same_tokenizer(trained: Tokenizer | None, data: Tokenizer, model_dir, data_dir, fix: str) -> None:
    """Refuse to pair a model with a dataset tokenized by another tokenizer (even one of the same size): its
    token ids would mean other pieces. `trained` None (a model saved without one) cannot be compared."""
    if trained is not None and trained.model_proto != data.model_proto:
        raise TextVAEError(f"{model_dir} was trained with another tokenizer than {data_dir}'s: the token ids "
                           f"would mean other characters. {fix}")
