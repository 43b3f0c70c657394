"""textvae.tokenizer: lossless round trips on any string, fixed special ids, one piece per character."""

import pytest
from hypothesis import given, settings, strategies as st

from textvae.errors import TextVAEError
from textvae.tokenizer import Tokenizer, WordTokenizer, load_tokenizer

POEMS = ["秦川雄帝宅，函谷壯皇居。綺殿千尋起，離宮百雉餘。連甍遙接漢，飛觀迥凌虛。雲日隱層闕，風煙出綺疎。",
         "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
         "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
         "橫看成嶺側成峰，遠近高低各不同。不識廬山真面目，只緣身在此山中。"]
ENGLISH = ["The quick brown fox jumps over the lazy dog.",
           "A stitch in time saves nine, or so they say.",
           "Rain fell on 3 roofs and 12 gardens in the old town.",
           "She said: \"mixed text 混合文本 works too\".",
           "Numbers like 2024 are split into digits."] * 4

TRICKY = ["", " ", "   ", " leading", "trailing ", "two  spaces", "a\tb", "line\nbreak", "\r\n", "nul\x00byte",
          "emoji 😀👍🏽", "\u2581", "▁▁ ▁x▁", "e\u0301 n\u0303 a\u0308", "שלום עולם", "مرحبا بالعالم",
          "<s>", "</s>", "<unk>", "<pad>", " ⁇ ", "\u3000全角\u3000", "\ufeffbom", "\U0010ffff", "\ufffd",
          "秦川雄帝宅", "𠀀㐀", "，。？！；", "Zürich ölçü"]

# Any string: every code point but surrogates, with the interesting ones made common.
ANY_TEXT = st.text(st.one_of(st.characters(exclude_categories=("Cs",)),
                             st.sampled_from(" \t\n\x00\u2581\u0301，。秦😀")))


@pytest.fixture(scope="module")
def char_tok():
    return Tokenizer.train(POEMS, kind="char", vocab_size=8000)


@pytest.fixture(scope="module")
def unigram_tok():
    return Tokenizer.train(ENGLISH, kind="unigram", vocab_size=8000)


@pytest.fixture(params=["char", "unigram"])
def tok(request, char_tok, unigram_tok):
    return {"char": char_tok, "unigram": unigram_tok}[request.param]


def test_special_ids(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert (tok.sp.pad_id(), tok.sp.unk_id(), tok.sp.bos_id(), tok.sp.eos_id()) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky_strings(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert not {tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id} & set(ids)


@settings(max_examples=150, deadline=None, database=None)
@given(text=ANY_TEXT)
def test_round_trip_any_string(char_tok, unigram_tok, text):
    for tok in (char_tok, unigram_tok):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert not {tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id} & set(ids)


@settings(max_examples=30, deadline=None, database=None)
@given(texts=st.lists(ANY_TEXT, max_size=5))
def test_encode_batch_matches_encode(char_tok, texts):
    assert char_tok.encode_batch(texts) == [char_tok.encode(t) for t in texts]


def test_decode_skips_specials(tok):
    ids = tok.encode("白日 依山盡")
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id, tok.pad_id]) == "白日 依山盡"


def test_punctuation_is_one_ordinary_token(char_tok):
    for mark in "，。":
        ids = char_tok.encode(mark)
        assert len(ids) == 1
        assert not (char_tok.is_byte(ids[0]) or char_tok.sp.is_control(ids[0]) or char_tok.sp.is_unknown(ids[0]))
        assert char_tok.id_to_piece(ids[0]) == mark


def test_every_training_character_is_its_own_piece(char_tok):
    training = "".join(POEMS)
    for char in set(training):
        assert char_tok.encode(char) == [char_tok.piece_to_id(char)], char
        assert not char_tok.is_byte(char_tok.piece_to_id(char))
    assert char_tok.unknown_characters(training) == []
    assert all(len(char_tok.encode(p)) == len(p) for p in POEMS)


def test_unseen_characters_fall_back_to_bytes(char_tok):
    assert char_tok.unknown_characters("秦 川x😀") == ["x", "😀"]
    ids = char_tok.encode("😀")
    assert len(ids) == 4 and all(char_tok.is_byte(i) for i in ids)


def test_vocab_size_is_an_upper_bound(char_tok, unigram_tok):
    specials_and_bytes = 4 + 256
    assert specials_and_bytes < char_tok.vocab_size < 8000
    assert specials_and_bytes < unigram_tok.vocab_size < 8000


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.model"
    tok.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.model"]  # no temporary file left
    loaded = Tokenizer.load(path)
    assert loaded.model_proto == tok.model_proto
    assert loaded.vocab_size == tok.vocab_size
    texts = POEMS + ENGLISH[:5] + TRICKY
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    tok.save(path)  # overwriting an existing file works too
    assert Tokenizer.load(str(path)).model_proto == tok.model_proto


def test_load_errors(tmp_path):
    with pytest.raises(TextVAEError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(TextVAEError, match="not a SentencePiece model"):
        Tokenizer.load(garbage)


@pytest.mark.parametrize("texts, kind, words", [
    (POEMS, "bpe", "kind must be one of"),
    (POEMS, "char", "vocab_size must be at least"),
    ([], "char", "empty corpus"),
    (["", ""], "unigram", "empty corpus"),
])
def test_train_errors(texts, kind, words):
    with pytest.raises(TextVAEError, match=words):
        Tokenizer.train(texts, kind=kind, vocab_size=100 if "vocab" in words else 8000)


# -----------------------------------------------------------------------------
# the closed word vocabulary (PTB)

WORDS = ["the", "<unk>", "N", "company", "said", "it", "'s", "mr.", "a", "loss"]
SENTENCES = st.lists(st.sampled_from([w for w in WORDS if w != "<unk>"]), max_size=30)


@pytest.fixture(scope="module")
def word_tok():
    return WordTokenizer(WORDS)


def test_word_ids_are_specials_then_the_vocabulary_in_order(word_tok):
    assert (word_tok.pad_id, word_tok.unk_id, word_tok.bos_id, word_tok.eos_id) == (0, 1, 2, 3)
    assert word_tok.vocab_size == 4 + len(WORDS) - 1  # the corpus's <unk> is the unk id
    assert word_tok.piece_to_id("<unk>") == word_tok.unk_id
    assert [word_tok.id_to_piece(i) for i in range(4, word_tok.vocab_size)] == [w for w in WORDS if w != "<unk>"]


@given(SENTENCES)
def test_words_round_trip(word_tok, words):
    text = " ".join(words)
    ids = word_tok.encode(text)
    assert len(ids) == len(words) and min(ids, default=4) >= 4
    assert word_tok.decode(ids) == text
    assert word_tok.decode([word_tok.bos_id, *ids, word_tok.eos_id, word_tok.pad_id]) == text


def test_words_outside_the_vocabulary_become_unk(word_tok):
    ids = word_tok.encode("  the   zebra said\tit\n")  # any whitespace separates words
    assert ids == [word_tok.piece_to_id("the"), word_tok.unk_id, word_tok.piece_to_id("said"), word_tok.piece_to_id("it")]
    assert word_tok.decode(ids) == "the <unk> said it"
    assert word_tok.unknown_characters("the zebra and the yak") == ["and", "yak", "zebra"]
    assert word_tok.encode_batch(["the loss", "zebra"]) == [word_tok.encode("the loss"), [word_tok.unk_id]]


def test_word_vocabulary_save_load_round_trip(word_tok, char_tok, tmp_path):
    word_tok.save(tmp_path / "words.model")
    char_tok.save(tmp_path / "chars.model")
    loaded = load_tokenizer(tmp_path / "words.model")
    assert isinstance(loaded, WordTokenizer) and loaded.model_proto == word_tok.model_proto
    assert loaded.pieces == word_tok.pieces
    assert load_tokenizer(tmp_path / "chars.model").model_proto == char_tok.model_proto  # SentencePiece still loads


@pytest.mark.parametrize("words, message", [(["a", "b", "a"], "twice"), (["two words"], "whitespace-free"),
                                            ([""], "whitespace-free")])
def test_bad_word_vocabularies(words, message):
    with pytest.raises(TextVAEError, match=message):
        WordTokenizer(words)


def test_a_damaged_word_vocabulary_is_named(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b'{"kind": "words", "wor')
    with pytest.raises(TextVAEError, match="not a word vocabulary"):
        load_tokenizer(path)
