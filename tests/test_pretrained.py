"""The shipped model in data/pretrained: complete, within its size budget, and usable with no training."""

import json
from pathlib import Path

import pytest

from textvae import generate
from textvae.poetry import FORMS, Verse, form_of, poem_rhymes, split_lines

PRETRAINED = Path(__file__).resolve().parent.parent / "data" / "pretrained"


def test_the_folder_holds_a_complete_model_within_25_mb():
    names = {"config.json", "model.safetensors", "tokenizer.model", "eval.json"}
    assert names <= {p.name for p in PRETRAINED.iterdir()}
    assert sum(p.stat().st_size for p in PRETRAINED.iterdir()) <= 25 * 10**6


def test_its_report_meets_the_default_model_targets():
    report = json.loads((PRETRAINED / "eval.json").read_text())
    latent, samples = report["latent"], report["text"]["samples"]
    assert report["split"] == "test" and report["config"]["max_examples"] == 0  # the whole test split
    assert latent["kl"] >= 5 and latent["mi"] >= 2
    assert samples["form"] == 1.0 and samples["rhyme"] >= 0.8
    assert samples["copied_texts"] == 0 and samples["copied_lines"] <= 0.2


@pytest.mark.parametrize("form", FORMS)
def test_it_samples_rhymed_poems_of_every_form(form):
    model = generate.load_model(PRETRAINED)
    poems = generate.sample(model, 4, constraint=Verse(model.tokenizer, form, rhyme="auto"), seed=0)
    for poem in poems:
        lines = split_lines(poem)
        assert form_of(lines) == form, poem
        assert poem_rhymes(lines), poem


def test_it_reconstructs_and_interpolates():
    model = generate.load_model(PRETRAINED)
    a, b = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。"
    path = generate.interpolate(model, a, b, steps=4)  # both 5x4: the path keeps their form
    assert len(path) == 4 and all(form_of(split_lines(p)) == "5x4" for p in path)
    assert path[0] == generate.reconstruct(model, [a], constraint=Verse(model.tokenizer, "5x4"))[0][0]
