"""textvae.mixture, the aggregate-posterior prior: its density against scikit-learn's, its samples, its save and
load (checksummed with the model), the choice of component count, and `--prior` in generation."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from textvae import data, evaluate, generate, mixture
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.tokenizer import Tokenizer
from textvae.vae import TextVAE, VAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn", "rain fell all night long",
             "the market rose again today", "she wrote a long letter home", "we walked along the river",
             "stars shone over the quiet town"]
TINY = dict(embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=3, max_len=40)


def clusters(n_per, centres, spread=0.3, seed=0):
    """Points (N, D) around each centre: a density whose component count is known."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor(centres, dtype=torch.float64)
    return torch.cat([c + spread * torch.randn(n_per, centres.size(1), generator=g, dtype=torch.float64)
                      for c in centres])


CENTRES = [[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0], [0.0, 4.0, 2.0]]


@pytest.fixture(scope="module")
def fitted():
    return mixture.fit(clusters(300, CENTRES), clusters(100, CENTRES, seed=1), components=(1, 2, 3, 8))


def test_the_log_density_is_scikit_learns(fitted):
    density, info = fitted
    points = clusters(20, CENTRES, spread=1.0, seed=2)
    reference = mixture._fit_one(clusters(300, CENTRES).numpy(), info["components"], seed=0)
    expected = torch.as_tensor(reference.score_samples(points.numpy()))
    assert torch.allclose(density.log_prob(points.float()).double(), expected, atol=1e-3)


def test_a_one_component_fit_is_the_sample_gaussian():
    """With one component the maximum-likelihood fit is the sample mean and covariance (a closed form)."""
    train = clusters(500, [[1.0, -2.0, 0.5]], spread=0.7)
    density, _ = mixture.fit(train, train, components=(1,))
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    mean, cov = train.mean(0), torch.cov(train.T, correction=0) + 1e-4 * torch.eye(3, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(mean, cov).log_prob(x.double())
    assert torch.allclose(density.log_prob(x).double(), expected, atol=1e-3)


def test_the_component_count_is_the_best_on_validation(fitted):
    _, info = fitted
    scores = {int(c): s["validation"] for c, s in info["scores"].items()}
    assert info["components"] == max(scores, key=scores.get)
    assert scores[3] > scores[1] + 1  # three clusters: one Gaussian is a much worse fit
    assert info["components"] >= 3


def test_samples_have_the_shape_and_the_mean_of_the_mixture(fitted):
    density, _ = fitted
    torch.manual_seed(0)
    z = density.sample((20_000,))
    assert z.shape == (20_000, 3)
    weights, means = density.mixture_distribution.probs, density.component_distribution.loc
    expected = (weights[:, None] * means).sum(0)
    assert torch.allclose(z.mean(0), expected, atol=0.1)  # the MC error of 20,000 draws is ~0.02


def test_save_and_load_give_the_same_density(fitted, tmp_path):
    density, info = fitted
    mixture.save(density, info, tmp_path)
    loaded, loaded_info = mixture.load(tmp_path, latent_dim=3)
    points = clusters(5, CENTRES, seed=3).float()
    assert torch.equal(loaded.log_prob(points), density.log_prob(points))
    assert loaded_info == json.loads(json.dumps(info))
    assert mixture.load(tmp_path / "elsewhere", latent_dim=3) == (None, None)
    with pytest.raises(TextVAEError, match="belongs to another model"):
        mixture.load(tmp_path, latent_dim=4)
    (tmp_path / mixture.TENSORS).write_bytes(b"garbage")
    with pytest.raises(TextVAEError, match="corrupt"):
        mixture.load(tmp_path, latent_dim=3)


def test_too_few_points_are_refused():
    with pytest.raises(TextVAEError, match="too few"):
        mixture.fit(torch.zeros(2, 3), torch.zeros(2, 3), components=(4, 8))


# -----------------------------------------------------------------------------
# with a model


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(SENTENCES * 4, kind="char", vocab_size=300)


@pytest.fixture
def saved(tok, tmp_path):
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=tok.vocab_size, **TINY), tok).eval()
    model.save_pretrained(tmp_path / "model")
    records = [dict(text=t, ids=tok.encode(t)) for t in SENTENCES]
    dataset = DatasetDict(train=Dataset.from_list(records * 5), validation=Dataset.from_list(records[:4]),
                          test=Dataset.from_list(records[4:]))
    return model, dataset, tmp_path / "model"


def far_away(d=3):
    """One component far from the origin with a tiny spread: its draws are easy to tell from N(0, I)'s."""
    return mixture.mixture(torch.ones(1), torch.full((1, d), 50.0), 1e-3 * torch.eye(d)[None])


def test_a_fitted_prior_is_saved_checksummed_and_used_by_sample(saved):
    model, dataset, folder = saved
    evaluate.fit_aggregate_prior(model, dataset, components=(1, 2), max_points=100)
    assert model.aggregate_prior_info["train_points"] == 40 and model.aggregate_prior.event_shape == (3,)
    model.aggregate_prior = far_away()
    model.save_aggregate_prior(folder)
    loaded = TextVAE.from_pretrained(folder)
    assert torch.equal(loaded.aggregate_prior.component_distribution.loc, torch.full((1, 3), 50.0))
    assert "prior.safetensors" in json.loads((folder / "config.json").read_text())["checksums"]
    torch.manual_seed(0)
    assert (generate.prior_sample(loaded, 4) - 50).abs().max() < 0.1  # auto: the aggregate prior
    assert generate.prior_sample(loaded, 4, "standard").abs().max() < 10
    assert len(generate.sample(loaded, 3, prior="aggregate", seed=0)) == 3
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging folder left
    damaged = bytearray((folder / mixture.TENSORS).read_bytes())
    damaged[-1] ^= 1
    (folder / mixture.TENSORS).write_bytes(bytes(damaged))
    with pytest.raises(TextVAEError, match="checksum"):
        TextVAE.from_pretrained(folder)


def test_a_prior_fitted_on_posterior_draws_spreads_wider_than_one_on_the_means(saved):
    model, dataset, _ = saved
    evaluate.fit_aggregate_prior(model, dataset, components=(1,), max_points=100)
    on_means = model.aggregate_prior.component_distribution.covariance_matrix[0].diagonal()
    evaluate.fit_aggregate_prior(model, dataset, components=(1,), max_points=100, fit_on="samples")
    on_draws = model.aggregate_prior.component_distribution.covariance_matrix[0].diagonal()
    assert model.aggregate_prior_info["fitted_on"] == "posterior samples"
    # Var(z) = Var(E[z|x]) + E[Var(z|x)]: the draws add each posterior's own variance to the means' spread
    ids = [model.tokenizer.encode(t) for t in dataset["train"]["text"]]
    with torch.no_grad():
        own = torch.cat([model.encode(*data.pad_batch([x])).variance for x in ids]).mean(0)
    assert torch.all(on_draws > on_means + 0.3 * own), (on_means, on_draws, own)


def test_the_iw_nll_under_a_standard_normal_mixture_is_the_standard_iw_nll(saved):
    model, dataset, _ = saved
    sequences = [model.tokenizer.encode(t) for t in dataset["test"]["text"]]
    standard = evaluate.iw_nll(model, sequences, num_samples=20, seed=3)
    as_mixture = evaluate.iw_nll(model, sequences, num_samples=20, seed=3,
                                 prior=mixture.mixture(torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None]))
    torch.testing.assert_close(as_mixture, standard)
    far = evaluate.iw_nll(model, sequences, num_samples=20, seed=3, prior=far_away())
    assert torch.all(far > standard + 100)  # z ~ q lands nowhere near that prior's mass


def test_the_aggregate_prior_needs_one(saved):
    model = saved[0]
    with pytest.raises(TextVAEError, match="fit-prior"):
        generate.sample(model, 2, prior="aggregate")
    with pytest.raises(TextVAEError, match="prior must be one of"):
        generate.sample(model, 2, prior="gmm")
    assert generate.prior_sample(model, 5).shape == (5, 3)  # auto falls back to N(0, I)


def test_fit_prior_refuses_a_vmf_model(tok, saved):
    model = TextVAE(VAEConfig(vocab_size=tok.vocab_size, posterior="vmf", **TINY), tok)
    with pytest.raises(TextVAEError, match="Gaussian posterior"):
        evaluate.fit_aggregate_prior(model, saved[1])


def test_the_cli_samples_from_either_prior(saved, capsys):
    model, _, folder = saved
    model.aggregate_prior, model.aggregate_prior_info = far_away(), dict(components=1)
    model.save_aggregate_prior(folder)
    for prior in ("aggregate", "standard"):
        main(["sample", str(folder), "-n", "2", "--seed", "0", "--prior", prior, "--json"])
        assert len(json.loads(capsys.readouterr().out)) == 2
    main(["interpolate", str(folder), "--steps", "3", "--prior", "standard"])
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_the_mixture_log_density_by_brute_force(fitted):
    """A second reference: log sum_c w_c N(x; mu_c, Sigma_c), term by term with numpy."""
    density, _ = fitted
    x = np.array([0.5, -1.0, 2.0])
    w = density.mixture_distribution.probs.double().numpy()
    mu = density.component_distribution.loc.double().numpy()
    cov = density.component_distribution.covariance_matrix.double().numpy()
    terms = [math.log(w[c]) - 0.5 * (3 * math.log(2 * math.pi) + np.linalg.slogdet(cov[c])[1]
                                     + (x - mu[c]) @ np.linalg.solve(cov[c], x - mu[c])) for c in range(len(w))]
    expected = np.logaddexp.reduce(terms)
    assert float(density.log_prob(torch.tensor(x, dtype=torch.float32))) == pytest.approx(expected, abs=1e-3)
