"""The tones (平仄) of characters and the tonal patterns of regulated verse (近體詩).

A character's tones are those of the 平水韻 groups it sits in: {平}, {仄}, both for a character with
readings in both (看, 思), none when the tables lack it. The patterns and the rule they follow are
Wang Li 王力, 《漢語詩律學》 1958: 二四六分明 (the 2nd, 4th and 6th characters alternate and are fixed),
一三五不論 (the 1st, 3rd, 5th are free), 對 (a couplet's lines opposite at the 2nd), 黏 (consecutive
couplets the same at the 2nd), even lines end level and rhyme, odd lines after the first end oblique.
"""

from collections.abc import Callable, Iterable, Sequence

from textvae.poetry.forms import form_of
from textvae.poetry.rhyme import OBLIQUE, rhyme_groups, tone_of

_A, _B, _C, _D = "仄仄平平仄", "平平仄仄平", "平平平仄仄", "仄仄仄平平"  # the four five-character line types
_QUATRAINS = ((_A, _B, _C, _D), (_D, _B, _C, _D), (_C, _D, _A, _B), (_B, _D, _A, _B))


def char_tones(char: str) -> frozenset[str]:
    """The tones a character can take: 平 and/or 仄, from its rhyme groups (empty when unknown)."""
    return frozenset(tone_of(g) for g in rhyme_groups(char))


def tonal_patterns(chars: int, lines: int) -> list[tuple[str, ...]]:
    """The four standard 近體詩 patterns for a form (5 or 7 characters, 4 or 8 lines), one string of
    平/仄 per line: 仄起 or 平起 (the tone of the 2nd character of a five-character first line), with the
    first line rhyming (首句入韻) or not. A regulated verse (律詩) continues its quatrain with the
    non-rhyming quatrain of the same start; a seven-character line puts before the five-character one
    two characters of the opposite tone (仄仄平平仄 -> 平平仄仄平平仄)."""
    patterns = []
    for quatrain in _QUATRAINS:
        poem = quatrain
        if lines == 8:
            poem += _QUATRAINS[0] if quatrain[1] == _B else _QUATRAINS[2]
        if chars == 7:
            poem = tuple(("平平" if line[0] == OBLIQUE else "仄仄") + line for line in poem)
        patterns.append(poem)
    return patterns


def follows_tonal_pattern(lines: Sequence[str], tones: Callable[[str], Iterable[str]] = char_tones) -> bool:
    """Whether a poem fits one of the four standard 近體詩 patterns of its form (`tonal_patterns`).

    The rule: every character must have its pattern's tone except at the free positions of
    一三五不論 — the 1st and 3rd characters of a five-character line, the 1st, 3rd and 5th of a
    seven-character line — while the 2nd, 4th, (6th) and last are fixed (二四六分明). `tones(char)` gives
    the tones a character can take ({平}, {仄}, both for a character with readings in both, as 看 or 思,
    and none when unknown); a character with both tones, or none known, fits either. The whole poem,
    all lines, must follow one pattern (the 粘對 alternation is built into the patterns). The finer
    rules (孤平, 三平尾, 拗救) are not checked. A poem of no regular form does not comply.
    """
    form = form_of(list(lines))
    if form is None:
        return False
    chars, count = (int(x) for x in form.split("x"))
    free = {0, 2} if chars == 5 else {0, 2, 4}
    known = [[set(tones(c)) for c in line] for line in lines]

    def fits(line_tones, pattern):
        return all(i in free or not t or pattern[i] in t for i, t in enumerate(line_tones))

    return any(all(fits(t, p) for t, p in zip(known, pattern)) for pattern in tonal_patterns(chars, count))


def fixed_tones(chars: int, lines: int, start: str) -> list[list[str | None]]:
    """The tone each position of a form must take under a start (平起: the first line's 2nd character is
    平; 仄起: it is 仄), per line: 平 or 仄 where every pattern of that start agrees (二四六分明 and the line
    ends), None where they leave it free (一三五不論, and the first line's end: rhymed or not)."""
    free = {0, 2} if chars == 5 else {0, 2, 4}
    patterns = [p for p in tonal_patterns(chars, lines) if p[0][1] == start]
    return [[None if i in free or len({p[line][i] for p in patterns}) > 1 else patterns[0][line][i]
             for i in range(chars)] for line in range(lines)]


def tonal_compliance(poems: Sequence[Sequence[str]], tones: Callable[[str], Iterable[str]] = char_tones) -> float:
    """Share of poems that follow a standard tonal pattern (`follows_tonal_pattern`)."""
    return sum(follows_tonal_pattern(lines, tones) for lines in poems) / len(poems) if poems else 0.0


__all__ = ["char_tones", "fixed_tones", "follows_tonal_pattern", "tonal_compliance", "tonal_patterns"]
