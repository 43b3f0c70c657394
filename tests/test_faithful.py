"""The shipped high-rate model in data/faithful: complete, within its size budget, and more faithful to its input
than the default model."""

import functools
import json
from pathlib import Path

from textvae import generate, priors
from textvae.metrics import kept_in_place
from textvae.poetry import Verse, form_of, split_lines

DATA = Path(__file__).resolve().parent.parent / "data"
FAITHFUL, DEFAULT = DATA / "faithful", DATA / "pretrained"
# test-split poems with no line in the training split (the two examples in docs/generation.md)
load_model = functools.cache(generate.load_model)  # each model loaded once for the module's tests
HELD_OUT = ["尚想夷與齊，求仁無怨嘖。誰傳采薇音，荒哉太史筆。", "女子乃知我，明朝變姓名。可憐逃不密，猶迫詔書行。"]


def test_the_folder_holds_a_complete_model_with_its_learned_prior_within_25_mb():
    model = load_model(FAITHFUL)
    assert model.default_prior is not None
    names = {"config.json", "model.safetensors", "tokenizer.model", "eval.json", *priors.files(model.default_prior)}
    assert names <= {p.name for p in FAITHFUL.iterdir()}
    assert sum(p.stat().st_size for p in FAITHFUL.iterdir()) <= 25 * 10**6


def test_its_report_shows_a_high_rate_that_reconstructs_better_than_the_default():
    faithful, default = (json.loads((folder / "eval.json").read_text()) for folder in (FAITHFUL, DEFAULT))
    assert faithful["split"] == "test" and faithful["config"]["max_examples"] == 0  # the whole test split
    assert faithful["latent"]["kl"] >= 60
    assert faithful["latent"]["active_units"] == json.loads((FAITHFUL / "config.json").read_text())["latent_dim"]
    assert faithful["text"]["reconstruction_bleu"] > 20 * default["text"]["reconstruction_bleu"]
    assert faithful["text"]["reconstruction_bleu"] >= 40  # the model's target, on the whole test split


def characters(poem: str) -> str:
    """The poem without its line-end marks, which every reconstruction of its form keeps."""
    return "".join(split_lines(poem))


def test_it_keeps_more_of_a_held_out_poem_than_the_default_model():
    kept = {}
    for folder in (FAITHFUL, DEFAULT):
        model = load_model(folder)
        decoded = [r[0] for r in generate.reconstruct(model, HELD_OUT, constraint=Verse(model.tokenizer, "5x4"))]
        assert all(form_of(split_lines(poem)) == "5x4" for poem in decoded)
        kept[folder.name] = sum(kept_in_place(characters(a), characters(b)) for a, b in zip(HELD_OUT, decoded)) / 2
    assert kept["faithful"] >= 0.5 and kept["faithful"] >= kept["pretrained"] + 0.2, kept


def test_close_variations_of_a_poem_it_reconstructs_exactly_keep_most_of_it_but_never_copy_it():
    model = load_model(FAITHFUL)
    poem = HELD_OUT[1]
    assert generate.reconstruct(model, [poem])[0] == [poem]  # so draws near the mode decode to the poem itself
    variations = generate.vary(model, poem, 5, spread=0.5, seed=0)
    assert poem not in variations and all(form_of(split_lines(v)) == "5x4" for v in variations)
    assert sum(kept_in_place(characters(poem), characters(v)) for v in variations) / 5 >= 0.5


def test_its_interpolation_starts_and_ends_at_the_reconstructions():
    model = load_model(FAITHFUL)
    path = generate.interpolate(model, *HELD_OUT, steps=5)
    ends = [r[0] for r in generate.reconstruct(model, HELD_OUT, constraint=Verse(model.tokenizer, "5x4"))]
    assert [path[0], path[-1]] == ends and all(form_of(split_lines(p)) == "5x4" for p in path)


# three famous poems as their text stands in the training split (靜夜思 there reads 牀前看月光…舉頭望山月…)
FAMOUS = {"靜夜思": "牀前看月光，疑是地上霜。舉頭望山月，低頭思故鄉。",
          "登鸛雀樓": "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
          "春曉": "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。"}


def test_three_famous_poems_come_back_exactly():
    model = load_model(FAITHFUL)
    assert [r[0] for r in generate.reconstruct(model, list(FAMOUS.values()))] == list(FAMOUS.values())
