"""textvae.poetry.rhyme: the 平水韻 tables, and whether a poem rhymes."""

import pytest

from textvae.errors import TextVAEError
from textvae.poetry import rhyme
from textvae.poetry.forms import is_cjk, split_lines

# real Tang poems: 登鸛雀樓 (5x4), 杜甫 絕句 (7x4), 春望 (5x8), 靜夜思 (5x4)
DENG = "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。"
JUEJU = "兩個黃鸝鳴翠柳，一行白鷺上青天。窗含西嶺千秋雪，門泊東吳萬里船。"
CHUNWANG = "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。"
JINGYE = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
POEMS = [DENG, JUEJU, CHUNWANG, JINGYE]


def test_the_tables_hold_106_groups_30_of_them_level():
    table = rhyme.rhyme_table()
    assert len(table) == 106
    assert len(rhyme.level_groups()) == 30
    assert all(chars and all(is_cjk(c) for c in chars) for chars in table.values())
    assert len({name[-1] for name in table}) == 106  # heads are unique, so 陽 names one group


@pytest.mark.parametrize("chars,expected", [
    ("霜鄉", True),  # 靜夜思: 下平聲七陽
    ("曉鳥少", True),  # 春曉: 上聲十七篠, an oblique rhyme
    ("流樓", True),  # 登鸛雀樓: 下平聲十一尤
    ("間還山", True),  # 早發白帝城: 上平聲十五刪
    ("光月", False),
    ("光x", False),
    ("", False),
])
def test_rhymes_on_lines_of_known_poems(chars, expected):
    assert rhyme.rhymes(chars) is expected


def test_a_character_with_two_readings_sits_in_both_groups():
    assert rhyme.rhyme_groups("中") == {"上平聲一東", "去聲一送"}
    assert rhyme.rhyme_groups("月") == {"入聲六月"}
    assert rhyme.rhyme_groups("x") == frozenset()


def test_simplified_characters_borrow_the_groups_of_their_traditional_forms():
    assert rhyme.rhyme_groups("东") == rhyme.rhyme_groups("東")
    assert rhyme.rhyme_groups("乡") == rhyme.rhyme_groups("鄉")
    assert rhyme.rhymes("乡光")


@pytest.mark.parametrize("query", ["下平聲七陽", "七陽", "陽", "霜"])
def test_find_group_by_name_number_head_or_member(query):
    assert rhyme.find_group(query) == "下平聲七陽"


def test_find_group_prefers_the_level_reading_and_rejects_nonsense():
    assert rhyme.find_group("中") == "上平聲一東"
    assert rhyme.find_group("董") == "上聲一董"
    with pytest.raises(TextVAEError, match="neither"):
        rhyme.find_group("xyz")


def test_tone_of_tells_level_from_oblique():
    assert rhyme.tone_of("上平聲一東") == rhyme.tone_of("下平聲一先") == rhyme.LEVEL
    assert {rhyme.tone_of(g) for g in ("上聲一董", "去聲一送", "入聲一屋")} == {rhyme.OBLIQUE}


TABLE = {"流": {"下平聲十一尤"}, "樓": {"下平聲十一尤"}, "盡": {"上聲十一軫"}, "目": {"入聲一屋"},
         "看": {"上平聲十四寒", "去聲十五翰"}, "單": {"上平聲十四寒"}}


def test_poem_rhymes_with_a_hand_made_table():
    groups = lambda c: TABLE.get(c, set())  # noqa: E731
    assert rhyme.poem_rhymes(["白日", "黃河流", "欲窮", "一層樓"], groups) is True
    assert rhyme.poem_rhymes(["白日", "黃河流", "欲窮", "千里目"], groups) is False
    assert rhyme.poem_rhymes(["甲", "看", "乙", "單"], groups) is True  # a character with two readings
    assert rhyme.poem_rhymes(["甲", "流", "乙", "無"], groups) is None  # 無 is not in the table
    assert rhyme.poem_rhymes(["甲", "流"], groups) is False  # one even line: nothing to rhyme with
    rate, judged = rhyme.rhyme_rate([["甲", "流", "乙", "樓"], ["甲", "流", "乙", "目"], ["甲", "流", "乙", "無"]], groups)
    assert (rate, judged) == (pytest.approx(0.5), pytest.approx(2 / 3))


def _scrambled(poem: str) -> list[str]:
    """Each line rotated by one character: same form, other line ends."""
    return [line[1:] + line[0] for line in split_lines(poem)]


def test_real_tang_poems_rhyme_and_scrambled_ones_do_not():
    assert rhyme.rhyme_rate([split_lines(p) for p in POEMS]) == (1.0, 1.0)
    assert rhyme.rhyme_rate([_scrambled(p) for p in POEMS]) == (0.0, 1.0)
    assert rhyme.rhyme_rate([]) == (0.0, 0.0)
