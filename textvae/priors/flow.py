"""A normalizing-flow prior over z: zuko's masked affine flow in coupling form (passes=2, so that both log p(z)
and sampling take one pass per transform; Dinh et al. 2017, Papamakarios et al. 2017), on whitened points and
optionally conditioned on a class (a poem's form) through zuko's context input. Its log p(z) is exact, the
classes summed out (log sum_c pi_c p(z|c)), so `evaluate --iw-prior flow` is a likelihood bound.
Shapes: N points, D latent size, C classes.
"""

import torch
import zuko
from torch import nn

from textvae.priors.fitting import (Posteriors, add_whitening, fit_minibatch, fit_whitening, labels_for, log_det,
                                    unwhiten, whiten)


class FlowPrior(nn.Module):
    kind, has_log_prob = "flow", True

    def __init__(self, latent_dim: int, transforms: int = 8, hidden: int = 256, classes: tuple[str, ...] = (),
                 info: dict | None = None):
        super().__init__()
        self.classes = tuple(classes)
        self.flow = zuko.flows.MAF(latent_dim, context=len(self.classes), transforms=transforms, passes=2,
                                   hidden_features=(hidden, hidden))
        add_whitening(self, latent_dim, self.classes)
        self.info = dict(info or {}, latent_dim=latent_dim, transforms=transforms, hidden=hidden,
                         classes=list(self.classes))

    @property
    def latent_dim(self) -> int:
        return self.shift.numel()

    def _context(self, labels: torch.Tensor) -> torch.Tensor | None:  # (N,) -> (N, C)
        if not self.classes:
            return None
        return nn.functional.one_hot(labels, len(self.classes)).to(self.shift.dtype)

    def conditional_log_prob(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # (N, D), (N,) -> (N,)
        u = whiten(z, self.shift, self.scale_tril)
        return self.flow(self._context(labels)).log_prob(u) - log_det(self.scale_tril)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:  # (..., D) -> (...)
        """log p(z), the classes summed out; z is whitened once for all of them."""
        u = whiten(z.reshape(-1, z.size(-1)), self.shift, self.scale_tril)  # (N, D)
        if not self.classes:
            return (self.flow().log_prob(u) - log_det(self.scale_tril)).reshape(z.shape[:-1])
        labels = torch.arange(len(self.classes), device=u.device)
        per_class = torch.stack([self.flow(self._context(labels[c].expand(len(u)))).log_prob(u)
                                 for c in range(len(self.classes))])  # (C, N)
        joint = per_class + self.class_log_probs[:, None]
        return (joint.logsumexp(dim=0) - log_det(self.scale_tril)).reshape(z.shape[:-1])

    def _distribution(self, labels: torch.Tensor):
        context = self._context(labels)
        return self.flow(context) if context is not None else self.flow()

    @torch.no_grad()
    def to_base(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # (N, D), (N,) -> (N, D)
        """Each z's point in the flow's base space, where the density is N(0, I), given its class."""
        return self._distribution(labels).transform(whiten(z, self.shift, self.scale_tril))

    @torch.no_grad()
    def from_base(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # (N, D), (N,) -> (N, D)
        """The inverse of to_base: exact up to rounding, since every transform is an affine coupling."""
        return unwhiten(self._distribution(labels).transform.inv(u), self.shift, self.scale_tril)

    @torch.no_grad()
    def sample(self, n: int, condition: str | None = None) -> torch.Tensor:  # (n, D)
        """n draws, from p(z | condition) where the prior knows that class (a form), else from p(z)."""
        labels = labels_for(n, condition, self.classes, self.class_log_probs, self.shift.device)
        context = self._context(labels)
        u = self.flow(context).sample() if context is not None else self.flow().sample((n,))
        return unwhiten(u, self.shift, self.scale_tril)

    def state(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers but for the autoregressive masks, which the constructor rebuilds."""
        return {k: v for k, v in self.state_dict().items() if not k.endswith(".mask")}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], info: dict) -> "FlowPrior":
        prior = cls(info["latent_dim"], info["transforms"], info["hidden"], tuple(info["classes"]), info)
        missing, unexpected = prior.load_state_dict(tensors, strict=False)
        if unexpected or any(not k.endswith(".mask") for k in missing):
            raise ValueError(f"the tensors do not fit a flow of this shape (missing {missing}, "
                             f"unexpected {unexpected})")
        return prior.eval()


def _nll(prior: FlowPrior, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -prior.conditional_log_prob(z, labels).mean()


def fit(train: Posteriors, validation: Posteriors, *, transforms: int = 8, hidden: int = 256, epochs: int = 30,
        batch_size: int = 512, lr: float = 1e-3, seed: int = 0, progress: bool = False) -> FlowPrior:
    """A flow fitted by maximum likelihood to the training points (given their classes), the epoch with the best
    validation log-likelihood kept; its info records the history."""
    torch.manual_seed(seed)
    prior = FlowPrior(train.loc.size(1), transforms, hidden, train.classes)
    fit_whitening(prior, train, seed)
    history = fit_minibatch(prior, _nll, train, validation, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            progress=progress, desc="fitting the flow")
    best = min(h["validation"] for h in history)
    prior.info |= dict(epochs=epochs, batch_size=batch_size, lr=lr, validation_log_prob=-best, history=history)
    return prior.eval()


__all__ = ["FlowPrior", "fit"]
