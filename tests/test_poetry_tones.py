"""textvae.poetry.tones: the tones of characters and the tonal patterns of regulated verse."""

import itertools

import pytest

from textvae.poetry import tones
from textvae.poetry.forms import split_lines

# real Tang poems: 登鸛雀樓 (5x4), 杜甫 絕句 (7x4), 春望 (5x8), all regulated; 靜夜思 is an old-style 絕句
# (古絕) that rhymes but breaks the tonal rules
DENG = "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。"
JUEJU = "兩個黃鸝鳴翠柳，一行白鷺上青天。窗含西嶺千秋雪，門泊東吳萬里船。"
CHUNWANG = "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。"
JINGYE = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
REGULATED = [DENG, JUEJU, CHUNWANG]
FORMS = [(5, 4), (7, 4), (5, 8), (7, 8)]
LETTERS = lambda c: {"p": {"平"}, "z": {"仄"}, "x": {"平", "仄"}}.get(c, set())  # noqa: E731


def _scrambled(poem: str) -> list[str]:
    """Each line rotated by one character: same form, other line ends and tone positions."""
    return [line[1:] + line[0] for line in split_lines(poem)]


def test_tones_come_from_the_rhyme_groups():
    assert tones.char_tones("東") == {"平"} and tones.char_tones("月") == {"仄"}
    assert tones.char_tones("看") == {"平", "仄"}  # 多音字: 上平聲十四寒 and 去聲十五翰
    assert tones.char_tones("x") == frozenset()


@pytest.mark.parametrize("chars,lines", FORMS)
def test_tonal_patterns_follow_the_rules_of_regulated_verse(chars, lines):
    """The patterns are built from four line types; check them against the rules themselves: 二四六
    alternate within a line; a couplet's lines are opposite at the 2nd (對) and consecutive couplets
    the same (粘); even lines end level (平) and rhyme; odd lines after the first end oblique."""
    patterns = tones.tonal_patterns(chars, lines)
    assert len(set(patterns)) == 4
    for p in patterns:
        assert len(p) == lines and all(len(line) == chars for line in p)
        for line in p:
            assert line[1] != line[3] and (chars == 5 or line[3] != line[5])
        for i in range(0, lines, 2):
            assert p[i][1] != p[i + 1][1]
            if i + 2 < lines:
                assert p[i + 1][1] == p[i + 2][1]
        assert all(line[-1] == "平" for line in p[1::2])
        assert all(line[-1] == "仄" for line in p[2::2])
    assert {p[0][1] for p in patterns} == {"平", "仄"}  # 平起 and 仄起
    assert {p[0][-1] for p in patterns} == {"平", "仄"}  # 首句入韻 or not


def test_tonal_pattern_freedom_at_the_first_and_third_positions():
    strict = ["zzppz", "ppzzp", "pppzz", "zzzpp"]  # 仄起, first line not rhyming
    assert tones.follows_tonal_pattern(strict, LETTERS)
    free = ["pzzpz", "zppzp", "pppzz", "zzzpp"]  # 1st and 3rd characters flipped
    assert tones.follows_tonal_pattern(free, LETTERS)
    assert not tones.follows_tonal_pattern(["zpppz"] + strict[1:], LETTERS)  # 2nd character flipped
    assert not tones.follows_tonal_pattern(["zzpzz"] + strict[1:], LETTERS)  # 4th character flipped
    assert not tones.follows_tonal_pattern(strict[:1] + ["ppzzz"] + strict[2:], LETTERS)  # 5th: must end 平
    assert tones.follows_tonal_pattern(["zxpxz", "?pzzp", "pppzz", "zzzpp"], LETTERS)  # both / unknown fit
    assert not tones.follows_tonal_pattern(["zzppz", "ppzzp"], LETTERS)  # not a regular form
    assert not tones.follows_tonal_pattern(strict[:2] * 2, LETTERS)  # first couplet twice: 粘 broken


def test_real_regulated_tang_poems_follow_a_tonal_pattern_and_scrambled_ones_do_not():
    assert tones.tonal_compliance([split_lines(p) for p in REGULATED]) == 1.0
    assert tones.tonal_compliance([_scrambled(p) for p in REGULATED]) == 0.0
    assert not tones.follows_tonal_pattern(split_lines(JINGYE))  # 古絕: old-style
    assert tones.tonal_compliance([]) == 0.0


@pytest.mark.parametrize("chars,lines", FORMS)
def test_fixed_tones_are_exactly_what_the_patterns_fix(chars, lines):
    """A poem that keeps fixed_tones, whatever its free positions hold, follows a pattern; one that breaks a
    single fixed position does not (the reference is follows_tonal_pattern itself)."""
    letter = {"平": "p", "仄": "z"}
    for start in ("平", "仄"):
        fixed = tones.fixed_tones(chars, lines, start)
        assert len(fixed) == lines and fixed[0][1] == start and fixed[1][1] != start
        for fill in ("p", "z"):  # the free positions all 平, then all 仄
            poem = ["".join(letter[t] if t else fill for t in line) for line in fixed]
            assert tones.follows_tonal_pattern(poem, LETTERS), (start, poem)
            for i, j in itertools.product(range(lines), range(chars)):
                if fixed[i][j]:
                    broken = [list(line) for line in poem]
                    broken[i][j] = "z" if broken[i][j] == "p" else "p"
                    assert not tones.follows_tonal_pattern(["".join(x) for x in broken], LETTERS), (start, i, j)
        assert fixed[0][-1] is None  # the first line may rhyme or not
