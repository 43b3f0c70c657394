"""What a prior is fitted to, and the minibatch loop that fits the neural ones (flow, diffusion).

A prior is fitted to the training set's posteriors: each example's mean alone ("means"), or draws z ~ q(z|x)
("samples"), which together are draws from the aggregate posterior q(z) = E_x q(z|x), the density the decoder
was trained on. The neural priors draw afresh every epoch, so they see the aggregate posterior itself rather than
one fixed sample of it. Shapes: N points, D latent size.
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

    def __len__(self) -> int:
        return self.loc.size(0)

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:  # (N, D)
        if not self.scale.any():
            return self.loc
        noise = torch.randn(self.loc.shape, generator=generator, dtype=self.loc.dtype)
        return self.loc + self.scale * noise


def standardizer(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension shift and scale (D,) that bring the points to zero mean and unit variance."""
    return points.mean(0).float(), points.std(0).clamp_min(1e-6).float()


def fit_minibatch(module: nn.Module, loss, train: Posteriors, validation: Posteriors, *, epochs: int,
                  batch_size: int = 512, lr: float = 1e-3, seed: int = 0, progress: bool = False,
                  desc: str = "fitting") -> list[dict]:
    """Minimise `loss(module, z)` (a mean over the batch) with AdamW and a cosine learning rate; the module keeps
    the parameters of the epoch with the lowest validation loss. Returns each epoch's train and validation loss."""
    generator = torch.Generator().manual_seed(seed)
    valid_z = validation.draw(torch.Generator().manual_seed(seed + 1)).float()
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    history, best, best_state = [], math.inf, None
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        module.train()
        z, order, total = train.draw(generator).float(), torch.randperm(len(train), generator=generator), 0.0
        for start in range(0, len(train), batch_size):
            value = loss(module, z[order[start:start + batch_size]])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total += value.item() * min(batch_size, len(train) - start)
        held_out = evaluate_loss(module, loss, valid_z, batch_size, seed)
        history.append(dict(epoch=epoch + 1, train=total / len(train), validation=held_out))
        if held_out < best:
            best, best_state = held_out, copy.deepcopy(module.state_dict())
        bar.set_postfix(train=f"{total / len(train):.3f}", validation=f"{held_out:.3f}")
    module.load_state_dict(best_state)
    return history


@torch.no_grad()
def evaluate_loss(module: nn.Module, loss, z: torch.Tensor, batch_size: int, seed: int) -> float:
    """The loss over z in batches, seeded so that a stochastic loss (diffusion's noise) compares across epochs."""
    module.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return sum(loss(module, z[s:s + batch_size]).item() * len(z[s:s + batch_size])
                   for s in range(0, len(z), batch_size)) / len(z)
