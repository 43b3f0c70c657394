import pytest

from textvae import rhyme
from textvae.corpus.poems import is_cjk
from textvae.errors import TextVAEError


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
