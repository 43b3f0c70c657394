"""Simplified input converted whole into the model's traditional script: phrase-aware OpenCC, the variant
forms the vocabulary saw most, and the same reconstructions as the poems typed in traditional."""

from pathlib import Path

import opencc
import pytest

from textvae import generate, poetry
from textvae.tokenizer import Tokenizer

PRETRAINED = Path(__file__).resolve().parent.parent / "data" / "pretrained"

# Ten famous Tang quatrains, typed in traditional characters as the shipped model's corpus writes them. Three
# characters have two traditional forms, and the corpus writes the other one than Taiwan's standard (s2tw):
# 爲 (為, 獨在異鄉), 采 (採, 相思) and 卧 (臥, 涼州詞); the conversion keeps the corpus's form.
FAMOUS = [
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "獨在異鄉爲異客，每逢佳節倍思親。遙知兄弟登高處，遍插茱萸少一人。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
    "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    "空山不見人，但聞人語響。返景入深林，復照青苔上。",
    "渭城朝雨浥輕塵，客舍青青柳色新。勸君更盡一杯酒，西出陽關無故人。",
    "葡萄美酒夜光杯，欲飲琵琶馬上催。醉卧沙場君莫笑，古來征戰幾人回。",
]
# the same poems typed in simplified characters, by hand rather than by OpenCC
FAMOUS_SIMPLIFIED = [
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。",
    "独在异乡为异客，每逢佳节倍思亲。遥知兄弟登高处，遍插茱萸少一人。",
    "红豆生南国，春来发几枝。愿君多采撷，此物最相思。",
    "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。",
    "空山不见人，但闻人语响。返景入深林，复照青苔上。",
    "渭城朝雨浥轻尘，客舍青青柳色新。劝君更尽一杯酒，西出阳关无故人。",
    "葡萄美酒夜光杯，欲饮琵琶马上催。醉卧沙场君莫笑，古来征战几人回。",
]


@pytest.fixture(scope="module")
def model():
    return generate.load_model(PRETRAINED)


def test_the_hand_typed_simplified_poems_are_what_opencc_makes_of_the_traditional():
    to_simplified = opencc.OpenCC("t2s").convert
    assert [to_simplified(p) for p in FAMOUS] == FAMOUS_SIMPLIFIED


@pytest.mark.parametrize("traditional,simplified", list(zip(FAMOUS, FAMOUS_SIMPLIFIED)))
def test_a_famous_poem_typed_in_simplified_converts_to_its_traditional_text(model, traditional, simplified):
    assert poetry.text_script(simplified) == "simplified" and poetry.text_script(traditional) == "traditional"
    assert poetry.to_model_script(model.tokenizer, simplified) == traditional
    assert poetry.to_model_script(model.tokenizer, traditional) == traditional


def test_famous_poems_typed_in_either_script_give_the_same_reconstructions(model):
    assert generate.reconstruct(model, FAMOUS_SIMPLIFIED) == generate.reconstruct(model, FAMOUS)


@pytest.mark.parametrize("typed,traditional", [
    ("朝辞白帝彩云间", "朝辭白帝彩雲間"),  # 云 is also a traditional character: kept as typed it meant "to say"
    ("明月几时有", "明月幾時有"),  # 几 (a small table) as well
    ("前不见古人，后不见来者", "前不見古人，後不見來者"),  # 后 (an empress) as well
    ("皇后", "皇后"),  # no character only one script uses: read as typed
    ("母后来了", "母后來了"),  # phrase-aware: 母后 is a queen mother, not 母後
])
def test_a_simplified_text_is_converted_whole_phrase_by_phrase(model, typed, traditional):
    assert poetry.to_model_script(model.tokenizer, typed) == traditional


@pytest.mark.parametrize("text,script", [("舉頭望明月", "traditional"), ("举头望明月", "simplified"),
                                         ("白日依山", None), ("the moon", None), ("舉头", None),
                                         ("舉頭望明月举", "traditional")])
def test_a_text_s_script_is_the_one_it_holds_more_characters_only_that_script_uses(text, script):
    assert poetry.text_script(text) == script


@pytest.mark.parametrize("common,rare", [("牀", "床"), ("床", "牀")])
def test_where_the_conversions_disagree_the_form_the_vocabulary_saw_most_wins(common, rare):
    # s2t writes 牀 for 床 and s2tw keeps 床: the tokenizer's piece scores say which its corpus used more
    tokenizer = Tokenizer.train([f"{common}前明月光舉頭" * 5, f"{rare}頭"], kind="char", vocab_size=270)
    assert tokenizer.piece_score(tokenizer.piece_to_id(common)) > tokenizer.piece_score(tokenizer.piece_to_id(rare))
    assert poetry.writing.convert(tokenizer, "床前举头", "traditional") == f"{common}前舉頭"


def test_a_character_no_conversion_knows_is_kept(model):
    assert poetry.to_model_script(model.tokenizer, "举头望月☃") == "舉頭望月☃"
