"""Training on the path between two poems: the line-crossing loss. For two poems A and B of the same shape (the same
line lengths) and 0 < m < L, the crossing X_m takes B's first m lines and A's last L - m. The loss asks two things of
the crossings of the batch's same-shape pairs:
- that the decoder writes X_m from X_m's own code, as it writes any poem (its reconstruction NLL);
- that X_m's code lies at the point m / L of the way from A's code to B's: the squared distance of its posterior
  mean from (1 - m/L) mu_A + (m/L) mu_B, in units of its posterior's standard deviations, halved.
A straight path from A to B then passes through codes that decode to real lines, one line changing at a time.
Each unordered pair is crossed one way only (B is the row whose tokens come first in lexicographic order): the
crossings taken the other way, A's first lines, would claim the same points of the path for other poems.
(A decoder-side mixup, decoding the mixed code (1 - t) z_A + t z_B into a crossing, is ill-posed: the same mixed
code arises from (B, A, 1 - t), whose crossing differs, so no fixed order of lines can be learned.)
Shapes: B batch, P pairs, T tokens, D latent.
"""

import torch

from textvae.tokenizer import PAD_ID


def _marks(ids: torch.Tensor, separators: tuple[int, ...]) -> torch.Tensor:  # (B, T) bool: a line's end
    return torch.isin(ids, torch.tensor(separators, device=ids.device))


def line_index(ids: torch.Tensor, separators: tuple[int, ...]) -> torch.Tensor:
    """(B, T) the line each token is in: the separators before it (a line's own mark belongs to it)."""
    marks = _marks(ids, separators).long()
    return marks.cumsum(dim=1) - marks


def same_shape_pairs(ids: torch.Tensor, separators: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) row indices a, b of disjoint pairs of different rows whose tokens fill the same places and whose line
    marks stand at the same places, so that their lines can be swapped one for one; b is the row that comes first
    in lexicographic order."""
    marks = _marks(ids, separators)
    groups: dict[tuple, list[int]] = {}
    rows = ids.tolist()
    for row, (real, mark) in enumerate(zip((ids != PAD_ID).tolist(), marks.tolist())):
        if sum(mark) >= 2:
            groups.setdefault((tuple(real), tuple(mark)), []).append(row)
    pairs = [(g[i], g[i + 1]) for g in groups.values() for i in range(0, len(g) - 1, 2)
             if rows[g[i]] != rows[g[i + 1]]]
    pairs = [(a, b) if rows[b] < rows[a] else (b, a) for a, b in pairs]
    a, b = (list(side) for side in zip(*pairs)) if pairs else ([], [])
    return torch.tensor(a, dtype=torch.long, device=ids.device), torch.tensor(b, dtype=torch.long, device=ids.device)


def crossings(ids_a: torch.Tensor, ids_b: torch.Tensor, switched: torch.Tensor,
              separators: tuple[int, ...]) -> torch.Tensor:
    """(P, T) B's first `switched` (P,) lines followed by A's other lines, for same-shape rows."""
    return torch.where(line_index(ids_a, separators) < switched[:, None], ids_b, ids_a)


def line_counts(ids: torch.Tensor, separators: tuple[int, ...]) -> torch.Tensor:  # (B, T) -> (B,)
    return _marks(ids, separators).sum(dim=1)


def crossing_loss(model, q, ids: torch.Tensor, separators: tuple[int, ...],
                  generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The mean over the batch's same-shape pairs of the crossing's reconstruction NLL plus its distance from its
    point on the path (see above), in nats per poem; None when the batch holds no such pair. q is the batch's
    posterior q(z|x), batch (B,)."""
    a, b = same_shape_pairs(ids, separators)
    if a.numel() == 0:
        return None
    lines = line_counts(ids[a], separators)  # (P,)
    switched = 1 + (torch.rand(a.numel(), generator=generator, device=ids.device) * (lines - 1)).long()  # 1..L-1
    mixed = crossings(ids[a], ids[b], switched, separators)  # (P, T)
    q_mixed = model.encode(mixed, mixed != PAD_ID)
    share = (switched / lines)[:, None].to(q.mean.dtype)  # (P, 1)
    target = (1 - share) * q.mean[a] + share * q.mean[b]  # (P, D)
    distance = 0.5 * ((q_mixed.mean - target) / q_mixed.stddev.detach()).pow(2).sum(dim=1)
    return (model.reconstruction_nll(q_mixed.rsample(), mixed) + distance).mean()


__all__ = ["crossing_loss", "crossings", "line_counts", "line_index", "same_shape_pairs"]
