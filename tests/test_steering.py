"""Steering: the theme rule on fixed titles, the tilted sampler and Langevin steps against the tilted density of
a 2-D toy (computed on a grid), the restyle optimum's stationarity, attribute models fitted, saved and loaded
with a model, and the one-line errors for bad steering input."""

import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from textvae import attributes
from textvae.attributes import AttributeModels, Classifier, themes_of
from textvae.errors import TextVAEError
from textvae.generate import restyle, sample
from textvae.steering import Steering, fit_attributes, langevin, restyled_code, tilted_codes
from textvae.vae import TextVAE


@pytest.mark.parametrize("title,text,expected", [
    ("送杜少府之任蜀州", "城闕輔三秦，風煙望五津。與君離別意，同是宦遊人。", ("farewell",)),
    ("靜夜思", "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", ("moon",)),
    ("出塞", "秦時明月漢時關，萬里長征人未還。但使龍城飛將在，不教胡馬度陰山。", ("moon", "frontier")),
    ("題破山寺後禪院", "清晨入古寺，初日照高林。", ("landscape", "temple")),  # 山 in the title
    ("山居秋暝", "空山新雨後，天氣晚來秋。", ("autumn", "landscape")),
    ("越中懷古", "越王勾踐破吳歸，義士還家盡錦衣。", ("history",)),
    ("將進酒", "君不見黃河之水天上來。", ("wine",)),
    ("梅花", "牆角數枝梅，凌寒獨自開。", ("plum",)),
    ("春曉", "春眠不覺曉，處處聞啼鳥。", ("spring",)),
    ("登樂遊原", "向晚意不適，驅車登古原。", ()),
])
def test_the_theme_rule_on_fixed_titles(title, text, expected):
    assert themes_of(title, text) == expected


def test_authors_are_the_prolific_poets_most_prolific_first_then_other():
    assert attributes.authors_of({"甲": 300, "乙": 199, "丙": 900, "丁": 200}) == ("丙", "甲", "丁", "other")


def toy_model(weight=(2.0, 0.0), bias=-1.0):
    """A 2-D 'model': N(0, I) prior, one theme with p(y|z) = sigmoid(w.z + b)."""
    clf = Classifier(("a",), torch.tensor([weight]), torch.tensor([bias]), multi=True)
    models = AttributeModels(torch.zeros(2), torch.ones(2), {"theme": clf}, {})
    return SimpleNamespace(attributes=models)


def tilted_mean(strength, weight=(2.0, 0.0), bias=-1.0):
    """E[z] under N(0, I) sigmoid(w.z + b)^s, on a grid."""
    axis = torch.linspace(-7, 7, 561, dtype=torch.float64)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([x, y], dim=-1)
    log_density = -0.5 * grid.pow(2).sum(-1) + strength * torch.nn.functional.logsigmoid(
        grid @ torch.tensor(weight, dtype=torch.float64) + bias)
    weights = (log_density - log_density.max()).exp()
    return (grid * weights[..., None]).sum((0, 1)) / weights.sum()


@pytest.mark.parametrize("strength", [1.0, 3.0])
def test_resampling_reaches_the_tilted_density(strength):
    torch.manual_seed(0)
    model = toy_model()
    z = tilted_codes(model, 4000, {"theme": 0}, Steering(theme="a", strength=strength, candidates=64),
                     lambda m: torch.randn(m, 2, dtype=torch.float64))
    expected = tilted_mean(strength)
    assert z.shape == (4000, 2)
    assert torch.allclose(z.mean(0), expected, atol=0.05), (z.mean(0), expected)
    assert abs(z[:, 1].std().item() - 1) < 0.05  # the orthogonal direction keeps the prior's spread


def test_resampling_in_chunks_draws_as_many_candidates_and_keeps_n(monkeypatch):
    import textvae.steering as steering_module
    monkeypatch.setattr(steering_module, "CANDIDATE_CHUNK", 100)  # 100 candidates a chunk: 10 codes of 10 each
    drawn = []

    def draw(m):
        drawn.append(m)
        return torch.randn(m, 2, dtype=torch.float64)
    z = tilted_codes(toy_model(), 25, {"theme": 0}, Steering(theme="a", candidates=10), draw)
    assert z.shape == (25, 2) and drawn == [100, 100, 50]


def test_langevin_steps_reach_the_tilted_density_from_the_prior():
    torch.manual_seed(0)
    model = toy_model()
    z = torch.randn(4000, 2, dtype=torch.float64)
    z = langevin(model, z, {"theme": 0}, 2.0, lambda point: -0.5 * point.pow(2).sum(-1), steps=600,
                 step_size=0.01)
    assert torch.allclose(z.mean(0), tilted_mean(2.0), atol=0.06), (z.mean(0), tilted_mean(2.0))


def test_the_restyled_code_is_the_stationary_point_of_its_objective():
    model = toy_model()
    z0 = torch.tensor([[0.5, -1.0], [-2.0, 0.3]], dtype=torch.float64)
    z = restyled_code(model, z0, {"theme": 0}, 4.0, steps=1500, lr=0.02)
    # d/dz [s log sigmoid(w.z + b) - ½|z - z0|²] = s (1 - sigmoid(w.z + b)) w - (z - z0) = 0
    w = torch.tensor([2.0, 0.0], dtype=torch.float64)
    residual = 4.0 * (1 - torch.sigmoid(z @ w - 1.0))[:, None] * w - (z - z0)
    assert residual.abs().max() < 1e-3
    assert torch.equal(z[:, 1], z0[:, 1])  # nothing pulls across the classifier's direction


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A tiny poem model and dataset whose poems carry an author, a dynasty and a title."""
    from datasets import Dataset, DatasetDict

    from textvae.tokenizer import Tokenizer
    from tiny_poems import POEMS, tiny
    tokenizer = Tokenizer.train(POEMS, kind="char", vocab_size=600)
    records = [dict(text=t, author=("李白", "杜甫")[i % 2], dynasty=("tang", "song")[i % 3 == 0],
                    title=("秋夜", "送友人", "春望")[i % 3], ids=tokenizer.encode(t)) for i, t in enumerate(POEMS)]
    dataset = DatasetDict(train=Dataset.from_list(records), validation=Dataset.from_list(records[:4]),
                          test=Dataset.from_list(records[4:8]))
    model = tiny(tokenizer)
    directory = tmp_path_factory.mktemp("model") / "m"
    model.save_pretrained(directory)
    return directory, dataset


@pytest.fixture(scope="module")
def with_attributes(labelled, tmp_path_factory):
    """The labelled model's folder, copied, with its attribute models fitted and saved."""
    directory, dataset = labelled
    copy = shutil.copytree(directory, tmp_path_factory.mktemp("steered") / "m")
    model = TextVAE.from_pretrained(copy)
    fit_attributes(model, dataset)
    model.save_attributes(copy)
    return copy


def test_attribute_models_fit_save_with_their_checksums_and_load(labelled, tmp_path):
    directory, dataset = shutil.copytree(labelled[0], tmp_path / "m"), labelled[1]
    model = TextVAE.from_pretrained(directory)
    assert model.attributes is None
    scores = fit_attributes(model, dataset)
    assert set(scores) == {"author", "era", "theme", "char"}
    assert all(0 <= s <= 1 for s in scores.values() if s == s)  # NaN: no class had poems on both sides
    assert model.attributes.values("era") == ("song", "tang") and model.attributes.values("author") == ()
    model.save_attributes(directory)
    loaded = TextVAE.from_pretrained(directory)
    z = torch.randn(5, model.config.latent_dim)
    wanted = {"era": loaded.attributes.check("era", "tang"), "theme": loaded.attributes.check("theme", "autumn")}
    for clf in model.attributes.classifiers.values():  # the weights are stored in fp16
        clf.weight = clf.weight.half().float()
    torch.testing.assert_close(loaded.attributes.log_prob(z, wanted), model.attributes.log_prob(z, wanted),
                               rtol=0, atol=0)
    (directory / "attributes.json").write_text((directory / "attributes.json").read_text() + " ")
    with pytest.raises(TextVAEError, match="attributes.json does not match the checksum"):
        TextVAE.from_pretrained(directory)
    model.save_attributes(directory)  # writes it whole again, with its checksum


def test_steered_samples_and_restyle_run_and_keep_the_form(with_attributes):
    directory = with_attributes
    model = TextVAE.from_pretrained(directory)
    steered = sample(model, 6, seed=0, steering=Steering(era="tang", theme="autumn", strength=2.0), constraint="5x4")
    assert len(steered) == 6 and all(len(poem) == 24 for poem in steered)
    poem = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
    assert len(restyle(model, poem, Steering(theme="spring", strength=2.0), steps=20)) == len(poem)


@pytest.mark.parametrize("steering,words", [
    (dict(like="李商隱"), "unknown poet '李商隱'"),
    (dict(era="ming"), "unknown era 'ming': the model knows 2; they are: song, tang"),
    (dict(theme="winter"), "unknown theme 'winter'"),
])
def test_unknown_attributes_are_one_line_errors_naming_what_there_is(with_attributes, steering, words):
    directory = with_attributes
    with pytest.raises(TextVAEError, match=words) as error:
        sample(TextVAE.from_pretrained(directory), 2, steering=Steering(**steering))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("strength", [0.0, -1.0, math.nan, math.inf])
def test_a_strength_that_is_not_positive_and_finite_is_refused(strength):
    with pytest.raises(TextVAEError, match="Steering.strength"):
        Steering(theme="autumn", strength=strength)


def test_a_model_without_attribute_models_says_how_to_fit_them(tmp_path):
    from textvae.tokenizer import Tokenizer
    from tiny_poems import POEMS, tiny
    model = tiny(Tokenizer.train(POEMS, kind="char", vocab_size=600))
    with pytest.raises(TextVAEError, match="textvae fit-attributes"):
        sample(model, 2, steering=Steering(like="杜甫"))
    with pytest.raises(TextVAEError, match="restyle needs a target"):
        restyle(model, POEMS[0], Steering())


def test_the_commands_refuse_bad_steering_in_one_line(tmp_path, capsys):
    from textvae.cli import main
    from textvae.tokenizer import Tokenizer
    from tiny_poems import POEMS, tiny
    directory = tmp_path / "m"
    tiny(Tokenizer.train(POEMS, kind="char", vocab_size=600)).save_pretrained(directory)  # no attribute models
    for argv, words in [(["sample", str(directory), "--theme", "autumn"], "textvae fit-attributes"),
                        (["restyle", str(directory), "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"], "restyle needs a target"),
                        (["sample", str(directory), "--theme", "autumn", "--strength", "0"], "Steering.strength"),
                        (["fit-attributes", str(directory), "--max-points", "5"], "--max-points")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        error = capsys.readouterr().err
        assert exit_info.value.code == 1 and words in error and error.count("\n") == 1, (argv, error)


def test_the_anchor_raises_the_poem_s_own_character_at_its_place_and_keeps_every_rule(labelled):
    from textvae.generate import Anchored, constraint_for
    directory, _ = labelled
    model = TextVAE.from_pretrained(directory)
    poem = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
    verse = constraint_for(model.tokenizer, "5x4", meter=True)
    anchored = Anchored(verse, model.tokenizer.encode(poem), 1.5)
    state = anchored.init_state(1)
    for t, token in enumerate(model.tokenizer.encode(poem)[:5]):
        plain, raised = verse.bias(t, state).dense().reshape(-1), anchored.bias(t, state).dense().reshape(-1)
        moved = (raised != plain).nonzero()[:, 0].tolist()
        assert moved in ([token], []) and (not moved or raised[token] == plain[token] + 1.5)
        assert torch.equal(torch.isinf(raised), torch.isinf(plain))  # a forbidden token stays forbidden
        state = anchored.update(t, torch.tensor([token]), state)
