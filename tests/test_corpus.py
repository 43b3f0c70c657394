"""textvae.corpus: reading the chinese-poetry layouts, cleaning, form filtering, dedupe, plain text files."""

from collections import Counter

import opencc
import pytest

from textvae import corpus
from textvae.corpus.poems import clean
from textvae.errors import TextVAEError
from textvae.poetry import split_lines

# Upstream records keep one couplet per paragraph, in traditional characters.
QINCHUAN = ["秦川雄帝宅，函谷壯皇居。", "綺殿千尋起，離宮百雉餘。",
            "連甍遙接漢，飛觀迥凌虛。", "雲日隱層闕，風煙出綺疎。"]  # 5x8
DENGLOU = ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"]  # 5x4
BAIDI = ["朝辭白帝彩雲間，千里江陵一日還。", "兩岸猿聲啼不住，輕舟已過萬重山。"]  # 7x4
DENGGAO = ["風急天高猿嘯哀，渚清沙白鳥飛回。", "無邊落木蕭蕭下，不盡長江滾滾來。",
           "萬里悲秋常作客，百年多病獨登臺。", "艱難苦恨繁霜鬢，潦倒新停濁酒杯。"]  # 7x8
XILIN = ["橫看成嶺側成峰，遠近高低各不同。", "不識廬山真面目，只緣身在此山中。"]  # 7x4, Song


def poem(paragraphs, id, author="佚名", title="無題"):
    return dict(author=author, paragraphs=list(paragraphs), title=title, id=id)


def canonical(paragraphs):
    return "".join(paragraphs)  # the sample poems above are already in canonical punctuation


def count(dropped, word):
    """How many poems were dropped for the reason whose description contains `word`."""
    return sum(n for reason, n in dropped.items() if word in reason)


def parse_one(make_source, paragraphs):
    return corpus.parse(make_source({"poet.tang.0.json": [poem(paragraphs, "p")]}))


# --- source layouts -----------------------------------------------------------------------------------

STRAINS_QINCHUAN = ["平平平仄仄，平仄仄平平。", "仄仄平平仄，平平仄仄平。",
                    "平平平仄仄，平仄仄平平。", "平仄仄平仄，平平仄仄平。"]
FILES = {
    "poet.tang.0.json": [poem(QINCHUAN, "t0", "太宗皇帝", "帝京篇十首 一"), poem(DENGLOU, "t1", "王之渙", "登鸛雀樓")],
    "poet.tang.10.json": [poem(DENGGAO, "t10", "杜甫", "登高")],
    "poet.tang.2.json": [poem(BAIDI, "t2", "李白", "早發白帝城")],
    "poet.song.0.json": [poem(XILIN, "s0", "蘇軾", "題西林壁")],
    # Neither of these is a poem file: the error/ copies are rejected readings, authors.* has no poems.
    "error/poet.tang.0.json": [poem(["春眠不覺曉，處處聞啼鳥。", "夜來風雨聲，花落知多少。"], "e0")],
    "authors.tang.json": [{"name": "太宗皇帝", "desc": "帝姓李氏"}],
}
STRAINS = {
    "poet.tang.0.json": [{"strains": STRAINS_QINCHUAN, "id": "t0"},
                         {"strains": ["平平平仄仄。"], "id": "t1"}],  # does not align: ignored
    "error/poet.tang.0.json": [{"strains": ["平平平仄仄，仄仄仄平平。"] * 2, "id": "e0"}],
}


@pytest.mark.parametrize("kind", ["tarball", "folder", "github"])
def test_reads_every_source_layout(make_source, kind):
    parsed = corpus.parse(make_source(FILES, STRAINS, kind=kind))
    # Tang before Song, files in numeric order (0, 2, 10), records in file order; error/ ignored.
    assert [p["id"] for p in parsed.texts] == ["t0", "t1", "t2", "t10", "s0"]
    assert parsed.files == 4
    assert [p["dynasty"] for p in parsed.texts] == ["tang"] * 4 + ["song"]
    assert [p["form"] for p in parsed.texts] == ["5x8", "5x4", "7x4", "7x8", "7x4"]
    first = parsed.texts[0]
    assert first["text"] == canonical(QINCHUAN)
    assert first["lines"] == ["秦川雄帝宅", "函谷壯皇居", "綺殿千尋起", "離宮百雉餘",
                              "連甍遙接漢", "飛觀迥凌虛", "雲日隱層闕", "風煙出綺疎"]
    assert (first["author"], first["title"]) == ("太宗皇帝", "帝京篇十首 一")
    assert first["strains"] == split_lines("".join(STRAINS_QINCHUAN))
    assert [p["strains"] for p in parsed.texts[1:]] == [[]] * 4
    assert "春眠不覺曉" not in "".join(p["text"] for p in parsed.texts)


def test_layouts_give_identical_corpora(make_source):
    parsed = [corpus.parse(make_source(FILES, STRAINS, kind=kind, name=kind))
              for kind in ("tarball", "folder", "github")]
    assert parsed[0].texts == parsed[1].texts == parsed[2].texts
    assert parsed[0].dropped == parsed[1].dropped == parsed[2].dropped


def test_source_without_poem_files(tmp_path):
    (tmp_path / "notes.json").write_text("[]")
    with pytest.raises(TextVAEError, match="no poem files"):
        corpus.parse(tmp_path)


def test_unreadable_tarball(tmp_path):
    bogus = tmp_path / "chinese-poetry-2.0.1.tgz"
    bogus.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(TextVAEError, match="not a readable tarball"):
        corpus.parse(bogus)


@pytest.mark.parametrize("content, words", [
    ("[{\"author\": ", "not valid JSON"),
    (b"[\x80]", "not valid JSON"),
    ({"author": "李白", "paragraphs": ["床前明月光，疑是地上霜。"]}, "not a list of poem objects"),
    (["床前明月光"], "not a list of poem objects"),
    ([{"author": "李白", "title": "靜夜思", "id": "x"}], "'paragraphs'"),
    ([{"paragraphs": "床前明月光，疑是地上霜。", "id": "x"}], "'paragraphs'"),
])
def test_malformed_files_name_the_file(make_source, content, words):
    with pytest.raises(TextVAEError, match=words) as error:
        corpus.parse(make_source({"poet.tang.0.json": content}))
    assert "poet.tang.0.json" in str(error.value)


# --- cleaning -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("paragraphs, text", [
    (["白日依山盡（一作樓），黃河入海流。", "欲窮千里目(一作日)，更上一層樓。"], canonical(DENGLOU)),
    (["白日依山〔一作樓〕盡，黃河入海流。", "欲窮千里目，更上〔一〕一層樓。"], canonical(DENGLOU)),
    (["《白日》依山盡，「黃河」入海流。", "『欲窮』千里目，〖更上〗一層樓。"], canonical(DENGLOU)),
    (["白日依山盡（{山/火}），黃河入海流。", "欲窮千里目，更上一層樓。"], canonical(DENGLOU)),
    (["白日 依山盡，黃河\u3000入海流。", "欲窮千里目，更上一層樓。"], canonical(DENGLOU)),
    (["白日依山盡？黃河入海流！", "欲窮千里目；更上一層樓。"], canonical(DENGLOU)),
    (["白日依山盡，黃河入海流，欲窮千里目。", "更上一層樓，"], canonical(DENGLOU)),
    (["白日依山盡，，黃河入海流。。", "欲窮千里目，更上一層樓"], canonical(DENGLOU)),
    (["白日依山𠀀，黃河入海㐀。", "欲窮千里目，更上一層樓。"], "白日依山𠀀，黃河入海㐀。欲窮千里目，更上一層樓。"),
])
def test_cleaning_keeps_the_poem(make_source, paragraphs, text):
    parsed = parse_one(make_source, paragraphs)
    assert [p["text"] for p in parsed.texts] == [text]
    assert parsed.texts[0]["lines"] == split_lines(text)


@pytest.mark.parametrize("paragraphs, reason", [
    (["白日依山{山/火}，黃河入海流。", "欲窮千里目，更上一層樓。"], "missing"),
    (["白日依山□，黃河入海流。", "欲窮千里目，更上一層樓。"], "missing"),
    (["白日依山x，黃河入海流。", "欲窮千里目，更上一層樓。"], "non-CJK"),
    (["白日依山盡，黃河入海流。", "欲窮千里目，更上1層樓。"], "non-CJK"),
    (["白日依山盡：黃河入海流。", "欲窮千里目，更上一層樓。"], "non-CJK"),
    (["白日、依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"], "non-CJK"),
    (["白日依山盡兮，黃河入海流兮。", "欲窮千里目兮，更上一層樓兮。"], "irregular"),  # 6 characters
    (["白日依山盡，黃河入海流。", "欲窮千里目。"], "irregular"),  # 3 lines
    (["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。", "春眠不覺曉，處處聞啼鳥。"], "irregular"),
    (["白日依山盡，黃河入海流。", "朝辭白帝彩雲間，千里江陵一日還。"], "irregular"),  # mixed 5 and 7
    (["白日依山，黃河入海。", "欲窮千里，更上一層。"], "irregular"),  # 4 characters
])
def test_cleaning_drops_the_poem(make_source, paragraphs, reason):
    parsed = parse_one(make_source, paragraphs)
    assert parsed.texts == []
    assert count(parsed.dropped, reason) == 1
    assert sum(parsed.dropped.values()) == 1


def test_nested_notes_are_removed_with_their_content(make_source):
    parsed = parse_one(make_source, ["白日依山盡，黃河入海流。",
                                     "欲窮千里目，更上一層樓。（見《永樂大典》卷三（五函）。）"])
    assert [p["text"] for p in parsed.texts] == [canonical(DENGLOU)]


def test_clean_strips_marks_and_notes():
    assert clean(["「春眠」不覺曉（一作晚），〔處〕處聞啼鳥。"]) == "春眠不覺曉，處聞啼鳥。"
    assert clean(["花落{草/卉}多少"]) == "花落□多少"


def test_drop_reasons_are_counted(make_source):
    records = [poem(DENGLOU, "keep"), poem(["白日依山□，黃河入海流。"] * 2, "a"),
               poem(["白日依山{山/火}，黃河入海流。"] * 2, "b"), poem(["白日ab山盡，黃河入海流。"] * 2, "c"),
               poem(["白日依山盡兮，黃河入海流兮。"] * 2, "d"), poem(["白日依山盡，黃河入海流。"], "e"),
               poem(DENGLOU, "dup")]
    parsed = corpus.parse(make_source({"poet.tang.0.json": records}))
    assert [p["id"] for p in parsed.texts] == ["keep"]
    assert (count(parsed.dropped, "missing"), count(parsed.dropped, "non-CJK"),
            count(parsed.dropped, "irregular"), count(parsed.dropped, "duplicate")) == (2, 1, 2, 1)
    assert sum(parsed.dropped.values()) == len(records) - 1


# --- dedupe -------------------------------------------------------------------------------------------

def test_same_poem_in_two_files_is_kept_once(make_source):
    files = {"poet.tang.0.json": [poem(DENGLOU, "first")],
             "poet.tang.1.json": [poem(BAIDI, "b"), poem(DENGLOU, "again")],
             "poet.song.0.json": [poem(["白日依山盡？黃河入海流！", "欲窮千里目；更上一層樓。"], "variant")]}
    parsed = corpus.parse(make_source(files))
    assert [p["id"] for p in parsed.texts] == ["first", "b"]
    assert count(parsed.dropped, "duplicate") == 2


def test_simplified_conversion_and_dedupe(make_source):
    # 壯/壮 and 裏/裡 are variants that t2s maps to the same characters.
    files = {"poet.tang.0.json": [poem(["秦川雄帝宅，函谷壯皇居。", "花裏千尋起，離宮百雉餘。"], "trad", "太宗皇帝", "帝京篇")],
             "poet.tang.1.json": [poem(["秦川雄帝宅，函谷壮皇居。", "花裡千尋起，離宮百雉餘。"], "variant")]}
    source = make_source(files)
    assert len(corpus.parse(source).texts) == 2

    parsed = corpus.parse(source, to_simplified=opencc.OpenCC("t2s").convert)
    assert [p["id"] for p in parsed.texts] == ["trad"]
    assert count(parsed.dropped, "duplicate") == 1
    only = parsed.texts[0]
    assert only["text"] == "秦川雄帝宅，函谷壮皇居。花里千寻起，离宫百雉余。"
    assert only["lines"] == split_lines(only["text"])
    assert (only["author"], only["title"]) == ("太宗皇帝", "帝京篇")


# --- plain text files ---------------------------------------------------------------------------------

def test_parse_text_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("The cat sat.\n\n  Spaces around.  \nThe cat sat.\n", encoding="utf-8")
    b.write_text("Ünïcödé, 中文 too\r\nThe cat sat.", encoding="utf-8")
    parsed = corpus.parse_text_files([a, b])
    assert [p["text"] for p in parsed.texts] == ["The cat sat.", "Spaces around.", "Ünïcödé, 中文 too"]
    assert [p["source"] for p in parsed.texts] == ["a.txt:1", "a.txt:3", "b.txt:1"]
    assert parsed.files == 2
    assert parsed.dropped == Counter({"duplicate text": 2, "empty line": 1})


def test_parse_text_files_errors(tmp_path):
    with pytest.raises(TextVAEError, match="does not exist"):
        corpus.parse_text_files([tmp_path / "missing.txt"])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(TextVAEError, match="not UTF-8"):
        corpus.parse_text_files([latin1])
