"""Given words: the keyword constraint places every word within one line of every poem, around forms, rhyme and
meter, on a tiny untrained model (the hardest case: it never writes a word by itself); its feasibility search
against brute force; and the one-line errors for words that cannot be written."""

import itertools

import pytest
import torch

from textvae.errors import TextVAEError
from textvae.generate import Decoding, constraint_for, sample
from textvae.poetry import form_of, split_lines
from textvae.poetry.keywords import Keywords, parse
from textvae.tokenizer import Tokenizer
from tiny_poems import POEMS, tiny

RARE = "喆犇鑫"  # characters with no 平水韻 group, so no known tone: they fit only where the meter leaves a place free


@pytest.fixture(scope="module")
def model():
    tokenizer = Tokenizer.train([*POEMS, RARE], kind="char", vocab_size=600)
    return tiny(tokenizer)


def holds(poem: str, word: str) -> bool:
    return any(word in line for line in split_lines(poem))


@pytest.mark.parametrize("form,words,options", [
    ("5x4", "月,江,酒", {}),
    ("7x8", "春風,明月,山,雲", {}),
    ("auto", "白日,黃河", {}),
    ("drawn", "故鄉", dict(meter=True)),
    ("5x4", "月,山", dict(meter=True, rhyme=True)),
    ("auto", "明月,江", dict(meter=True, rhyme=True)),
])
def test_every_poem_holds_every_word_within_a_line_and_keeps_its_form(model, form, words, options):
    constraint = constraint_for(model.tokenizer, form, keywords=words, **options)
    poems = sample(model, 24, constraint=constraint, seed=0, decoding=Decoding(strategy="sample"))
    for poem in poems:
        assert form_of(split_lines(poem)) is not None, poem
        assert form in ("auto", "drawn") or form_of(split_lines(poem)) == form
        assert all(holds(poem, w) for w in parse(words)), poem
    if "rhyme" in options:  # words never take a rhyme place, so the even lines still end in one group
        assert constraint.relaxed["keyword"] == 0


def test_words_under_the_meter_sit_only_where_their_tones_fit(model):
    constraint = constraint_for(model.tokenizer, "5x4", keywords="喆", meter=True)
    places = constraint._places("5x4", 0)
    free = [p for p, (line, col, tones) in enumerate(places) if tones == (0,) and not (col == 4 and line % 2)]
    assert free and [p for p in range(len(places)) if constraint._can_start("5x4", 0, 0, p)] == free


def test_without_meter_words_still_keep_to_the_regular_tones_unless_they_cannot(model):
    fitting = constraint_for(model.tokenizer, "5x4", keywords="喆")
    assert fitting.fitting and not any(fitting._can_start("5x4", None, 0, p) for p in (9, 19))  # even lines' ends
    plain = constraint_for(model.tokenizer, "5x4", keywords=RARE)  # no tone of its own: it fits no regular place
    assert not plain.fitting
    poems = sample(model, 8, constraint=plain, seed=0, decoding=Decoding(strategy="sample"))
    assert all(holds(poem, RARE) for poem in poems)


def brute_fits(constraint: Keywords, form: str, start, left: frozenset, p: int) -> bool:
    """Whether the words fit, by trying every choice of start places."""
    words = sorted(left)
    places = range(p, len(constraint._places(form, start)))
    for starts in itertools.product(places, repeat=len(words)):
        spans = [set(range(s, s + len(constraint.words[w]))) for w, s in zip(words, starts)]
        if all(constraint._can_start(form, start, w, s) for w, s in zip(words, starts)) and \
                sum(map(len, spans)) == len(set().union(*spans)):
            return True
    return False


@pytest.mark.parametrize("words,options", [("月,江,酒", {}), ("春風,明月,山", dict(meter=True, rhyme=True)),
                                           ("白日依,山", dict(rhyme=True))])
def test_the_feasibility_search_agrees_with_brute_force(model, words, options):
    constraint = constraint_for(model.tokenizer, "5x4", keywords=words, **options)
    start = 0 if options.get("meter") else None
    every = frozenset(range(len(constraint.words)))
    for p in range(0, 20, 3):
        for k in range(1, len(every) + 1):
            for left in map(frozenset, itertools.combinations(every, k)):
                assert constraint._fits("5x4", start, left, p) == brute_fits(constraint, "5x4", start, left, p)


@pytest.mark.parametrize("words,options,message", [
    ("月,江,酒,山,雲", {}, "give 1 to 4 keywords, not 5"),  # a poem has at least 4 lines: one word each fits
    ("明月光", dict(form="free"), "needs a poem"),
    ("明月光芒", {}, "has 4 characters"),
    ("月,龘", {}, "'龘', which is not a Chinese character in this model's vocabulary"),
    (RARE, dict(meter=True), f"the keyword '{RARE}' fits no place of a 5x4 poem under the meter's tones"),
    ("月", dict(acrostic="春山白日"), "keywords and an acrostic"),
])
def test_words_that_cannot_be_written_are_one_line_errors_before_any_work(model, words, options, message):
    options = {"form": "5x4", **options}
    with pytest.raises(TextVAEError, match=message) as error:
        constraint_for(model.tokenizer, keywords=words, **options)
    assert "\n" not in str(error.value)


def test_the_keyword_boost_leaves_rows_free_to_write_before_the_deadline(model):
    constraint = constraint_for(model.tokenizer, "7x4", keywords="月")
    state = constraint.init_state(2)
    bias = constraint.bias(0, state).dense()
    month = model.tokenizer.piece_to_id("月")
    assert torch.all(bias[:, month] == constraint.boost)
    assert int((bias == 0).sum()) > 2  # other characters stay allowed: nothing is forced at the start


def test_no_rule_is_reported_as_given_way_when_none_did(model):
    constraint = constraint_for(model.tokenizer, "5x4", keywords="月,山", meter=True, rhyme=True)
    sample(model, 8, constraint=constraint, seed=0, decoding=Decoding(strategy="sample"))
    assert "keyword" not in constraint.relaxed  # the CLI warns about every rule named there
