"""Corruption of the encoder's input for denoising training (Shen et al. 2020, "Educating Text Autoencoders:
Latent Representation Guidance via Denoising"): the encoder reads a damaged copy of each text while the decoder
still writes the clean one, so texts a few pieces apart get nearby codes. Three kinds, each at its own rate, touch
the text tokens only (BOS, EOS and padding stay):
- substitution: a token is replaced by one drawn from the batch's own text (its unigram distribution, so no
  special or byte piece comes in);
- local shuffle: a chosen token moves one place right, two when its right neighbour was chosen too; the last text
  token is never chosen, so EOS stays last;
- deletion: a chosen token is removed and the rest close up.
Shapes: B batch, T tokens.
"""

from dataclasses import dataclass

import torch

from textvae.tokenizer import PAD_ID

KINDS = ("drop", "substitute", "shuffle")


@dataclass(frozen=True)
class Corruption:
    drop: float = 0.0  # share of text tokens deleted
    substitute: float = 0.0  # share replaced by a token drawn from the batch
    shuffle: float = 0.0  # share moved one or two places right

    @property
    def active(self) -> bool:
        return any(getattr(self, kind) > 0 for kind in KINDS)


def text_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) True at the text tokens: inside the mask, after BOS and before EOS."""
    positions = torch.arange(mask.size(1), device=mask.device)
    lengths = mask.sum(dim=1, keepdim=True)
    return (positions >= 1) & (positions < lengths - 1)


def _chosen(text: torch.Tensor, rate: float, generator) -> torch.Tensor:  # (B, T) bool
    return text & (torch.rand(text.shape, generator=generator, device=text.device) < rate)


def _substitute(ids: torch.Tensor, text: torch.Tensor, rate: float, generator) -> torch.Tensor:
    chosen = _chosen(text, rate, generator)
    pool = ids[text]  # every text token of the batch, so a draw follows their frequencies
    if not chosen.any() or pool.numel() == 0:
        return ids
    picks = torch.randint(pool.numel(), (int(chosen.sum()),), generator=generator, device=ids.device)
    return ids.masked_scatter(chosen, pool[picks])


def corrupt(ids: torch.Tensor, mask: torch.Tensor, corruption: Corruption,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A corrupted copy (ids, mask) of a padded batch, with its own (possibly shorter) lengths; the input is left
    as it was. Draws come from `generator` (default: torch's global one, which training seeds per step)."""
    text = text_positions(mask)
    ids = _substitute(ids, text, corruption.substitute, generator)
    width = ids.size(1)
    positions = torch.arange(width, device=ids.device, dtype=torch.float32).expand(ids.shape)
    movable = text & torch.roll(text, -1, dims=1)  # a right neighbour that is text too
    keys = positions + 1.5 * _chosen(movable, corruption.shuffle, generator)
    dropped = _chosen(text, corruption.drop, generator)
    keys = torch.where(dropped | ~mask, positions + width, keys)  # after every kept token, in their order
    order = keys.argsort(dim=1, stable=True)
    kept = mask.sum(dim=1, keepdim=True) - dropped.sum(dim=1, keepdim=True)  # (B, 1)
    new_mask = torch.arange(width, device=ids.device) < kept
    new_ids = ids.gather(1, order).masked_fill(~new_mask, PAD_ID)
    return new_ids, new_mask


__all__ = ["Corruption", "KINDS", "corrupt", "text_positions"]
