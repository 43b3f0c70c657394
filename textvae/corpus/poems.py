"""Read the chinese-poetry corpus and keep the regular forms: 五言/七言 × 绝句 (4 lines) / 律诗 (8 lines).

A source is the npm tarball, its extracted folder, or a clone of the upstream GitHub repository
(`全唐诗/poet.tang.<N>.json`, ...). Poems are cleaned of editorial marks, split into lines at ，。？！；,
rewritten in the canonical punctuation (，after odd lines, 。after even ones), and deduplicated by text.
"""

import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from textvae.errors import TextVAEError
from textvae.poetry.forms import form_of, is_cjk, join_lines, split_lines

DYNASTIES = ("tang", "song")

_POEM_FILE = re.compile(r"poet\.(tang|song)\.(\d+)\.json$")
_POEM_DIRS = {"quantangshi", "全唐诗"}
_NOTES = re.compile(r"（[^（）]*）|\([^()]*\)|〔[^〔〕]*〕")  # editors' notes: drop with their content
_RARE = re.compile(r"\{[^{}]*\}")  # a described rare character: the character itself is missing
_MARKS = str.maketrans("", "", "《》「」『』〖〗〈〉[]")  # quotation/title marks, [restored] characters: keep the content


@dataclass
class Corpus:
    """The kept texts (poems, or a text corpus's sentences) plus the bookkeeping `prepare` reports."""
    texts: list[dict]
    dropped: Counter = field(default_factory=Counter)
    files: int = 0

    def check_not_empty(self, source: str, unit: str) -> None:
        """Refuse a corpus that filtering left empty, naming its source and why its `unit`s were dropped."""
        if self.texts:
            return
        read = sum(self.dropped.values())
        reasons = ", ".join(f"{reason} ({n:,})" for reason, n in self.dropped.most_common() if n)
        raise TextVAEError(f"{source}: nothing left to prepare: {read:,} {unit}{'' if read == 1 else 's'} read, "
                           "none kept" + (f": {reasons}" if reasons else ""))


def clean(paragraphs: list[str]) -> str:
    """Join a poem's paragraphs and strip editorial marks; a described rare character becomes □."""
    text = _RARE.sub("□", "".join(paragraphs).replace(" ", "").replace("\u3000", ""))
    while (stripped := _NOTES.sub("", text)) != text:  # nested notes go from the inside out
        text = stripped
    return text.translate(_MARKS)


def _drop_reason(lines: list[str]) -> str | None:
    if any("□" in line for line in lines):
        return "missing character (□ or {…})"
    if not lines or not all(is_cjk(c) for line in lines for c in line):
        return "non-CJK character"
    if form_of(lines) is None:
        return "irregular form"
    return None


def _poem_key(parts: tuple[str, ...]) -> tuple[str, int] | None:
    match = _POEM_FILE.match(parts[-1])
    if match is None or "error" in parts:
        return None
    if len(parts) >= 2 and parts[-2] in _POEM_DIRS or "strains" in parts:
        return match.group(1), int(match.group(2))
    return None


def read_source(source: Path) -> tuple[dict, dict]:
    """Raw JSON bytes of the poem files and the strains files, keyed by (dynasty, number)."""
    poems, strains = {}, {}
    for parts, read in _members(Path(source)):
        key = _poem_key(parts)
        if key is not None:
            (strains if "strains" in parts else poems)[key] = (read(), "/".join(parts))
    if not poems:
        raise TextVAEError(
            f"no poem files (quantangshi/poet.tang.<N>.json or 全唐诗/poet.tang.<N>.json) found in "
            f"{source}. Pass the chinese-poetry tarball, its extracted folder, or a repository clone."
        )
    return poems, strains


def _members(source: Path):
    if source.is_dir():
        for path in sorted(source.rglob("*.json")):
            yield path.relative_to(source).parts, path.read_bytes
    elif source.is_file():
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".json"):
                        data = tar.extractfile(member).read()
                        yield tuple(member.name.split("/")), (lambda data=data: data)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise TextVAEError(f"{source} is not a readable tarball ({e}). Pass the chinese-poetry "
                               "tarball, its extracted folder, or a repository clone.") from e
    else:
        raise TextVAEError(f"--source {source} does not exist.")


def _load_json(data: bytes, name: str) -> list[dict]:
    try:
        records = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextVAEError(f"{name} is not valid JSON ({e}); the corpus copy is corrupt: "
                           "delete it and download it again.") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TextVAEError(f"{name} is not a list of poem objects; is this the chinese-poetry corpus?")
    return records


def _paragraphs(record: dict, name: str) -> list[str]:
    paragraphs = record.get("paragraphs", record.get("strains"))
    if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
        raise TextVAEError(f"{name}: a record has no list of strings under 'paragraphs' "
                           f"(id {record.get('id')!r}); the file is not in the chinese-poetry layout.")
    return paragraphs


def _strains_by_id(strains: dict) -> dict[str, list[str]]:
    by_id = {}
    for data, name in strains.values():
        for record in _load_json(data, name):
            by_id[record.get("id")] = split_lines(clean(_paragraphs(record, name)))
    return by_id


def _aligned(strain_lines: list[str] | None, lines: list[str]) -> list[str]:
    """The poem's 平仄 lines when they align character for character, else []."""
    if strain_lines and [len(s) for s in strain_lines] == [len(line) for line in lines]:
        return strain_lines
    return []


def parse(source: Path, to_simplified=None) -> Corpus:
    """Read, clean, filter and deduplicate the regular-form poems of a corpus source."""
    poems, strains = read_source(source)
    tones = _strains_by_id(strains)
    corpus = Corpus(texts=[])
    for (dynasty, _), (data, name) in tqdm(sorted(poems.items(), key=lambda kv: (DYNASTIES.index(kv[0][0]), kv[0][1])),
                                          desc="parsing", unit="file", leave=False):
        corpus.files += 1
        for record in _load_json(data, name):
            lines = split_lines(clean(_paragraphs(record, name)))
            reason = _drop_reason(lines)
            if reason:
                corpus.dropped[reason] += 1
                continue
            corpus.texts.append(dict(
                text=join_lines(lines), lines=lines, form=form_of(lines), dynasty=dynasty,
                author=str(record.get("author") or ""), title=str(record.get("title") or ""),
                id=str(record.get("id") or ""), strains=_aligned(tones.get(record.get("id")), lines)))
    if to_simplified is not None:
        _convert(corpus.texts, to_simplified)
    kept = _dedupe(corpus.texts)
    corpus.dropped["duplicate text"] = len(corpus.texts) - len(kept)
    corpus.texts = kept
    return corpus


def _dedupe(poems: list[dict]) -> list[dict]:
    seen, kept = set(), []
    for poem in poems:
        if poem["text"] not in seen:
            seen.add(poem["text"])
            kept.append(poem)
    return kept


def _convert(poems: list[dict], convert) -> None:
    """Apply a str -> str converter (OpenCC t2s) to the text fields, one call per field for speed."""
    for key in ("text", "title", "author"):
        converted = convert("\n".join(p[key].replace("\n", " ") for p in poems)).split("\n")
        for poem, value in zip(poems, converted):
            poem[key] = value
    for poem in poems:
        poem["lines"] = split_lines(poem["text"])
