"""textvae.poetry.forms: the regular forms, lines and their punctuation, the CJK pieces of a vocabulary."""

import pytest

from textvae.poetry import forms
from textvae.tokenizer import Tokenizer

DENG = "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。"
JUEJU = "兩個黃鸝鳴翠柳，一行白鷺上青天。窗含西嶺千秋雪，門泊東吳萬里船。"
CHUNWANG = "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。"
JINGYE = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
DENGGAO = "風急天高猿嘯哀，渚清沙白鳥飛回。無邊落木蕭蕭下，不盡長江滾滾來。萬里悲秋常作客，百年多病獨登臺。" \
          "艱難苦恨繁霜鬢，潦倒新停濁酒杯。"
POEMS = [DENG, JUEJU, CHUNWANG, JINGYE, DENGGAO]


@pytest.mark.parametrize("lengths, form", [
    ([5] * 4, "5x4"), ([7] * 4, "7x4"), ([5] * 8, "5x8"), ([7] * 8, "7x8"),
    ([6] * 4, None), ([6] * 8, None), ([4] * 4, None), ([5] * 3, None), ([5] * 6, None), ([7] * 2, None),
    ([5, 5, 7, 7], None), ([5] * 7 + [7], None), ([], None),
])
def test_form_of(lengths, form):
    assert forms.form_of(["字" * n for n in lengths]) == form
    assert form is None or form in forms.FORMS


def test_split_and_join_lines():
    assert forms.split_lines("甲乙？丙丁！戊己；庚辛。壬癸，") == ["甲乙", "丙丁", "戊己", "庚辛", "壬癸"]
    assert forms.split_lines("，。") == []
    assert forms.join_lines(["甲乙", "丙丁", "戊己", "庚辛"]) == "甲乙，丙丁。戊己，庚辛。"
    assert all(forms.join_lines(forms.split_lines(p)) == p for p in POEMS)


def test_form_compliance_accepts_the_four_regular_forms_only():
    poems = [forms.split_lines(p) for p in POEMS]
    assert forms.form_compliance(poems) == 1.0
    irregular = [["白日依山盡", "黃河入海流", "欲窮千里目"], ["白日依山盡", "黃河入海流。欲", "窮千里目", "更上一層樓"],
                 ["白日依山盡", "黃河入海流黃河"] * 2, [], ["一二三四五六"] * 4]
    assert forms.form_compliance(irregular) == 0.0
    assert forms.form_compliance(poems[:2] + irregular[:2]) == 0.5
    assert forms.form_compliance([]) == 0.0


def test_real_poems_have_a_regular_form_and_reflowed_ones_do_not():
    reflowed = []  # the same characters cut into lines one character longer
    for poem in POEMS:
        chars = "".join(forms.split_lines(poem))
        width = len(forms.split_lines(poem)[0]) + 1
        reflowed.append([chars[i:i + width] for i in range(0, len(chars), width)])
    assert forms.form_compliance(reflowed) == 0.0


def test_the_cjk_mask_holds_the_one_character_chinese_pieces_only():
    tokenizer = Tokenizer.train(POEMS, kind="char", vocab_size=400)
    mask = forms.cjk_mask(tokenizer)
    pieces = {tokenizer.id_to_piece(i) for i in mask.nonzero()[:, 0].tolist()}
    assert pieces == set("".join(forms.split_lines("".join(POEMS))))  # every character, no ，。 or specials
    assert not any(mask[i] for i in range(tokenizer.vocab_size) if tokenizer.is_byte(i))
