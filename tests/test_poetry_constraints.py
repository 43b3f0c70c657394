"""textvae.poetry.constraints: decoding under Verse makes every output a poem of its form, acrostic, rhyme and
meter, whatever the model wants; the automatic form takes the model's line length; rules relax and count, never
crash."""

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_poems import tiny

from textvae import generate
from textvae.errors import TextVAEError
from textvae.generate import Decoding
from textvae.data import pad_batch
from textvae.poetry import (Constraint, Verse, char_tones, follows_tonal_pattern, form_of, is_cjk, join_lines, rhyme_groups,
                            rhyme_rate, rhyme_table, rhymes, split_lines, tone_of)
from textvae.poetry.constraints import CORPUS_FORMS, tone_masks
from textvae.tokenizer import EOS_ID, Tokenizer

POEMS = [
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "月落烏啼霜滿天，江楓漁火對愁眠。姑蘇城外寒山寺，夜半鐘聲到客船。",
    "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。",
    "風急天高猿嘯哀，渚清沙白鳥飛回。無邊落木蕭蕭下，不盡長江滾滾來。萬里悲秋常作客，百年多病獨登臺。"
    "艱難苦恨繁霜鬢，潦倒新停濁酒杯。",
]
FORMS = ["5x4", "7x4", "5x8", "7x8"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(POEMS, kind="char", vocab_size=1000)


def hot(strategy="sample"):
    # an untrained model, hot: it wanders everywhere (beam search has no temperature: it keeps the best)
    return Decoding(strategy=strategy, temperature=3.0 if strategy == "sample" else 1.0)


def assert_poem(text, form, tok):
    """A regular poem of the form (any regular one for None): ，and 。in place, only vocabulary characters."""
    lines = split_lines(text)
    assert form_of(lines) == form if form else form_of(lines) is not None, text
    assert join_lines(lines) == text, text  # ，and 。exactly where they belong, nothing else
    assert all(is_cjk(c) and tok.piece_to_id(c) != tok.unk_id for line in lines for c in line), text


def rhyme_chars(text):
    return [line[-1] for line in split_lines(text)[1::2]]

# -----------------------------------------------------------------------------
# form and acrostic


@pytest.mark.parametrize("decoder", ["gru", "lstm", "transformer"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), form=st.sampled_from(FORMS + [None]), temperature=st.floats(0.5, 5.0))
def test_every_sample_of_an_untrained_model_has_the_form(tok, decoder, seed, form, temperature):
    model = tiny(tok, decoder=decoder)
    decoding = Decoding(strategy="sample", temperature=temperature)  # hot: wander over the whole vocabulary
    for text in generate.sample(model, 16, decoding=decoding, constraint=Verse(tok, form), seed=seed):
        assert_poem(text, form, tok)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_the_form_holds_against_a_model_that_wants_specials_bytes_and_punctuation(tok, strategy):
    model = tiny(tok)
    with torch.no_grad():  # push the untrained decoder towards everything a poem must not contain
        bias = model.decoder.lm_head.bias
        bias[[0, 1, 2, EOS_ID, tok.piece_to_id("，"), tok.piece_to_id("。")]] = 40.0
        bias[[i for i in range(tok.vocab_size) if tok.is_byte(i)]] = 30.0
    for form in FORMS + [None]:
        for text in generate.sample(model, 8, decoding=Decoding(strategy=strategy), constraint=Verse(tok, form),
                                    seed=0):
            assert_poem(text, form, tok)


def _quatrain_odds(chars: int) -> float:
    return CORPUS_FORMS[f"{chars}x4"] / (CORPUS_FORMS[f"{chars}x4"] + CORPUS_FORMS[f"{chars}x8"])


def test_the_automatic_form_takes_the_line_length_from_the_model_and_the_count_from_the_corpus(tok):
    model = tiny(tok)
    with torch.no_grad():  # about as likely to end a line where it may as to go on
        model.decoder.lm_head.bias[[tok.piece_to_id("，"), EOS_ID]] = float(torch.log(Verse(tok).cjk.sum()))
    forms = Counter(form_of(split_lines(t)) for t in generate.sample(model, 200, constraint=Verse(tok), seed=0))
    assert set(forms) == set(FORMS) and min(forms.values()) > 10, forms
    for bias, chars in ((40.0, 5), (-40.0, 7)):  # a model that ends its lines as soon as it may, or never wants to
        with torch.no_grad():
            model.decoder.lm_head.bias[[tok.piece_to_id("，"), tok.piece_to_id("。"), EOS_ID]] = bias
        forms = Counter(form_of(split_lines(t)) for t in generate.sample(model, 400, constraint=Verse(tok), seed=0))
        assert set(forms) == {f"{chars}x4", f"{chars}x8"}, forms  # its line length, both counts
        # whatever the model would do at line 4: the corpus's odds (binomial standard error 2.5 points at n = 400)
        assert abs(forms[f"{chars}x4"] / 400 - _quatrain_odds(chars)) < 0.08, forms


def test_a_model_that_knows_its_poems_writes_their_lines_under_the_automatic_form(tok):
    """The automatic form keeps each learnt poem's line length; only the line count is drawn, so a decoding
    and its poem agree on the lines they both have."""
    model = tiny(tok).train()
    ids, mask = pad_batch(tok.encode_batch(POEMS))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        out = model(ids, mask)
        loss = (out.rec + 0.1 * out.kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        z = model.encode(ids, mask).mode
    assert generate.decode(model, z) == POEMS  # free decoding: the model has learnt them
    for decoding in (Decoding(), Decoding(strategy="beam", beam=3)):
        for poem, text in zip(POEMS, generate.decode(model, z, decoding=decoding, constraint=Verse(tok))):
            lines, got = split_lines(poem), split_lines(text)
            assert got[:4] == lines[:4] and form_of(got)[0] == form_of(lines)[0], (poem, text)


def test_drawn_forms_follow_the_corpus_shares(tok):
    texts = generate.sample(tiny(tok), 2000, constraint=Verse(tok, drawn=True), seed=0)
    forms = Counter(form_of(split_lines(t)) for t in texts)
    total = sum(CORPUS_FORMS.values())
    for form, count in CORPUS_FORMS.items():  # binomial standard error ~1 point at n = 2,000: allow 3.5
        assert abs(forms[form] / len(texts) - count / total) < 0.035, forms
    eight = generate.sample(tiny(tok), 50, constraint=Verse(tok, acrostic="白日依山黃河入海", drawn=True), seed=0)
    assert {form_of(split_lines(t)) for t in eight} == {"5x8", "7x8"}


@pytest.mark.parametrize("form,acrostic", [("5x4", "春花山月"), ("7x8", "白日依山黃河入海"), (None, "千山鳥飛")])
def test_acrostic_characters_start_the_lines(tok, form, acrostic):
    model = tiny(tok)
    for strategy in ("sample", "beam"):
        constraint = Verse(tok, form, acrostic=acrostic)
        for text in generate.sample(model, 6, decoding=hot(strategy), constraint=constraint, seed=1):
            assert_poem(text, form, tok)
            assert "".join(line[0] for line in split_lines(text)) == acrostic


def test_for_text_keeps_a_regular_poem_s_form_and_checks_a_given_one(tok):
    auto = Verse(tok)
    assert auto.for_text(POEMS[0]).form == "5x4" and auto.for_text(POEMS[-1]).form == "7x8"
    assert auto.for_text(POEMS[0]) is auto.for_text(POEMS[1])  # one object per form: its rows decode together
    assert auto.for_text("床前明月光") is auto  # not a regular poem: the form stays automatic
    fixed = Verse(tok, "5x4")
    assert fixed.for_text(POEMS[0]) is fixed
    with pytest.raises(TextVAEError, match="does not fit the form 5x4"):
        fixed.for_text(POEMS[5])
    with pytest.raises(TextVAEError, match="has 4 characters but a 5x8 poem has 8 lines"):
        Verse(tok, acrostic="春花山月").for_text(POEMS[7])


@pytest.mark.parametrize("make", [lambda tok: Verse(tok, rhyme="auto", meter=True), Verse,
                                  generate.FreeText, lambda tok: generate.constraint_for(tok, "drawn", rhyme=True)])
def test_every_constraint_follows_the_protocol(tok, make):
    constraint = make(tok)
    assert isinstance(constraint, Constraint) and isinstance(constraint.for_text(POEMS[0]), Constraint)
    state = constraint.init_state(3)
    for t in range(2):  # one pass through what a decoding loop calls, the bias of every row a (V,) mask
        assert constraint.bias(t, state).dense().shape[-1] == tok.vocab_size
        tokens = torch.full((3,), constraint.forced(t, state) or tok.piece_to_id("春"))
        state = constraint.reorder_state(constraint.update(t, tokens, state), torch.tensor([2, 0, 1]))

# -----------------------------------------------------------------------------
# rhyme


@pytest.mark.parametrize("form", FORMS + [None])
def test_auto_rhyme_ends_the_even_lines_in_one_level_group_without_repeats(tok, form):
    model = tiny(tok, decoder="transformer")
    for text in generate.sample(model, 16, constraint=Verse(tok, form, rhyme="auto"), seed=2):
        assert_poem(text, form, tok)
        ends = rhyme_chars(text)
        shared = set.intersection(*(set(rhyme_groups(c)) for c in ends))
        assert any(tone_of(g) == "平" for g in shared), text
        # the first group a line-2 character belongs to decides; it has enough characters here for no repeats
        group = min(shared, key=list(rhyme_table()).index)
        available = {c for c in rhyme_table()[group] if tok.piece_to_id(c) != tok.unk_id}
        assert len(set(ends)) == min(len(ends), len(available)), text


def test_a_named_group_constrains_every_even_line_and_repeats_only_when_it_runs_out(tok):
    group = rhyme_table()["上平聲五微"]
    available = {c for c in group if tok.piece_to_id(c) != tok.unk_id}
    assert 2 <= len(available) < 4  # fewer than the 4 rhymes of a 5x8: the last ones must repeat
    constraint = Verse(tok, "5x8", rhyme="微")
    for text in generate.sample(tiny(tok), 16, constraint=constraint, seed=3):
        ends = rhyme_chars(text)
        assert set(ends) <= group and len(set(ends)) == len(available), text
    assert constraint.relaxed["rhyme repeat"] == 16 * (4 - len(available))


def test_random_rhyme_groups_rhyme_and_differ_between_poems(tok):
    texts = generate.sample(tiny(tok), 32, constraint=Verse(tok, "7x4", rhyme="random"), seed=4)
    assert all(rhymes(rhyme_chars(t)) for t in texts)
    assert len({frozenset(rhyme_groups(rhyme_chars(t)[0])) for t in texts}) > 1


def test_a_group_missing_from_the_vocabulary_warns_and_leaves_rhymes_to_the_model(tok):
    with pytest.warns(UserWarning, match="下平聲十五咸"):
        texts = generate.sample(tiny(tok), 4, constraint=Verse(tok, "5x4", rhyme="咸"), seed=0)
    assert all(form_of(split_lines(t)) == "5x4" for t in texts)

# -----------------------------------------------------------------------------
# meter


def test_tone_masks_admit_a_character_by_any_of_its_readings(tok):
    masks = tone_masks(tok)
    for i in range(tok.vocab_size):
        piece = tok.id_to_piece(i)
        if len(piece) == 1 and is_cjk(piece):
            assert masks[1, i] == ("平" in char_tones(piece)) and masks[2, i] == ("仄" in char_tones(piece)), piece
    assert masks[0].all() and masks[1, tok.piece_to_id("，")] and masks[2, EOS_ID]  # no tone for marks


@pytest.mark.parametrize("form", FORMS + [None, "drawn"])
@pytest.mark.parametrize("rhyme", [None, "auto"])
@pytest.mark.parametrize("strategy", ["sample", "beam"])
def test_every_meter_steered_poem_follows_a_tonal_pattern(tok, form, rhyme, strategy):
    constraint = Verse(tok, None if form == "drawn" else form, rhyme=rhyme, meter=True, drawn=form == "drawn")
    texts = generate.sample(tiny(tok), 24, decoding=hot(strategy), constraint=constraint, seed=5)
    for text in texts:
        assert_poem(text, None if form == "drawn" else form, tok)
        assert follows_tonal_pattern(split_lines(text)), text
    if rhyme:
        assert rhyme_rate([split_lines(t) for t in texts]) == (1.0, 1.0)
    assert not constraint.relaxed.get("meter") and not constraint.relaxed.get("rhyme")
    starts = {split_lines(t)[0][1] for t in texts if len(char_tones(split_lines(t)[0][1])) == 1}
    assert {next(iter(char_tones(c))) for c in starts} == {"平", "仄"}  # 平起 and 仄起 both drawn


@pytest.mark.parametrize("form,acrostic", [("5x4", "春花山月"), ("7x8", "白日依山黃河入海"), (None, "千山鳥飛")])
def test_meter_rhyme_and_acrostic_together(tok, form, acrostic):
    constraint = Verse(tok, form, acrostic=acrostic, rhyme="auto", meter=True)
    texts = generate.sample(tiny(tok), 16, decoding=hot(), constraint=constraint, seed=6)
    for text in texts:
        lines = split_lines(text)
        assert_poem(text, form, tok)
        assert "".join(line[0] for line in lines) == acrostic
        assert follows_tonal_pattern(lines), text
    assert rhyme_rate([split_lines(t) for t in texts]) == (1.0, 1.0)


def test_an_oblique_rhyme_group_against_the_meter_relaxes_the_meter_and_counts_it(tok):
    """Meter wants 平 at the end of even lines, the group 上聲十七篠 (曉, 鳥, 少) is 仄: the meter gives way."""
    constraint = Verse(tok, "5x4", rhyme="曉", meter=True)
    texts = generate.sample(tiny(tok), 8, constraint=constraint, seed=0)
    assert all(set(rhyme_chars(t)) <= rhyme_table()["上聲十七篠"] for t in texts)
    assert constraint.relaxed["meter"] == 8 * 2 and "rhyme" not in constraint.relaxed


def test_a_vocabulary_without_level_characters_relaxes_the_meter_and_never_crashes():
    oblique = "一上入國在地外夜客寺對少岸已帝彩恨感抵故日是月木欲此海淚滅滿火物獨發白盡目短破絕舉草萬落"
    tok = Tokenizer.train([join_lines([oblique[i:i + 5] for i in range(0, 20, 5)]), oblique], kind="char",
                          vocab_size=300)
    with pytest.warns(UserWarning, match="no level-tone rhyme character"):
        constraint = Verse(tok, "5x4", rhyme="auto", meter=True)
    for text in generate.sample(tiny(tok), 8, constraint=constraint, seed=0):
        assert_poem(text, "5x4", tok)
    assert constraint.relaxed["meter"] > 0 and constraint.relaxed["rhyme"] > 0


@pytest.mark.parametrize("options", [dict(rhyme="auto", meter=True), dict(form="7x4", rhyme="random"),
                                     dict(acrostic="春花秋月", meter=True)])
def test_each_rows_bias_is_the_bias_it_has_alone(tok, options):
    """The bias table and its row index (shared rows, rhyme rows of their own) give every row of a batch the
    allowed set it would have decoding alone, at every step of poems written from the allowed tokens."""
    constraint, rows = Verse(tok, **options), 6
    torch.manual_seed(0)
    state = constraint.init_state(rows)
    for t in range(constraint.steps):
        forced = constraint.forced(t, state)
        bias = constraint.bias(t, state).dense().expand(rows, -1)
        for b in range(rows):
            alone = constraint.bias(t, constraint.reorder_state(state, torch.tensor([b]))).dense()
            assert torch.equal(bias[b:b + 1], alone)
        if forced is not None:
            tokens = torch.full((rows,), forced)
        else:
            tokens = torch.multinomial(torch.isfinite(bias).float(), 1)[:, 0]
        state = constraint.update(t, tokens, state)  # rows that wrote EOS go on writing it
