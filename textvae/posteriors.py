"""Posterior families q(z|x) and their priors: diagonal Gaussian, BN-Gaussian, von Mises-Fisher.

Each head maps an encoder state h (B, H) to a torch distribution over z (B, D) and owns its prior and
its interpolation rule, so the VAE only ever calls `head(h)`, `kl_divergence(q, head.prior(...))`.
Shapes: B batch, H encoder output size, D latent size, K samples per example.
Each head class names the dataclass of its own knobs in `settings` (BNSettings' gamma, ScaledBNSettings'
tau, VMFSettings' kappa), so `POSTERIORS[kind](input_dim, latent_dim, **asdict(settings))` builds any of them.
References: Bowman et al. 2016 (Gaussian text VAE); Zhu et al. 2020 (BN-VAE); Su Jianlin 2020,
"VAE + BN" (kexue.fm/archives/7381); Xu & Durrett 2018 and Davidson et al. 2018 (vMF VAE);
Wood 1994 and Mardia & Jupp 2000, ch. 9 (vMF density and sampling).
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import special
from torch.distributions import Distribution, Independent, Normal, constraints, register_kl

from textvae.fields import NoSettings, check_float, setting

# -----------------------------------------------------------------------------
# numerics for the von Mises-Fisher constants (float64, cached per (D, kappa))


def _log_iv_series(v: float, x: float) -> float:
    """log I_v(x) from the ascending series sum_k (x/2)^(2k+v) / (k! Gamma(k+v+1)) (A&S 9.6.10).

    All terms are positive, so summing them in log space loses nothing; the terms peak at
    k* = (sqrt(v^2 + x^2) - v) / 2 and then decay faster than geometrically.
    """
    peak = (math.hypot(v, x) - v) / 2
    k = np.arange(int(peak + 10 * math.sqrt(peak + 1) + 40), dtype=np.float64)
    log_terms = (2 * k + v) * math.log(x / 2) - special.gammaln(k + 1) - special.gammaln(k + v + 1)
    return float(special.logsumexp(log_terms))


def _log_iv(v: float, x: float) -> float:
    """log I_v(x) for v >= 0, x > 0 without overflow or underflow."""
    scaled = float(special.ive(v, x))  # I_v(x) e^{-x} never overflows ...
    if scaled > 1e-280:
        return math.log(scaled) + x
    return _log_iv_series(v, x)  # ... but underflows when v >> x (e.g. D = 512, kappa = 0.1)


def _log_sphere_area(dim: int) -> float:
    """log |S^{D-1}| = log(2 pi^{D/2} / Gamma(D/2)), the surface area of the unit sphere in R^D."""
    return math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)


@functools.lru_cache(maxsize=256)
def _log_normaliser(dim: int, kappa: float) -> float:
    """log C_D(kappa) = (D/2 - 1) log kappa - (D/2) log 2 pi - log I_{D/2-1}(kappa)."""
    return (dim / 2 - 1) * math.log(kappa) - dim / 2 * math.log(2 * math.pi) - _log_iv(dim / 2 - 1, kappa)


@functools.lru_cache(maxsize=256)
def _mean_resultant(dim: int, kappa: float) -> float:
    """A_D(kappa) = I_{D/2}(kappa) / I_{D/2-1}(kappa) = E[mu . z], as a difference of logs."""
    return math.exp(_log_iv(dim / 2, kappa) - _log_iv(dim / 2 - 1, kappa))


@functools.lru_cache(maxsize=64)
def _angle_table(dim: int, kappa: float, size: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Tabulated CDF of the polar angle theta = arccos(mu . z) under vMF(mu, kappa) on S^{D-1}.

    With w = cos(theta) the density p(w) ~ e^{kappa w} (1 - w^2)^{(D-3)/2} is singular at w = +-1 for
    D = 2 and squeezed into 1 - w ~ D / kappa for large kappa. In theta it becomes
    p(theta) ~ e^{kappa (cos theta - 1)} sin^{D-2} theta: bounded for every D >= 2, and sin(theta)
    is exact where 1 - w^2 would cancel. A coarse pass finds where the mass is (within 40 nats of
    the peak; its step resolves kappa up to ~1e8), a fine uniform grid there gives the CDF by the
    trapezoid rule in log space.
    """

    def log_density(theta):
        return kappa * (np.cos(theta) - 1) + special.xlogy(dim - 2, np.sin(theta))

    coarse = np.linspace(0, math.pi, 1 << 16)
    alive = np.flatnonzero(log_density(coarse) > log_density(coarse).max() - 40)
    lo, hi = coarse[max(alive[0] - 1, 0)], coarse[min(alive[-1] + 1, coarse.size - 1)]
    theta = np.linspace(lo, hi, size + 1)
    log_p = log_density(theta)
    log_cells = np.logaddexp(log_p[:-1], log_p[1:]) + math.log((hi - lo) / size / 2)
    log_cdf = np.logaddexp.accumulate(log_cells)
    cdf = np.concatenate([[0.0], np.exp(log_cdf - log_cdf[-1])])  # ends at exactly 1.0
    return cdf, theta


def _sample_angle(dim: int, kappa: float, shape: torch.Size, device) -> torch.Tensor:
    """theta ~ p(theta) by inverse-CDF lookup with linear interpolation (float64, one uniform each)."""
    cdf, theta = (torch.from_numpy(a).to(device) for a in _angle_table(dim, kappa))
    u = torch.rand(shape, dtype=torch.float64, device=device)
    # cdf[0] = 0 <= u < 1 = cdf[-1], so cdf[i-1] <= u < cdf[i] with a strictly positive cell width
    i = torch.searchsorted(cdf, u, right=True).clamp_(1, cdf.numel() - 1)
    frac = (u - cdf[i - 1]) / (cdf[i] - cdf[i - 1])
    return torch.lerp(theta[i - 1], theta[i], frac)


# -----------------------------------------------------------------------------
# distributions on the unit sphere


class _UnitSphere(constraints.Constraint):
    """Vectors of unit Euclidean norm along the last dimension."""

    event_dim = 1

    def check(self, value):
        tol = torch.finfo(value.dtype).eps ** 0.5  # rounding in D-dimensional norms, not exactness
        return (torch.linalg.vector_norm(value, dim=-1) - 1).abs() < tol


unit_sphere = _UnitSphere()


class VonMisesFisher(Distribution):
    """vMF(mu, kappa) on S^{D-1} with density C_D(kappa) e^{kappa mu.z}; kappa is one fixed scalar."""

    arg_constraints = {"loc": unit_sphere, "concentration": constraints.positive}
    support = unit_sphere
    has_rsample = True

    def __init__(self, loc, concentration, validate_args=None):
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(f"loc must have a last dimension D >= 2, got shape {tuple(loc.shape)}")
        if torch.as_tensor(concentration).numel() != 1:
            raise ValueError("concentration is a fixed scalar hyper-parameter, not a per-example tensor")
        self.loc = loc
        self.concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        self._dim, self._kappa = loc.shape[-1], float(concentration)  # host copies for scipy
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def _constant(self, value: float) -> torch.Tensor:
        return torch.full(self.batch_shape, value, dtype=self.loc.dtype, device=self.loc.device)

    @property
    def mean(self):
        return _mean_resultant(self._dim, self._kappa) * self.loc

    @property
    def mode(self):
        return self.loc

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)  # (*sample, *batch, D)
        theta = _sample_angle(self._dim, self._kappa, shape[:-1], self.loc.device).unsqueeze(-1)
        # uniform direction in the tangent space at mu: project an isotropic Gaussian off mu, twice,
        # because one pass leaves a rounding-size mu component that dominates when eps is nearly
        # parallel to mu (common for D = 2); Gram-Schmidt "twice is enough" (Parlett 1980)
        tangent = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        for _ in range(2):
            tangent = tangent - (tangent * self.loc).sum(-1, keepdim=True) * self.loc
        tangent = tangent / torch.linalg.vector_norm(tangent, dim=-1, keepdim=True).clamp_min(1e-30)
        # theta does not depend on mu (kappa is fixed), so gradients reach loc through both terms
        return theta.cos().to(self.loc.dtype) * self.loc + theta.sin().to(self.loc.dtype) * tangent

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return _log_normaliser(self._dim, self._kappa) + self._kappa * (value * self.loc).sum(-1)

    def entropy(self):
        kappa = self._kappa
        return self._constant(-kappa * _mean_resultant(self._dim, kappa) - _log_normaliser(self._dim, kappa))


class HypersphericalUniform(Distribution):
    """Uniform distribution on S^{D-1}; batch_shape/device/dtype only shape its samples and KL."""

    arg_constraints = {}
    support = unit_sphere
    has_rsample = True

    def __init__(self, dim: int, batch_shape=(), device=None, dtype=None, validate_args=None):
        self.dim, self.device = dim, torch.device(device or "cpu")
        self.dtype = dtype or torch.get_default_dtype()
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.dtype, device=self.device)
        return eps / torch.linalg.vector_norm(eps, dim=-1, keepdim=True)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -_log_sphere_area(self.dim), dtype=value.dtype, device=value.device)

    def entropy(self):
        return torch.full(self.batch_shape, _log_sphere_area(self.dim), dtype=self.dtype, device=self.device)


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p, q):
    """Exact KL = kappa A_D(kappa) + log C_D(kappa) + log |S^{D-1}| (Davidson et al. 2018)."""
    if p.event_shape != q.event_shape:
        raise ValueError(f"dimension mismatch: {p.event_shape} vs {q.event_shape}")
    dim, kappa = p._dim, p._kappa
    kl = kappa * _mean_resultant(dim, kappa) + _log_normaliser(dim, kappa) + _log_sphere_area(dim)
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return torch.full(shape, kl, dtype=p.loc.dtype, device=p.loc.device)


# -----------------------------------------------------------------------------
# interpolation


def _path_weights(steps: int, like: torch.Tensor) -> torch.Tensor:
    """t = 0..1 in `steps` points, shaped (steps, 1, ..., 1) to broadcast against z (..., D)."""
    t = torch.linspace(0, 1, steps, dtype=like.dtype, device=like.device)
    return t.view(steps, *([1] * like.dim()))


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight line z0 -> z1: (..., D) -> (steps, ..., D); both endpoints are exact."""
    t = _path_weights(steps, z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation z0 -> z1 (White 2016): the angle between the two turns at constant speed, and the
    norm follows; unit vectors stay on the great circle. (..., D) -> (steps, ..., D).

    Endpoints are exact (the weights are sin(omega)/sin(omega) and sin(0)). Nearly parallel endpoints fall
    back to a straight line rescaled to the interpolated norm; antipodal ones have no unique great circle.
    """
    t = _path_weights(steps, z0)
    n0, n1 = (torch.linalg.vector_norm(z, dim=-1, keepdim=True) for z in (z0, z1))
    omega = torch.arccos(((z0 / n0) * (z1 / n1)).sum(-1, keepdim=True).clamp(-1, 1))
    sin_omega = omega.sin()
    safe = sin_omega.clamp_min(1e-12)
    # weights first, so that x / x = 1 and sin(0) = 0 make the endpoints bit-exact
    arc = torch.sin((1 - t) * omega) / safe * z0 + torch.sin(t * omega) / safe * z1
    line = lerp(z0, z1, steps)
    line = line / torch.linalg.vector_norm(line, dim=-1, keepdim=True) * ((1 - t) * n0 + t * n1)
    return torch.where(sin_omega > 1e-6, arc, line)


# -----------------------------------------------------------------------------
# heads: encoder state h (B, H) -> q(z|x)


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """bn(x), except that a single training example, which has no batch variance, uses running stats."""
    if bn.training and x.shape[0] == 1:
        return F.batch_norm(x, bn.running_mean, bn.running_var, training=False, eps=bn.eps)
    return bn(x)


class _GaussianHead(nn.Module):
    """What the diagonal-Gaussian heads share: N(0, I) prior, linear interpolation."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def prior(self, batch_shape=(), device=None, dtype=None) -> Distribution:
        ref = next(self.parameters())
        loc = torch.zeros(*batch_shape, self.latent_dim, device=device or ref.device, dtype=dtype or ref.dtype)
        return Independent(Normal(loc, torch.ones_like(loc)), 1)

    def sample_prior(self, n: int, device=None, dtype=None) -> torch.Tensor:
        return self.prior((n,), device, dtype).sample()  # (n, D)

    def interpolate(self, z0, z1, steps: int) -> torch.Tensor:
        return lerp(z0, z1, steps)  # (steps, ..., D)


class GaussianHead(_GaussianHead):
    """q = N(loc, diag exp(logvar)) with both from linear maps of h (Kingma & Welling 2014)."""

    settings = NoSettings

    def __init__(self, input_dim: int, latent_dim: int):
        super().__init__(latent_dim)
        self.to_loc = nn.Linear(input_dim, latent_dim)
        self.to_logvar = nn.Linear(input_dim, latent_dim)

    def forward(self, h):  # (B, H) -> batch (B,), event (D,)
        return Independent(Normal(self.to_loc(h), (0.5 * self.to_logvar(h)).exp()), 1)


@dataclass(frozen=True)
class BNSettings:
    gamma: float = setting(0.6, "BN-VAE: fixed scale of the batch-normalised mean")

    def __post_init__(self):
        check_float(self, "gamma", 0, 100, low_open=True)


class BNGaussianHead(_GaussianHead):
    """BN-VAE (Zhu et al. 2020): loc = gamma * BN(W h) + beta with gamma fixed, so that over a
    training batch E[loc_d^2] = gamma^2 + beta_d^2 and the mean KL is at least D gamma^2 / 2
    (up to BN's eps: an encoder that makes W h nearly constant over the batch, its variance under eps,
    escapes the floor, as at gamma 1.58 in the rate study). Log-variance is left as in GaussianHead."""

    settings = BNSettings

    def __init__(self, input_dim: int, latent_dim: int, gamma: float = 0.6):
        super().__init__(latent_dim)
        self.gamma = gamma  # a constant: were it trainable, it could shrink to 0 and undo the bound
        self.to_loc = nn.Linear(input_dim, latent_dim)
        self.to_logvar = nn.Linear(input_dim, latent_dim)
        self.loc_bn = nn.BatchNorm1d(latent_dim, affine=False)
        self.beta = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, h):  # (B, H) -> batch (B,), event (D,)
        loc = self.gamma * _batch_norm(self.loc_bn, self.to_loc(h)) + self.beta
        return Independent(Normal(loc, (0.5 * self.to_logvar(h)).exp()), 1)


@dataclass(frozen=True)
class ScaledBNSettings:
    tau: float = setting(0.5, "τ-scaled BN: share of the prior variance carried by the mean")

    def __post_init__(self):
        check_float(self, "tau", 0, 1, low_open=True, high_open=True)


class ScaledBNGaussianHead(_GaussianHead):
    """Su's "VAE + BN": BN (no affine) on loc and on the scale sigma itself, rescaled by
    gamma_loc = sqrt(tau + (1 - tau) sigmoid(theta)) and gamma_scale = sqrt((1 - tau) sigmoid(-theta)).
    Since gamma_loc^2 + gamma_scale^2 = 1 the aggregate posterior has E[z_d^2] = 1 like the prior,
    and E[loc_d^2] = gamma_loc^2 >= tau gives a mean KL of at least D tau / 2.
    """

    settings = ScaledBNSettings

    def __init__(self, input_dim: int, latent_dim: int, tau: float = 0.5):
        super().__init__(latent_dim)
        ScaledBNSettings(tau)  # the mean would carry all the variance at 1, and none at 0
        self.tau = tau
        self.to_loc = nn.Linear(input_dim, latent_dim)
        # sigma is taken straight from the linear map, as in Su's code: BN centres it anyway, so a
        # positivity transform before BN would not keep it positive
        self.to_scale = nn.Linear(input_dim, latent_dim)
        self.loc_bn = nn.BatchNorm1d(latent_dim, affine=False)
        self.scale_bn = nn.BatchNorm1d(latent_dim, affine=False)
        self.theta = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, h):  # (B, H) -> batch (B,), event (D,)
        gamma_loc = (self.tau + (1 - self.tau) * torch.sigmoid(self.theta)).sqrt()
        gamma_scale = ((1 - self.tau) * torch.sigmoid(-self.theta)).sqrt()
        loc = gamma_loc * _batch_norm(self.loc_bn, self.to_loc(h))
        # after BN sigma is negative about half the time; N(mu, sigma^2) depends on sigma^2 only, so
        # |sigma| is the same distribution (Su samples mu + sigma * eps directly). The floor keeps
        # Normal's scale > 0 where sigma or gamma_scale is exactly 0.
        scale = (gamma_scale * _batch_norm(self.scale_bn, self.to_scale(h))).abs().clamp_min(1e-6)
        return Independent(Normal(loc, scale), 1)


@dataclass(frozen=True)
class VMFSettings:
    kappa: float = setting(50.0, "vMF concentration (fixed)")

    def __post_init__(self):
        check_float(self, "kappa", 0, 1e6, low_open=True)


class VMFHead(nn.Module):
    """q = vMF(normalise(W h), kappa) with kappa fixed, so KL to the uniform prior is a constant
    that never collapses to 0 (Xu & Durrett 2018)."""

    settings = VMFSettings

    def __init__(self, input_dim: int, latent_dim: int, kappa: float = 50.0):
        super().__init__()
        self.latent_dim, self.kappa = latent_dim, kappa
        self.to_loc = nn.Linear(input_dim, latent_dim)

    def forward(self, h):  # (B, H) -> batch (B,), event (D,)
        raw = self.to_loc(h)
        norm = torch.linalg.vector_norm(raw, dim=-1, keepdim=True)
        # a zero vector has no direction; e1 is arbitrary but keeps loc on the sphere and grads finite
        e1 = F.one_hot(torch.tensor(0, device=raw.device), self.latent_dim).to(raw.dtype)
        loc = torch.where(norm > 1e-12, raw / norm.clamp_min(1e-12), e1)
        return VonMisesFisher(loc, self.kappa)

    def prior(self, batch_shape=(), device=None, dtype=None) -> Distribution:
        ref = next(self.parameters())
        return HypersphericalUniform(self.latent_dim, batch_shape, device or ref.device, dtype or ref.dtype)

    def sample_prior(self, n: int, device=None, dtype=None) -> torch.Tensor:
        return self.prior((n,), device, dtype).sample()  # (n, D)

    def interpolate(self, z0, z1, steps: int) -> torch.Tensor:
        return slerp(z0, z1, steps)  # (steps, ..., D)


POSTERIORS = {"gaussian": GaussianHead, "bn": BNGaussianHead, "bn-tau": ScaledBNGaussianHead, "vmf": VMFHead}
