"""A normalizing-flow prior over z: zuko's masked affine flow in coupling form (passes=2, so that both log p(z)
and sampling take one pass per transform; Dinh et al. 2017, Papamakarios et al. 2017), after a fixed per-dimension
standardisation of the training points. Its log p(z) is exact, so `evaluate --iw-prior flow` is a likelihood
bound. Shapes: N points, D latent size.
"""

import torch
import zuko
from torch import nn

from textvae.priors.fitting import Posteriors, fit_minibatch, standardizer


class FlowPrior(nn.Module):
    kind, has_log_prob = "flow", True

    def __init__(self, latent_dim: int, transforms: int = 8, hidden: int = 256, info: dict | None = None):
        super().__init__()
        self.flow = zuko.flows.MAF(latent_dim, transforms=transforms, passes=2, hidden_features=(hidden, hidden))
        self.register_buffer("shift", torch.zeros(latent_dim))  # (D,) the standardisation fitted to the points
        self.register_buffer("scale", torch.ones(latent_dim))  # (D,)
        self.info = dict(info or {}, latent_dim=latent_dim, transforms=transforms, hidden=hidden)

    @property
    def latent_dim(self) -> int:
        return self.shift.numel()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:  # (..., D) -> (...)
        u = (z - self.shift) / self.scale
        return self.flow().log_prob(u) - self.scale.log().sum()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:  # (n, D)
        return self.flow().sample((n,)) * self.scale + self.shift

    def state(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers but for the autoregressive masks, which the constructor rebuilds."""
        return {k: v for k, v in self.state_dict().items() if not k.endswith(".mask")}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], info: dict) -> "FlowPrior":
        prior = cls(info["latent_dim"], info["transforms"], info["hidden"], info)
        missing, unexpected = prior.load_state_dict(tensors, strict=False)
        if unexpected or any(not k.endswith(".mask") for k in missing):
            raise ValueError(f"the tensors do not fit a flow of this shape (missing {missing}, unexpected {unexpected})")
        return prior.eval()


def _nll(prior: FlowPrior, z: torch.Tensor) -> torch.Tensor:
    return -prior.log_prob(z).mean()


def fit(train: Posteriors, validation: Posteriors, *, transforms: int = 8, hidden: int = 256, epochs: int = 30,
        batch_size: int = 512, lr: float = 1e-3, seed: int = 0, progress: bool = False) -> FlowPrior:
    """A flow fitted by maximum likelihood to the training points, the epoch with the best validation
    log-likelihood kept; its info records the history."""
    torch.manual_seed(seed)
    prior = FlowPrior(train.loc.size(1), transforms, hidden)
    prior.shift, prior.scale = standardizer(train.draw(torch.Generator().manual_seed(seed)))
    history = fit_minibatch(prior, _nll, train, validation, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            progress=progress, desc="fitting the flow")
    best = min(h["validation"] for h in history)
    prior.info |= dict(epochs=epochs, batch_size=batch_size, lr=lr, validation_log_prob=-best, history=history)
    return prior.eval()


__all__ = ["FlowPrior", "fit"]
