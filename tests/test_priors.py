"""textvae.priors, the learned priors over z: the mixture's density against scikit-learn's and a brute-force sum,
the flow's density against a grid sum, the diffusion prior's samples against the density it was fitted to (a
two-sample test that a broken schedule fails), save and load in a model folder (checksummed, with the default
kind), the IW-NLL under a prior, `--prior` in generation and the refusals of `fit-prior`."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from textvae import data, evaluate, generate, latent_stats, priors
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.priors import diffusion, flow, gmm
from textvae.posteriors import lerp, slerp
from textvae.priors.fitting import Posteriors
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
    return gmm.fit(clusters(300, CENTRES), clusters(100, CENTRES, seed=1), components=(1, 2, 3, 8))


def test_the_log_density_is_scikit_learns(fitted):
    density, info = fitted, fitted.info
    points = clusters(20, CENTRES, spread=1.0, seed=2)
    reference = gmm._fit_one(clusters(300, CENTRES).numpy(), info["components"], seed=0)
    expected = torch.as_tensor(reference.score_samples(points.numpy()))
    assert torch.allclose(density.log_prob(points.float()).double(), expected, atol=1e-3)


def test_a_one_component_fit_is_the_sample_gaussian():
    """With one component the maximum-likelihood fit is the sample mean and covariance (a closed form)."""
    train = clusters(500, [[1.0, -2.0, 0.5]], spread=0.7)
    density = gmm.fit(train, train, components=(1,))
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    mean, cov = train.mean(0), torch.cov(train.T, correction=0) + 1e-4 * torch.eye(3, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(mean, cov).log_prob(x.double())
    assert torch.allclose(density.log_prob(x).double(), expected, atol=1e-3)


def test_the_component_count_is_the_best_on_validation(fitted):
    info = fitted.info
    scores = {int(c): s["validation"] for c, s in info["scores"].items()}
    assert info["components"] == max(scores, key=scores.get)
    assert scores[3] > scores[1] + 1  # three clusters: one Gaussian is a much worse fit
    assert info["components"] >= 3


def test_samples_have_the_shape_and_the_mean_of_the_mixture(fitted):
    torch.manual_seed(0)
    z = fitted.sample(20_000)
    assert z.shape == (20_000, 3)
    weights, means = fitted.state()["weights"], fitted.state()["means"]
    expected = (weights[:, None] * means).sum(0)
    assert torch.allclose(z.mean(0), expected, atol=0.1)  # the MC error of 20,000 draws is ~0.02


def test_too_few_points_are_refused():
    with pytest.raises(TextVAEError, match="too few"):
        gmm.fit(torch.zeros(2, 3), torch.zeros(2, 3), components=(4, 8))


def test_the_mixture_log_density_by_brute_force(fitted):
    """A second reference: log sum_c w_c N(x; mu_c, Sigma_c), term by term with numpy."""
    density = fitted.density
    x = np.array([0.5, -1.0, 2.0])
    w = density.mixture_distribution.probs.double().numpy()
    mu = density.component_distribution.loc.double().numpy()
    cov = density.component_distribution.covariance_matrix.double().numpy()
    terms = [math.log(w[c]) - 0.5 * (3 * math.log(2 * math.pi) + np.linalg.slogdet(cov[c])[1]
                                     + (x - mu[c]) @ np.linalg.solve(cov[c], x - mu[c])) for c in range(len(w))]
    expected = np.logaddexp.reduce(terms)
    assert float(fitted.log_prob(torch.tensor(x, dtype=torch.float32))) == pytest.approx(expected, abs=1e-3)


# -----------------------------------------------------------------------------
# flow and diffusion on 2-D densities


CLASSES = ("left", "right")


def two_moons_like(n, seed=0, labelled=False):
    """A 2-D mixture of two elongated, correlated Gaussians: far from one Gaussian, easy to draw from exactly.
    labelled: also each point's component, 1 ("right", 30 %) or 0 ("left")."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(n, generator=g) < 0.3
    base = torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.25])
    rot = torch.tensor([[0.8, 0.6], [-0.6, 0.8]])
    z = torch.where(pick[:, None], base @ rot + torch.tensor([2.5, 1.0]), base @ rot.T - torch.tensor([1.0, 1.5]))
    return (z, pick.long()) if labelled else z


def points(z, labels=None):
    return Posteriors(z, torch.zeros_like(z), labels, CLASSES if labels is not None else ())


@pytest.fixture(scope="module")
def fitted_flow():
    torch.manual_seed(0)
    return flow.fit(points(two_moons_like(3000)), points(two_moons_like(1000, seed=1)), transforms=4, hidden=32,
                    epochs=15, batch_size=256, lr=3e-3)


@pytest.fixture(scope="module")
def conditional_flow():
    torch.manual_seed(0)
    return flow.fit(points(*two_moons_like(3000, labelled=True)), points(*two_moons_like(1000, 1, labelled=True)),
                    transforms=4, hidden=32, epochs=15, batch_size=256, lr=3e-3)


def grid_mass(log_density) -> float:
    axis = torch.linspace(-8, 8, 401)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        return float(log_density(grid).exp().sum() * (axis[1] - axis[0]) ** 2)


def test_the_flow_density_integrates_to_one_on_a_grid(fitted_flow, conditional_flow):
    """A sum of p(z) over a fine grid that holds nearly all the mass is 1 (any normalised density passes; a flow
    whose log-determinant were dropped or doubled would not): for an unconditional flow, for a class-conditional
    one's marginal (the classes summed out), and for each of its conditionals."""
    assert grid_mass(fitted_flow.log_prob) == pytest.approx(1.0, abs=0.02)
    assert grid_mass(conditional_flow.log_prob) == pytest.approx(1.0, abs=0.02)
    for c in range(2):
        conditional = lambda z: conditional_flow.conditional_log_prob(z, torch.full((len(z),), c))  # noqa: E731
        assert grid_mass(conditional) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("kind", ["gmm", "flow", "diffusion"])
def test_a_prior_fitted_with_classes_samples_the_class_asked_for(kind):
    """Given a class, draws land in that component of the mixture; unconditioned, in both at their shares."""
    torch.manual_seed(0)
    options = dict(gmm=dict(components=(2, 4)),
                   flow=dict(transforms=4, hidden=32, epochs=20, lr=3e-3, batch_size=128),
                   diffusion=dict(hidden=64, blocks=2, epochs=20, lr=3e-3, steps=20))[kind]
    prior = priors.fit(kind, points(*two_moons_like(3000, labelled=True)),
                       points(*two_moons_like(1000, 1, labelled=True)), **options)
    right = torch.tensor([2.5, 1.0])
    for condition, expected in (("right", 1.0), ("left", 0.0), (None, 0.3)):
        z = prior.sample(1000, condition=condition)
        near_right = ((z - right).norm(dim=1) < (z + torch.tensor([1.0, 1.5])).norm(dim=1)).float().mean()
        assert float(near_right) == pytest.approx(expected, abs=0.06), condition


def test_the_flow_fits_better_than_one_gaussian(fitted_flow):
    test = two_moons_like(2000, seed=2)
    gaussian = torch.distributions.MultivariateNormal(test.mean(0), torch.cov(test.T))
    with torch.no_grad():
        assert fitted_flow.log_prob(test).mean() > gaussian.log_prob(test).mean() + 0.2
    assert fitted_flow.info["validation_log_prob"] == pytest.approx(
        max(-h["validation"] for h in fitted_flow.info["history"]))


def mmd_p_value(x, y, permutations=200, seed=0):
    """The permutation p-value of the RBF-kernel maximum mean discrepancy between two samples (Gretton et al.
    2012), the bandwidth the median pairwise distance."""
    both = torch.cat([x, y])
    d2 = torch.cdist(both, both).pow(2)
    kernel = torch.exp(-d2 / d2.median())
    n = len(x)

    def mmd(order):
        k = kernel[order][:, order]
        return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()

    g = torch.Generator().manual_seed(seed)
    observed = mmd(torch.arange(len(both)))
    null = torch.stack([mmd(torch.randperm(len(both), generator=g)) for _ in range(permutations)])
    return float((null >= observed).float().mean())


@pytest.fixture(scope="module")
def fitted_diffusion():
    torch.manual_seed(0)
    return diffusion.fit(points(two_moons_like(4000)), points(two_moons_like(1000, seed=1)), hidden=64, blocks=2,
                         steps=50, epochs=40, batch_size=256, lr=3e-3)


def test_the_diffusion_prior_samples_the_density_it_was_fitted_to(fitted_diffusion):
    torch.manual_seed(1)
    samples = fitted_diffusion.sample(600)
    assert mmd_p_value(samples, two_moons_like(600, seed=3)) > 0.05
    assert mmd_p_value(torch.randn(600, 2) * two_moons_like(600).std(0), two_moons_like(600, seed=3)) < 0.01


def test_a_broken_noise_schedule_fails_the_two_sample_test(fitted_diffusion, monkeypatch):
    """Sampling with a schedule that never reaches pure noise (alpha(1) = cos(pi/4), not 0) starts from the wrong
    density; the test must catch it."""
    monkeypatch.setattr(fitted_diffusion, "schedule", lambda t: diffusion.cosine_schedule(t * 0.5))
    torch.manual_seed(1)
    assert mmd_p_value(fitted_diffusion.sample(600), two_moons_like(600, seed=3)) < 0.01


def test_the_diffusion_prior_has_no_log_density(fitted_diffusion):
    assert not fitted_diffusion.has_log_prob
    with pytest.raises(TextVAEError, match="no tractable log p"):
        fitted_diffusion.log_prob(torch.zeros(1, 2))


@pytest.mark.parametrize("name", ["fitted", "fitted_flow", "fitted_diffusion"])
def test_save_and_load_round_trip(name, request, tmp_path):
    prior = request.getfixturevalue(name)
    priors.save(prior, tmp_path)
    loaded = priors.load(tmp_path, prior.latent_dim)[prior.kind]
    z = two_moons_like(5, seed=4) if prior.latent_dim == 2 else clusters(5, CENTRES, seed=3).float()
    if prior.has_log_prob:
        with torch.no_grad():
            assert torch.equal(loaded.log_prob(z), prior.log_prob(z))
    torch.manual_seed(2)
    expected = prior.sample(4)
    torch.manual_seed(2)
    assert torch.equal(loaded.sample(4), expected)
    assert loaded.info == json.loads(json.dumps(prior.info))
    assert priors.load(tmp_path / "elsewhere", prior.latent_dim) == {}
    with pytest.raises(TextVAEError, match="belongs to another model"):
        priors.load(tmp_path, prior.latent_dim + 1)
    tensors, info = priors.files(prior.kind)
    (tmp_path / info).write_text("{not json")
    with pytest.raises(TextVAEError, match=f"{info}.*corrupt"):
        priors.load(tmp_path, prior.latent_dim)
    (tmp_path / tensors).write_bytes(b"garbage")
    with pytest.raises(TextVAEError, match=f"{tensors}.*corrupt"):
        priors.load(tmp_path, prior.latent_dim)


def test_a_prior_file_of_another_kind_is_named_foreign(fitted, tmp_path):
    priors.save(fitted, tmp_path)
    for name, renamed in zip(priors.files("gmm"), priors.files("flow")):
        (tmp_path / name).rename(tmp_path / renamed)
    with pytest.raises(TextVAEError, match="prior-flow.safetensors holds a gmm prior"):
        priors.load(tmp_path, 3)


def ring(n, seed=0, radius=3.0, width=0.2):
    """Points around a circle: the straight line between two of them crosses the empty middle."""
    g = torch.Generator().manual_seed(seed)
    angle, r = torch.rand(n, generator=g) * 2 * math.pi, radius + width * torch.randn(n, generator=g)
    return torch.stack([r * angle.cos(), r * angle.sin()], dim=1)


@pytest.fixture(scope="module")
def ring_priors():
    torch.manual_seed(0)
    train, validation = points(ring(4000)), points(ring(1000, seed=1))
    return dict(flow=flow.fit(train, validation, transforms=6, hidden=64, epochs=30, batch_size=256, lr=3e-3),
                diffusion=diffusion.fit(train, validation, hidden=64, blocks=2, steps=50, epochs=40, batch_size=256,
                                        lr=3e-3))


def test_the_flow_base_map_is_inverted_exactly(fitted_flow, conditional_flow):
    z, labels = two_moons_like(500, seed=3, labelled=True)
    for prior in (fitted_flow, conditional_flow):
        assert torch.allclose(prior.from_base(prior.to_base(z, labels), labels), z, atol=1e-4)
    u = fitted_flow.to_base(fitted_flow.sample(4000), torch.zeros(4000, dtype=torch.long))
    assert u.mean(0).abs().max() < 0.1 and (u.var(0) - 1).abs().max() < 0.15  # the base density is N(0, I)


def test_the_diffusion_inversion_returns_near_its_start(ring_priors):
    prior, z = ring_priors["diffusion"], ring(300, seed=3)
    labels = torch.zeros(300, dtype=torch.long)
    error = (prior.from_base(prior.to_base(z, labels), labels) - z).norm(dim=1)
    assert error.mean() < 0.1 and error.max() < 0.4  # against a ring of radius 3 and width 0.2


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_the_prior_path_stays_on_the_ring_where_the_line_crosses_it(ring_priors, kind):
    prior, labels = ring_priors[kind], torch.zeros(11, dtype=torch.long)
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([3 * math.cos(2.5), 3 * math.sin(2.5)])
    base = prior.to_base(torch.stack([a, b]), labels[:2])
    path = prior.from_base(slerp(base[0], base[1], 11), labels)
    assert ((path.norm(dim=1) - 3).abs() < 3 * 0.2).all()  # within three widths of the circle at every point
    assert (lerp(a, b, 11).norm(dim=1) < 1.5).any()  # the straight line passes near the centre
    assert (path[0] - a).norm() < 0.15 and (path[-1] - b).norm() < 0.15


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
    dataset = DatasetDict(train=Dataset.from_list(records * 5), validation=Dataset.from_list(records * 2),
                          test=Dataset.from_list(records[4:]))
    return model, dataset, tmp_path / "model"


def far_away(d=3):
    """One component far from the origin with a tiny spread: its draws are easy to tell from N(0, I)'s."""
    return gmm.GaussianMixturePrior(torch.ones(1), torch.full((1, d), 50.0), 1e-3 * torch.eye(d)[None], {})


def test_a_fitted_prior_is_saved_checksummed_and_used_by_sample(saved):
    model, dataset, folder = saved
    evaluate.fit_prior(model, dataset, "gmm", components=(1, 2), max_points=100)
    assert model.priors["gmm"].info["train_points"] == 40 and model.priors["gmm"].latent_dim == 3
    model.priors["gmm"], model.default_prior = far_away(), "gmm"
    model.save_prior("gmm", folder)
    loaded = TextVAE.from_pretrained(folder)
    assert torch.equal(loaded.priors["gmm"].state()["means"], torch.full((1, 3), 50.0))
    config = json.loads((folder / "config.json").read_text())
    assert {"prior-gmm.safetensors", "prior-gmm.json"} <= set(config["checksums"]) and config["prior"] == "gmm"
    torch.manual_seed(0)
    assert (generate.prior_sample(loaded, 4) - 50).abs().max() < 0.1  # auto: the default learned prior
    assert generate.prior_sample(loaded, 4, "standard").abs().max() < 10
    assert len(generate.sample(loaded, 3, prior="aggregate", seed=0)) == 3  # the old name of the mixture
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging folder left
    damaged = bytearray((folder / "prior-gmm.safetensors").read_bytes())
    damaged[-1] ^= 1
    (folder / "prior-gmm.safetensors").write_bytes(bytes(damaged))
    with pytest.raises(TextVAEError, match="prior-gmm.safetensors does not match the checksum"):
        TextVAE.from_pretrained(folder)


def test_every_kind_samples_and_the_folder_records_the_default(saved):
    model, dataset, folder = saved
    evaluate.fit_prior(model, dataset, "flow", max_points=100, transforms=2, hidden=8, epochs=2)
    evaluate.fit_prior(model, dataset, "diffusion", max_points=100, hidden=16, blocks=1, steps=5, epochs=2)
    model.default_prior = "flow"
    model.save_prior("flow", folder)
    model.save_prior("diffusion", folder)
    loaded = TextVAE.from_pretrained(folder)
    assert set(loaded.priors) == {"flow", "diffusion"} and loaded.default_prior == "flow"
    for prior in ("auto", "standard", "flow", "diffusion"):
        assert len(generate.sample(loaded, 2, prior=prior, seed=0)) == 2
        assert len(generate.interpolate(loaded, steps=3, prior=prior, seed=0)) == 3
    assert len(generate.sample(loaded, 2, prior="diffusion", prior_steps=2, seed=0)) == 2
    with pytest.raises(TextVAEError, match="prior_steps"):
        generate.sample(loaded, 2, prior="diffusion", prior_steps=0)
    with pytest.raises(TextVAEError, match="no gmm prior"):
        generate.sample(loaded, 2, prior="gmm")


def test_each_path_kind_starts_and_ends_at_the_two_posterior_modes(saved):
    model, dataset, folder = saved
    evaluate.fit_prior(model, dataset, "flow", max_points=100, transforms=2, hidden=8, epochs=2)
    evaluate.fit_prior(model, dataset, "diffusion", max_points=100, hidden=32, blocks=1, steps=20, epochs=60)
    a, b = SENTENCES[0], SENTENCES[3]
    modes = generate.posterior(model, [a, b]).mode
    for path, prior, tolerance in (("linear", "auto", 0), ("slerp", "auto", 1e-6), ("prior", "flow", 1e-4),
                                   ("prior", "diffusion", 0.1)):
        points = generate.latent_path(model, a, b, steps=6, prior=prior, path=path)
        error = (points[[0, -1]] - modes).norm(dim=1) / (modes[0] - modes[1]).norm()
        assert points.shape == (6, 3) and error.max() <= tolerance, (path, prior, error)
    assert len(generate.interpolate(model, a, b, steps=4, path="prior", prior="flow")) == 4


def test_a_path_the_model_cannot_walk_is_refused_before_any_work(saved):
    model, dataset, _ = saved
    with pytest.raises(TextVAEError, match="path must be one of linear, slerp, prior"):
        generate.interpolate(model, SENTENCES[0], SENTENCES[1], path="curved")
    with pytest.raises(TextVAEError, match="this model, which has no learned prior"):
        generate.interpolate(model, SENTENCES[0], SENTENCES[1], path="prior")
    evaluate.fit_prior(model, dataset, "gmm", components=(1,), max_points=100)
    with pytest.raises(TextVAEError, match="the gmm prior lacks"):
        generate.interpolate(model, SENTENCES[0], SENTENCES[1], path="prior", prior="gmm")
    with pytest.raises(TextVAEError, match="this model's gmm prior lacks"):
        generate.latent_path(model, SENTENCES[0], SENTENCES[1], path="prior")


def test_a_missing_or_foreign_prior_file_is_named(saved, tmp_path):
    model, dataset, folder = saved
    evaluate.fit_prior(model, dataset, "gmm", components=(1,), max_points=100)
    model.default_prior = "gmm"
    model.save_prior("gmm", folder)
    (folder / "prior-gmm.json").rename(tmp_path / "prior-gmm.json")
    with pytest.raises(TextVAEError, match="prior-gmm.json is missing"):
        TextVAE.from_pretrained(folder)
    (tmp_path / "prior-gmm.json").rename(folder / "prior-gmm.json")
    other = tmp_path / "other"
    model.save_pretrained(other)
    (other / "prior-gmm.safetensors").rename(folder / "prior-flow.safetensors")
    with pytest.raises(TextVAEError, match="prior-flow.safetensors was not saved with this model"):
        TextVAE.from_pretrained(folder)


def test_a_folder_with_a_lone_legacy_mixture_loads_it_as_gmm(saved):
    model, _, folder = saved
    model.priors, model.default_prior = {"gmm": far_away()}, None
    model.save_prior("gmm", folder)
    for new, old in zip(priors.files("gmm"), priors.LEGACY):
        (folder / new).rename(folder / old)
    config = json.loads((folder / "config.json").read_text())
    config["checksums"] = {k.replace("prior-gmm", "prior"): v for k, v in config["checksums"].items()
                           if k != "prior-gmm.json"}
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "prior"}))
    loaded = TextVAE.from_pretrained(folder)
    assert loaded.default_prior == "gmm" and torch.equal(loaded.priors["gmm"].state()["means"],
                                                         torch.full((1, 3), 50.0))


def test_a_prior_fitted_on_posterior_draws_spreads_wider_than_one_on_the_means(saved):
    model, dataset, _ = saved
    evaluate.fit_prior(model, dataset, "gmm", components=(1,), max_points=100)
    on_means = model.priors["gmm"].density.component_distribution.covariance_matrix[0].diagonal()
    evaluate.fit_prior(model, dataset, "gmm", components=(1,), max_points=100, fit_on="samples")
    on_draws = model.priors["gmm"].density.component_distribution.covariance_matrix[0].diagonal()
    assert model.priors["gmm"].info["fitted_on"] == "posterior samples"
    # Var(z) = Var(E[z|x]) + E[Var(z|x)]: the draws add each posterior's own variance to the means' spread
    ids = [model.tokenizer.encode(t) for t in dataset["train"]["text"]]
    with torch.no_grad():
        own = torch.cat([model.encode(*data.pad_batch([x])).variance for x in ids]).mean(0)
    assert torch.all(on_draws > on_means + 0.3 * own), (on_means, on_draws, own)


@pytest.mark.parametrize("kind", ["gmm", "flow"])
def test_the_iw_nll_under_a_standard_normal_learned_prior_is_the_standard_iw_nll(saved, kind):
    """A mixture of one standard component, and a flow whose transforms are the identity (zero weights give
    shift 0, log-scale 0) with no standardisation, are N(0, I): the bound must not change."""
    model, dataset, _ = saved
    sequences = [model.tokenizer.encode(t) for t in dataset["test"]["text"]]
    if kind == "gmm":
        prior = gmm.GaussianMixturePrior(torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None], {})
    else:
        prior = flow.FlowPrior(3, transforms=2, hidden=8)
        with torch.no_grad():
            for name, p in prior.named_parameters():
                p.zero_()
    standard = latent_stats.iw_nll(model, sequences, iw_samples=20, seed=3)
    with torch.no_grad():
        learned = latent_stats.iw_nll(model, sequences, iw_samples=20, seed=3, prior=prior)
    torch.testing.assert_close(learned, standard)
    far = latent_stats.iw_nll(model, sequences, iw_samples=20, seed=3, prior=far_away())
    assert torch.all(far > standard + 100)  # z ~ q lands nowhere near that prior's mass


def test_a_prior_the_model_lacks_is_refused(saved):
    model = saved[0]
    with pytest.raises(TextVAEError, match="no gmm prior.*fit-prior"):
        generate.sample(model, 2, prior="aggregate")
    with pytest.raises(TextVAEError, match="prior must be one of"):
        generate.sample(model, 2, prior="mixture")
    assert generate.prior_sample(model, 5).shape == (5, 3)  # auto falls back to N(0, I)


@pytest.mark.parametrize("posterior, message", [("vmf", "unit sphere"), ("none", "no latent")])
def test_fit_prior_refuses_a_model_without_a_gaussian_latent(tok, saved, posterior, message):
    model = TextVAE(VAEConfig(vocab_size=tok.vocab_size, posterior=posterior, **TINY), tok)
    for kind in priors.KINDS:
        with pytest.raises(TextVAEError, match=message):
            evaluate.fit_prior(model, saved[1], kind)


def test_fit_prior_refuses_too_few_points_and_an_unknown_kind(saved):
    model, dataset, _ = saved
    small = DatasetDict(train=dataset["train"], validation=dataset["validation"].select(range(3)))
    with pytest.raises(TextVAEError, match="validation split of 10 or more"):
        evaluate.fit_prior(model, small, "flow")
    with pytest.raises(TextVAEError, match="kind must be one of"):
        evaluate.fit_prior(model, dataset, "vae")


def test_the_cli_fits_and_samples_from_every_prior(saved, capsys, tmp_path, monkeypatch):
    model, dataset, folder = saved
    monkeypatch.setattr(evaluate, "load", lambda *a: (TextVAE.from_pretrained(folder), dataset))
    main(["fit-prior", str(folder), "--kind", "flow", "--transforms", "2", "--hidden", "8", "--epochs", "1"])
    main(["fit-prior", str(folder), "--kind", "diffusion", "--hidden", "16", "--blocks", "1", "--epochs", "1",
          "--steps", "4", "--keep-default"])
    assert "flow prior" in capsys.readouterr().out
    assert TextVAE.from_pretrained(folder).default_prior == "flow"
    for prior in ("auto", "flow", "diffusion", "standard"):
        main(["sample", str(folder), "-n", "2", "--seed", "0", "--prior", prior, "--json"])
        assert len(json.loads(capsys.readouterr().out)) == 2
    main(["interpolate", str(folder), "--steps", "3", "--prior", "diffusion", "--prior-steps", "2"])
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.parametrize("argv, message", [
    (["--kind", "flow", "--components", "4"], "--components does not apply to a flow prior"),
    (["--kind", "gmm", "--epochs", "3"], "--epochs does not apply to a gmm prior"),
    (["--kind", "diffusion", "--steps", "0"], "--steps must be from 1"),
    (["--kind", "flow", "--transforms", "99"], "--transforms must be from 1"),
])
def test_fit_prior_refuses_bad_settings_before_loading(saved, capsys, argv, message):
    with pytest.raises(SystemExit):
        main(["fit-prior", str(saved[2] / "nowhere"), *argv])
    assert message in capsys.readouterr().err


def test_evaluate_refuses_a_likelihood_under_the_diffusion_prior(saved):
    model, dataset, _ = saved
    evaluate.fit_prior(model, dataset, "diffusion", max_points=100, hidden=16, blocks=1, steps=3, epochs=1)
    with pytest.raises(TextVAEError, match="no tractable log p"):
        evaluate.evaluate(model, dataset, evaluate.EvalConfig(iw_prior="diffusion", iw_samples=2, n=0))


def test_an_interrupted_fit_leaves_the_previous_prior_intact(saved, monkeypatch):
    """A fit killed while it writes (here: the save raises half way) leaves the folder's files as they were."""
    model, dataset, folder = saved
    model.priors, model.default_prior = {"gmm": far_away()}, "gmm"
    model.save_prior("gmm", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    evaluate.fit_prior(model, dataset, "gmm", components=(1,), max_points=100)

    def dies_half_way(prior, directory):
        (directory / priors.files("gmm")[0]).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(priors, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        model.save_prior("gmm", folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert torch.equal(TextVAE.from_pretrained(folder).priors["gmm"].state()["means"], torch.full((1, 3), 50.0))
