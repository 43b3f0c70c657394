"""A latent diffusion prior over z (Lovelace et al. 2023, "Latent Diffusion for Language Generation"): a residual
MLP denoiser trained on the whitened training points, optionally given each point's class (a poem's form), with
a cosine noise schedule (Nichol & Dhariwal 2021) and v-prediction (Salimans & Ho 2022), sampled by deterministic
DDIM (Song et al. 2021) in a chosen number of steps, optionally self-conditioned on its own previous estimate of
the clean point (Chen et al. 2023, as in Lovelace et al.). It has no tractable log p(z).
Shapes: N points, D latent size, H hidden width, C classes.
"""

import math

import torch
from torch import nn

from textvae.errors import TextVAEError
from textvae.priors.fitting import (Posteriors, add_whitening, fit_minibatch, fit_whitening, labels_for, unwhiten,
                                    whiten)


def cosine_schedule(t: torch.Tensor, offset: float = 0.008) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t and sigma_t (alpha^2 + sigma^2 = 1) at times t in [0, 1]: alpha_1 is 0, pure noise."""
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) / math.cos(offset / (1 + offset) * math.pi / 2)
    alpha = f.clamp(0.0, 1.0)
    return alpha, (1 - alpha ** 2).clamp_min(0.0).sqrt()


def _time_features(t: torch.Tensor, size: int) -> torch.Tensor:  # (N,) -> (N, size)
    freqs = torch.exp(-math.log(1000.0) * torch.arange(size // 2, device=t.device) / (size // 2))
    angles = 1000.0 * t[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.up, self.down = nn.Linear(hidden, 2 * hidden), nn.Linear(2 * hidden, hidden)

    def forward(self, h):  # (N, H)
        return h + self.down(nn.functional.silu(self.up(self.norm(h))))


class Denoiser(nn.Module):
    """v-prediction from the noisy point, the time, the class, and (self-conditioning) an earlier estimate of the
    clean point."""

    def __init__(self, latent_dim: int, hidden: int, blocks: int, classes: int):
        super().__init__()
        self.inp = nn.Linear(2 * latent_dim, hidden)
        self.time = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label = nn.Embedding(max(classes, 1), hidden)
        self.blocks = nn.ModuleList(_Block(hidden) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, latent_dim))

    def forward(self, x_t, t, x0_estimate, labels):  # (N, D), (N,), (N, D), (N,) -> (N, D)
        h = self.inp(torch.cat([x_t, x0_estimate], dim=1)) + self.time(_time_features(t, 64)) + self.label(labels)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


class DiffusionPrior(nn.Module):
    kind, has_log_prob = "diffusion", False

    def __init__(self, latent_dim: int, hidden: int = 384, blocks: int = 3, steps: int = 20,
                 self_condition: bool = True, classes: tuple[str, ...] = (), info: dict | None = None):
        super().__init__()
        self.classes = tuple(classes)
        self.denoiser = Denoiser(latent_dim, hidden, blocks, len(self.classes))
        add_whitening(self, latent_dim, self.classes)
        self.steps, self.self_condition, self.schedule = steps, self_condition, cosine_schedule
        self.info = dict(info or {}, latent_dim=latent_dim, hidden=hidden, blocks=blocks, steps=steps,
                         self_condition=self_condition, classes=list(self.classes))

    @property
    def latent_dim(self) -> int:
        return self.shift.numel()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise TextVAEError("a diffusion prior has no tractable log p(z): score the likelihood with --iw-prior "
                           "standard, gmm or flow")

    def loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean squared v-prediction error at uniform times; with self-conditioning, half the batch first
        estimates the clean point without gradient and conditions on it."""
        x0 = whiten(z, self.shift, self.scale_tril)  # (N, D)
        t = torch.rand(x0.size(0), device=x0.device)
        alpha, sigma = (s[:, None] for s in self.schedule(t))
        noise = torch.randn_like(x0)
        x_t = alpha * x0 + sigma * noise
        estimate = torch.zeros_like(x0)
        if self.self_condition:
            with torch.no_grad():
                first = alpha * x_t - sigma * self.denoiser(x_t, t, estimate, labels)
            estimate = torch.where(torch.rand(x0.size(0), 1, device=x0.device) < 0.5, first, estimate)
        target = alpha * noise - sigma * x0
        return (self.denoiser(x_t, t, estimate, labels) - target).pow(2).sum(dim=1).mean()

    def _clean_estimate(self, x, t, estimate, labels):
        """The denoiser's estimates of the clean point and of the noise at x, time t: (N, D) each."""
        n = x.size(0)
        alpha, sigma = self.schedule(t)
        v = self.denoiser(x, t.expand(n), estimate if self.self_condition else torch.zeros_like(x), labels)
        return alpha * x - sigma * v, sigma * x + alpha * v

    def _times(self, steps: int | None, device) -> torch.Tensor:
        return torch.linspace(1.0, 0.0, (steps or self.steps) + 1, device=device)

    @torch.no_grad()
    def from_base(self, noise: torch.Tensor, labels: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from the noise at t = 1 to t = 0 in `steps` equal steps (default the fitted choice),
        given each point's class: (N, D), (N,) -> (N, D)."""
        x, x0 = noise, torch.zeros_like(noise)
        times = self._times(steps, noise.device)
        for t, s in zip(times[:-1], times[1:]):
            x0, eps = self._clean_estimate(x, t, x0, labels)
            alpha_s, sigma_s = self.schedule(s)
            x = alpha_s * x0 + sigma_s * eps
        return unwhiten(x0, self.shift, self.scale_tril)

    @torch.no_grad()
    def to_base(self, z: torch.Tensor, labels: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """DDIM inversion: the deterministic sampler run backwards from z at t = 0 to its noise at t = 1, each
        step taken with the denoiser's reading at the step's start. Approximate: from_base(to_base(z)) returns
        z only up to the discretisation error of the steps."""
        x = whiten(z, self.shift, self.scale_tril)
        x0 = torch.zeros_like(x)
        times = self._times(steps, z.device).flip(0)
        for s, t in zip(times[:-1], times[1:]):
            x0, eps = self._clean_estimate(x, s, x0, labels) if s > 0 else (x, torch.zeros_like(x))
            alpha_t, sigma_t = self.schedule(t)
            x = alpha_t * x0 + sigma_t * eps
        return x

    @torch.no_grad()
    def sample(self, n: int, condition: str | None = None, steps: int | None = None) -> torch.Tensor:  # (n, D)
        """DDIM from pure noise, given the class `condition` where the prior knows it (a form), else with classes
        drawn by their shares."""
        labels = labels_for(n, condition, self.classes, self.class_log_probs, self.shift.device)
        return self.from_base(torch.randn(n, self.latent_dim, device=self.shift.device), labels, steps)

    def state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], info: dict) -> "DiffusionPrior":
        prior = cls(info["latent_dim"], info["hidden"], info["blocks"], info["steps"], info["self_condition"],
                    tuple(info["classes"]), info)
        prior.load_state_dict(tensors)
        return prior.eval()


def fit(train: Posteriors, validation: Posteriors, *, hidden: int = 384, blocks: int = 3, steps: int = 20,
        self_condition: bool = True, epochs: int = 100, batch_size: int = 512, lr: float = 1e-3, seed: int = 0,
        progress: bool = False) -> DiffusionPrior:
    """A denoiser fitted to the training points, the epoch with the lowest validation loss kept."""
    torch.manual_seed(seed)
    prior = DiffusionPrior(train.loc.size(1), hidden, blocks, steps, self_condition, train.classes)
    fit_whitening(prior, train, seed)
    history = fit_minibatch(prior, DiffusionPrior.loss, train, validation, epochs=epochs, batch_size=batch_size,
                            lr=lr, seed=seed, progress=progress, desc="fitting the denoiser")
    prior.info |= dict(epochs=epochs, batch_size=batch_size, lr=lr, history=history)
    return prior.eval()


__all__ = ["DiffusionPrior", "cosine_schedule", "fit"]
