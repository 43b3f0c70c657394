"""What a prior is fitted to, and the minibatch loop that fits the neural ones (flow, diffusion).

A prior is fitted to the training set's posteriors: each example's mean alone ("means"), or draws z ~ q(z|x)
("samples"), which together are draws from the aggregate posterior q(z) = E_x q(z|x), the density the decoder
was trained on. The neural priors draw afresh every epoch, so they see the aggregate posterior itself rather than
one fixed sample of it. Each point may carry a class (a poem's form), so that a prior can also be sampled given
one: p(z | 7x4) where the user asks for 7x4 poems. The flow and the diffusion prior first whiten the points with
their mean and the Cholesky factor of their covariance, an exact affine map whose log-determinant the flow's
density includes.
Shapes: N points, D latent size, C classes.
"""

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

FIT_ON = {"means": "posterior means", "samples": "posterior samples"}


@dataclass(frozen=True)
class Posteriors:
    loc: torch.Tensor  # (N, D) posterior means
    scale: torch.Tensor  # (N, D) posterior standard deviations; zeros where the fit uses the means alone
    labels: torch.Tensor | None = None  # (N,) each point's class index, or None: no classes
    classes: tuple[str, ...] = ()  # the class names the labels index

    def __len__(self) -> int:
        return self.loc.size(0)

    def class_log_probs(self) -> torch.Tensor:  # (C,) the classes' shares, logged
        counts = torch.bincount(self.labels, minlength=len(self.classes)).float() + 1.0  # +1: no empty class
        return (counts / counts.sum()).log()

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:  # (N, D)
        if not self.scale.any():
            return self.loc
        noise = torch.randn(self.loc.shape, generator=generator, dtype=self.loc.dtype)
        return self.loc + self.scale * noise


def whitener(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (D,) and the lower Cholesky factor L (D, D) of the covariance of the points (slightly
    regularised): u = L^-1 (z - mean) has zero mean and identity covariance."""
    points = points.double()
    cov = torch.cov(points.T) + 1e-6 * torch.eye(points.size(1), dtype=points.dtype)
    return points.mean(0).float(), torch.linalg.cholesky(cov).float()


def add_whitening(module: nn.Module, latent_dim: int, classes: tuple[str, ...]) -> None:
    """The buffers a whitened, class-aware prior keeps: shift (D,), scale_tril (D, D), class_log_probs (C,)."""
    module.register_buffer("shift", torch.zeros(latent_dim))
    module.register_buffer("scale_tril", torch.eye(latent_dim))
    module.register_buffer("class_log_probs", torch.zeros(len(classes)))


def fit_whitening(module: nn.Module, train: Posteriors, seed: int) -> None:
    """Set those buffers from the training points (one seeded draw of them) and their classes' shares."""
    module.shift, module.scale_tril = whitener(train.draw(torch.Generator().manual_seed(seed)))
    if train.classes:
        module.class_log_probs = train.class_log_probs()


def whiten(z: torch.Tensor, shift: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:  # (..., D)
    centred = (z - shift).unsqueeze(-1)  # (..., D, 1)
    return torch.linalg.solve_triangular(scale_tril, centred, upper=False).squeeze(-1)


def unwhiten(u: torch.Tensor, shift: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:  # (..., D)
    return u @ scale_tril.T + shift


def log_det(scale_tril: torch.Tensor) -> torch.Tensor:
    """log |det L|: what whitening subtracts from a density's log."""
    return scale_tril.diagonal().abs().log().sum()


def labels_for(n: int, condition: str | None, classes: tuple[str, ...], class_log_probs: torch.Tensor,
               device) -> torch.Tensor:
    """(n,) class indices: all `condition` where the prior knows that class, else drawn from the classes' shares
    (zeros for a prior without classes)."""
    if not classes:
        return torch.zeros(n, dtype=torch.long, device=device)
    if condition is not None and condition in classes:
        return torch.full((n,), classes.index(condition), device=device)
    return torch.distributions.Categorical(logits=class_log_probs).sample((n,)).to(device)


def _labels(points: Posteriors) -> torch.Tensor:
    return points.labels if points.labels is not None else torch.zeros(len(points), dtype=torch.long)


def fit_minibatch(module: nn.Module, loss, train: Posteriors, validation: Posteriors, *, epochs: int,
                  batch_size: int = 512, lr: float = 1e-3, seed: int = 0, progress: bool = False,
                  desc: str = "fitting") -> list[dict]:
    """Minimise `loss(module, z, labels)` (a mean over the batch) with AdamW and a cosine learning rate; the
    module keeps the parameters of the epoch with the lowest validation loss. Returns each epoch's train and
    validation loss."""
    generator = torch.Generator().manual_seed(seed)
    valid_z = validation.draw(torch.Generator().manual_seed(seed + 1)).float()
    train_labels, valid_labels = _labels(train), _labels(validation)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    history, best, best_state = [], math.inf, None
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        module.train()
        z, order, total = train.draw(generator).float(), torch.randperm(len(train), generator=generator), 0.0
        for start in range(0, len(train), batch_size):
            batch = order[start:start + batch_size]
            value = loss(module, z[batch], train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total += value.item() * min(batch_size, len(train) - start)
        held_out = evaluate_loss(module, loss, valid_z, valid_labels, batch_size, seed)
        history.append(dict(epoch=epoch + 1, train=total / len(train), validation=held_out))
        if held_out < best:
            best, best_state = held_out, copy.deepcopy(module.state_dict())
        bar.set_postfix(train=f"{total / len(train):.3f}", validation=f"{held_out:.3f}")
    module.load_state_dict(best_state)
    return history


@torch.no_grad()
def evaluate_loss(module: nn.Module, loss, z: torch.Tensor, labels: torch.Tensor, batch_size: int,
                  seed: int) -> float:
    """The loss over z in batches, seeded so that a stochastic loss (diffusion's noise) compares across epochs."""
    module.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return sum(loss(module, z[s:s + batch_size], labels[s:s + batch_size]).item() * len(z[s:s + batch_size])
                   for s in range(0, len(z), batch_size)) / len(z)
