"""Read a plain one-sentence-per-line corpus (any language) for `textvae prepare text`."""

from pathlib import Path

from textvae.corpus.poems import Corpus
from textvae.errors import TextVAEError

MAX_CHARS = 10_000  # a longer line is not a sentence; the tokenizer trainer cannot take lines of 64 KiB


def parse_text_files(paths: list[Path]) -> Corpus:
    """Each non-empty line of each UTF-8 file is one example; duplicate lines are kept once."""
    corpus, seen = Corpus(texts=[]), set()
    for path in map(Path, paths):
        corpus.files += 1
        for number, line in enumerate(_read_lines(path), start=1):
            text = line.strip()
            if "\0" in text:
                raise TextVAEError(f"{path}:{number} contains a NUL byte: is this a binary file? prepare text "
                                   "takes UTF-8 text, one sentence per line")
            if not text:
                corpus.dropped["empty line"] += 1
            elif len(text) > MAX_CHARS:
                corpus.dropped[f"longer than {MAX_CHARS:,} characters"] += 1
            elif text in seen:
                corpus.dropped["duplicate text"] += 1
            else:
                seen.add(text)
                corpus.texts.append(dict(text=text, source=f"{path.name}:{number}"))
    return corpus


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: a byte-order mark is not text
    except FileNotFoundError as e:
        raise TextVAEError(f"{path} does not exist.") from e
    except UnicodeDecodeError as e:
        raise TextVAEError(f"{path} is not UTF-8 text ({e}); convert it, e.g. with iconv.") from e
    except OSError as e:  # a folder, a permission, a device error
        raise TextVAEError(f"cannot read {path}: {e.strerror or e}") from e
