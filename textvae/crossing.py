"""Training on the path between two poems: the line-crossing loss. For two poems A and B of the same shape (the
same line lengths) and t in (0, 1), the decoder reads the mixed code (1 - t) z_A + t z_B and must write the
crossing of the two: B's first round(t L) lines, then A's remaining lines (L lines in all). A path from A to B then
has real lines to pass through, one line changing at a time: mixup (Zhang et al. 2018) on the codes, with the
crossing as the mixed target.
Shapes: B batch, P pairs, T tokens, D latent.
"""

import torch

from textvae.tokenizer import PAD_ID


def line_index(ids: torch.Tensor, separators: tuple[int, ...]) -> torch.Tensor:
    """(B, T) the line each token is in: the separators before it (a line's own mark belongs to it)."""
    marks = torch.isin(ids, torch.tensor(separators, device=ids.device))
    return marks.long().cumsum(dim=1) - marks.long()


def same_shape_pairs(ids: torch.Tensor, separators: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) row indices a, b of disjoint pairs of rows whose tokens fill the same places and whose line marks
    stand at the same places: their lines can be swapped one for one."""
    marks = torch.isin(ids, torch.tensor(separators, device=ids.device))
    groups: dict[tuple, list[int]] = {}
    for row, (real, mark) in enumerate(zip((ids != PAD_ID).tolist(), marks.tolist())):
        if any(mark):
            groups.setdefault((tuple(real), tuple(mark)), []).append(row)
    rows = [(g[i], g[i + 1]) for g in groups.values() for i in range(0, len(g) - 1, 2)]
    a, b = (list(side) for side in zip(*rows)) if rows else ([], [])
    return torch.tensor(a, dtype=torch.long, device=ids.device), torch.tensor(b, dtype=torch.long, device=ids.device)


def crossings(ids_a: torch.Tensor, ids_b: torch.Tensor, t: torch.Tensor,
              separators: tuple[int, ...]) -> torch.Tensor:
    """(P, T) B's first round(t L) lines followed by A's other lines, for same-shape rows and t (P,)."""
    line = line_index(ids_a, separators)  # (P, T)
    lines = torch.isin(ids_a, torch.tensor(separators, device=ids_a.device)).sum(dim=1)  # (P,)
    switched = torch.round(t * lines).long()  # (P,)
    return torch.where(line < switched[:, None], ids_b, ids_a)


def crossing_nll(model, z: torch.Tensor, ids: torch.Tensor, separators: tuple[int, ...],
                 generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The mean over the batch's same-shape pairs of -log p(crossing | mixed code), in nats per poem; None when the
    batch holds no such pair. z (B, D) are the codes the decoder saw, so the loss also shapes the encoder."""
    a, b = same_shape_pairs(ids, separators)
    if a.numel() == 0:
        return None
    t = torch.rand(a.numel(), generator=generator, device=ids.device)  # (P,)
    mixed = (1 - t[:, None]) * z[a] + t[:, None] * z[b]  # (P, D)
    return model.reconstruction_nll(mixed, crossings(ids[a], ids[b], t, separators)).mean()


__all__ = ["crossing_nll", "crossings", "line_index", "same_shape_pairs"]
