"""Posteriors against closed forms, scipy.stats.vonmises_fisher and Monte Carlo estimates."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from torch.distributions import kl_divergence

from textvae.posteriors import (
    POSTERIORS,
    BNGaussianHead,
    GaussianHead,
    HypersphericalUniform,
    ScaledBNGaussianHead,
    VMFHead,
    VonMisesFisher,
    _angle_table,
    _log_iv,
    _log_iv_series,
    _mean_resultant,
    lerp,
    slerp,
)


def log_sphere_area(dim):
    return math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)


def random_unit(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# -----------------------------------------------------------------------------
# von Mises-Fisher sampling


@pytest.mark.parametrize("dim", [2, 3, 32, 128])
@pytest.mark.parametrize("kappa", [1.0, 13.0, 100.0, 1000.0])
def test_vmf_samples_match_scipy(dim, kappa):
    n = 4000
    torch.manual_seed(0)
    mu = random_unit(dim)
    z = VonMisesFisher(mu, kappa).sample((n,))  # (n, D)
    ref = torch.from_numpy(stats.vonmises_fisher(mu.numpy(), kappa).rvs(n, random_state=1))
    assert torch.allclose(z.norm(dim=-1), torch.ones(n, dtype=z.dtype), atol=1e-12)
    w, w_ref = z @ mu, ref @ mu
    assert abs(w.mean().item() - _mean_resultant(dim, kappa)) < 5 * w.std().item() / math.sqrt(n)
    assert stats.ks_2samp(w.numpy(), w_ref.numpy()).pvalue > 1e-3
    # the angle alone says nothing about the direction around mu: test a generic projection too
    u = random_unit(dim, seed=2)
    assert stats.ks_2samp((z @ u).numpy(), (ref @ u).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("kappa", [0.1, 10.0, 1e4])
def test_angle_table_matches_exact_cdfs(kappa):
    # D = 3: P(theta <= t) = (1 - e^{kappa (cos t - 1)}) / (1 - e^{-2 kappa}); D = 2: von Mises, folded
    cdf, theta = _angle_table(3, kappa)
    assert np.abs(cdf - np.expm1(kappa * (np.cos(theta) - 1)) / np.expm1(-2 * kappa)).max() < 1e-7
    cdf, theta = _angle_table(2, kappa)
    assert np.abs(cdf - (2 * stats.vonmises.cdf(theta, kappa) - 1)).max() < 1e-7


def test_vmf_batched_samples_follow_their_own_loc():
    torch.manual_seed(0)
    loc = random_unit(3, 16)
    z = VonMisesFisher(loc, 50.0).sample((2000,))  # (K, B, D)
    assert z.shape == (2000, 3, 16)
    w = (z * loc).sum(-1).mean(0)  # (B,)
    assert torch.allclose(w, torch.full((3,), _mean_resultant(16, 50.0), dtype=w.dtype), atol=0.01)


def test_rsample_gradient_is_unbiased_for_linear_loss():
    # E[c.z] = A_D(kappa) c.mu for unit mu, and the tangent part averages to 0 whatever loc is,
    # so the pathwise gradient with respect to loc has expectation A_D(kappa) c
    torch.manual_seed(0)
    dim, kappa, n = 5, 10.0, 40000
    loc = random_unit(dim).requires_grad_()
    c = torch.randn(dim, dtype=torch.float64)
    (VonMisesFisher(loc, kappa).rsample((n,)) @ c).mean().backward()
    assert torch.allclose(loc.grad, _mean_resultant(dim, kappa) * c, atol=0.03)


def test_rsample_gradients_reach_the_head():
    torch.manual_seed(0)
    head = VMFHead(input_dim=8, latent_dim=6, kappa=20.0)
    z = head(torch.randn(4, 8)).rsample((3,))
    (z * torch.randn(6)).sum().backward()
    assert torch.isfinite(head.to_loc.weight.grad).all() and head.to_loc.weight.grad.abs().sum() > 0


# -----------------------------------------------------------------------------
# von Mises-Fisher density, entropy and KL


@pytest.mark.parametrize("dim,kappa,expected", [(32, 13, 2.173), (16, 32, 7.582), (64, 50, 11.450), (32, 100, 20.759)])
def test_kl_reference_values(dim, kappa, expected):
    q = VonMisesFisher(random_unit(2, dim, dtype=torch.float32), kappa)
    kl = kl_divergence(q, HypersphericalUniform(dim, (2,)))
    assert kl.shape == (2,)
    assert torch.allclose(kl, torch.full((2,), expected), atol=1e-3)


@pytest.mark.parametrize("dim,kappa", [(2, 5.0), (3, 1.0), (32, 13.0), (128, 100.0), (10, 1000.0)])
def test_kl_matches_scipy_entropy_and_monte_carlo(dim, kappa):
    torch.manual_seed(0)
    mu = random_unit(dim)
    q, prior = VonMisesFisher(mu, kappa), HypersphericalUniform(dim, dtype=torch.float64)
    kl = kl_divergence(q, prior).item()
    scipy_entropy = stats.vonmises_fisher(mu.numpy(), kappa).entropy()
    assert q.entropy().item() == pytest.approx(scipy_entropy, rel=1e-8, abs=1e-8)
    assert kl == pytest.approx(-scipy_entropy + log_sphere_area(dim), rel=1e-8, abs=1e-8)
    z = q.sample((20000,))
    log_ratio = q.log_prob(z) - prior.log_prob(z)
    assert abs(log_ratio.mean().item() - kl) < 5 * log_ratio.std().item() / math.sqrt(z.shape[0])


@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0])
def test_log_prob_closed_form_in_three_dimensions(kappa):
    mu, z = random_unit(3), random_unit(100, 3, seed=1)
    expected = math.log(kappa / (4 * math.pi * math.sinh(kappa))) + kappa * (z @ mu)
    assert torch.allclose(VonMisesFisher(mu, kappa).log_prob(z), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kappa", [0.5, 20.0, 500.0])
def test_log_prob_matches_scipy(kappa):
    dim = 16
    mu = random_unit(dim)
    ref = stats.vonmises_fisher(mu.numpy(), kappa)
    z = torch.cat([random_unit(50, dim, seed=1), torch.from_numpy(ref.rvs(50, random_state=2))])
    assert np.allclose(VonMisesFisher(mu, kappa).log_prob(z).numpy(), ref.logpdf(z.numpy()), rtol=1e-9)


@pytest.mark.parametrize("dim", [2, 3, 10, 64])
@pytest.mark.parametrize("kappa", [0.1, 10.0, 300.0])
def test_density_integrates_to_one(dim, kappa):
    # z = cos(t) mu + sin(t) v sweeps a circle of latitude of size |S^{D-2}| sin^{D-2}(t)
    mu, v = torch.eye(dim, dtype=torch.float64)[:2]
    q = VonMisesFisher(mu, kappa)

    def density(t):
        z = math.cos(t) * mu + math.sin(t) * v
        log_p = q.log_prob(z).item() + log_sphere_area(dim - 1) + (dim - 2) * math.log(max(math.sin(t), 1e-300))
        return math.exp(log_p)

    total, _ = integrate.quad(density, 0, math.pi, points=[min(1.0, 10 / math.sqrt(kappa))], limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_log_prob_broadcasts_over_sample_dims():
    q = VonMisesFisher(random_unit(4, 8), 10.0)
    z = q.sample((7,))  # (K, B, D)
    log_q = q.log_prob(z)
    assert log_q.shape == (7, 4)
    assert torch.allclose(log_q[3, 2], q.log_prob(z[3])[2])


@pytest.mark.parametrize("dim", [2, 512])
@pytest.mark.parametrize("kappa", [0.1, 1e4])
def test_extreme_dimensions_and_concentrations_are_finite(dim, kappa):
    torch.manual_seed(0)
    q = VonMisesFisher(random_unit(4, dim, dtype=torch.float32), kappa)
    z = q.rsample((64,))
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=-1), torch.ones(64, 4), atol=1e-5)
    assert torch.isfinite(q.log_prob(z)).all() and torch.isfinite(q.entropy()).all()
    kl = kl_divergence(q, HypersphericalUniform(dim, (4,)))
    assert torch.isfinite(kl).all() and (kl >= -1e-6).all()
    assert 0 < _mean_resultant(dim, kappa) < 1


def test_kl_small_concentration_limit():
    # for kappa -> 0, A_D ~ kappa / D and log C_D ~ -log|S| - kappa^2 / 2D, so KL ~ kappa^2 / 2D;
    # at D = 512, kappa = 0.1, scipy's ive underflows and the series takes over
    dim, kappa = 512, 0.1
    kl = kl_divergence(VonMisesFisher(random_unit(dim), kappa), HypersphericalUniform(dim)).item()
    assert kl == pytest.approx(kappa**2 / (2 * dim), rel=1e-3)


@pytest.mark.parametrize("v", [0.0, 0.5, 10.0, 255.0])
@pytest.mark.parametrize("x", [0.1, 1.0, 30.0, 300.0])
def test_log_bessel_series_agrees_with_scipy_where_both_work(v, x):
    assert _log_iv_series(v, x) == pytest.approx(_log_iv(v, x), rel=1e-12, abs=1e-10)


def test_vmf_validates_its_arguments():
    with pytest.raises(ValueError):
        VonMisesFisher(torch.tensor([[1.0, 1.0]]), 5.0, validate_args=True)
    with pytest.raises(ValueError):
        VonMisesFisher(random_unit(2, 3), torch.tensor([1.0, 2.0]))


# -----------------------------------------------------------------------------
# uniform prior on the sphere


@pytest.mark.parametrize("dim,log_area", [(2, math.log(2 * math.pi)), (3, math.log(4 * math.pi))])
def test_uniform_log_prob_and_entropy(dim, log_area):
    prior = HypersphericalUniform(dim, batch_shape=(5,))
    assert torch.allclose(prior.log_prob(random_unit(3, 5, dim)), torch.full((3, 5), -log_area, dtype=torch.float64))
    assert torch.allclose(prior.entropy(), torch.full((5,), log_area))


def test_uniform_samples_are_isotropic_on_the_sphere():
    torch.manual_seed(0)
    z = HypersphericalUniform(10).sample((20000,))
    assert torch.allclose(z.norm(dim=-1), torch.ones(20000), atol=1e-5)
    assert z.mean(0).abs().max() < 5 / math.sqrt(10 * 20000)  # E[z_d^2] = 1/D


# -----------------------------------------------------------------------------
# Gaussian heads


def test_gaussian_kl_closed_form_and_monte_carlo():
    torch.manual_seed(0)
    head = GaussianHead(input_dim=12, latent_dim=5).double()
    q = head(torch.randn(3, 12, dtype=torch.float64))
    kl = kl_divergence(q, head.prior((3,)))
    mu, var = q.base_dist.loc, q.base_dist.scale**2
    assert kl.shape == (3,)
    assert torch.allclose(kl, 0.5 * (mu**2 + var - var.log() - 1).sum(-1))
    z = q.sample((20000,))
    log_ratio = q.log_prob(z) - head.prior((3,)).log_prob(z)  # (K, B)
    assert ((log_ratio.mean(0) - kl).abs() < 5 * log_ratio.std(0) / math.sqrt(20000)).all()


def bn_batch(seed=0, batch=256, input_dim=32):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(batch, input_dim, generator=g) + 1


@pytest.mark.parametrize("gamma", [0.3, 0.6, 1.0])
def test_bn_head_kl_lower_bound(gamma):
    torch.manual_seed(0)
    head = BNGaussianHead(input_dim=32, latent_dim=16, gamma=gamma).train()
    q = head(bn_batch())
    bound = 16 * gamma**2 / 2
    assert (0.5 * q.base_dist.loc.pow(2).sum(-1).mean()).item() >= bound * (1 - 1e-3)  # BN's eps
    assert kl_divergence(q, head.prior((256,))).mean().item() >= bound
    assert "gamma" not in dict(head.named_parameters()) and head.beta.requires_grad


@pytest.mark.parametrize("tau", [0.2, 0.5, 0.8])
def test_scaled_bn_head_kl_lower_bound_and_unit_second_moment(tau):
    torch.manual_seed(0)
    head = ScaledBNGaussianHead(input_dim=32, latent_dim=16, tau=tau).train()
    with torch.no_grad():
        head.theta.normal_(0, 3)
    q = head(bn_batch())
    assert kl_divergence(q, head.prior((256,))).mean().item() >= 16 * tau / 2
    # gamma_loc^2 + gamma_scale^2 = 1 makes the aggregate posterior match the prior's E[z^2] = 1
    second_moment = (q.base_dist.loc**2 + q.base_dist.scale**2).mean(0)
    assert torch.allclose(second_moment, torch.ones(16), atol=1e-3)


def test_scaled_bn_theta_is_trained():
    torch.manual_seed(0)
    head = ScaledBNGaussianHead(input_dim=32, latent_dim=16).train()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    q = head(bn_batch())
    kl_divergence(q, head.prior((256,))).mean().backward()
    assert head.theta.grad is not None and (head.theta.grad != 0).all()
    before = head.theta.detach().clone()
    optimizer.step()
    assert not torch.equal(before, head.theta.detach())


@pytest.mark.parametrize("name", ["bn", "bn-tau"])
def test_bn_heads_accept_a_batch_of_one(name):
    head = POSTERIORS[name](input_dim=32, latent_dim=16).train()
    head(bn_batch())  # populate the running statistics
    running = [b.clone() for b in head.buffers()]
    q = head(bn_batch(seed=1)[:1])
    assert q.batch_shape == (1,) and torch.isfinite(q.rsample()).all()
    assert all(torch.equal(a, b) for a, b in zip(running, head.buffers()))  # no update from one example
    assert torch.isfinite(head.eval()(bn_batch(seed=1)[:1]).rsample()).all()


@pytest.mark.parametrize("name", ["bn", "bn-tau"])
def test_bn_heads_use_running_stats_in_eval(name):
    head = POSTERIORS[name](input_dim=32, latent_dim=16).train()
    for seed in range(5):
        head(bn_batch(seed))
    h = bn_batch(seed=9, batch=8)
    head.eval()
    alone, together = head(h[:1]), head(h)
    assert torch.allclose(alone.base_dist.loc[0], together.base_dist.loc[0], atol=1e-6)
    assert torch.allclose(alone.base_dist.scale[0], together.base_dist.scale[0], atol=1e-6)


# -----------------------------------------------------------------------------
# interpolation and the shared head interface


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slerp_stays_on_sphere_with_exact_endpoints(dtype):
    z0, z1 = random_unit(4, 8, dtype=dtype, seed=1), random_unit(4, 8, dtype=dtype, seed=2)
    path = slerp(z0, z1, 11)
    assert path.shape == (11, 4, 8)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path.norm(dim=-1), torch.ones(11, 4, dtype=dtype), atol=1e-6)
    step_angles = torch.arccos((path[1:] * path[:-1]).sum(-1).clamp(-1, 1))  # constant speed
    assert torch.allclose(step_angles, step_angles[:1].expand_as(step_angles), atol=1e-3)


def test_slerp_between_equal_points_is_constant():
    z = random_unit(3, 5)
    assert torch.allclose(slerp(z, z, 4), z.expand(4, 3, 5))


def test_lerp_has_exact_endpoints_and_even_steps():
    z0, z1 = torch.randn(2, 6), torch.randn(2, 6)
    path = lerp(z0, z1, 7)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path[3], (z0 + z1) / 2)


HEAD_KWARGS = {"gaussian": {}, "bn": {"gamma": 0.6}, "bn-tau": {"tau": 0.5}, "vmf": {"kappa": 50.0}}


@pytest.mark.parametrize("name", sorted(POSTERIORS))
def test_heads_share_one_interface(name):
    torch.manual_seed(0)
    head = POSTERIORS[name](input_dim=12, latent_dim=6, **HEAD_KWARGS[name])
    q = head(torch.randn(4, 12))
    assert head.latent_dim == 6 and q.batch_shape == (4,) and q.event_shape == (6,)
    z = q.rsample((3,))
    assert z.shape == (3, 4, 6) and q.log_prob(z).shape == (3, 4) and q.mode.shape == (4, 6)
    kl = kl_divergence(q, head.prior((4,)))
    assert kl.shape == (4,) and torch.isfinite(kl).all()
    assert head.sample_prior(5).shape == (5, 6)
    path = head.interpolate(q.mode[0], q.mode[1], 9)
    assert path.shape == (9, 6) and torch.equal(path[0], q.mode[0]) and torch.equal(path[-1], q.mode[1])
