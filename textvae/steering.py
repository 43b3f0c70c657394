"""Steering through the latent: fit the attribute models, draw codes from the prior tilted toward an author, an
era or a theme, and pull a poem's code toward one.

The tilted density is p(z) p(y|z)^s, with p(y|z) the attribute classifiers (textvae.attributes; the sum of
their log-probabilities where several are asked for) and s the strength (LatentOps, Liu et al. 2023).
`tilted_codes` samples it by sampling-importance-resampling: K candidates per code from the prior, weights
p(y|z)^s, n kept without replacement (Gumbel top-k), which tends to the tilted density as K grows; `langevin`
steps may follow, on log p(z) + s log p(y|z) where the prior has a log-density. `restyled_code` ascends
s log p(y|z) - ½‖(z - z₀)/σ‖² from a poem's code z₀, σ the spread of the training codes per dimension, so the
code moves toward the attribute while staying near the poem. Shapes: N codes, K candidates, D latent.
"""

from dataclasses import dataclass

import torch

from textvae import attributes, data
from textvae.errors import TextVAEError
from textvae.fields import check_float, check_int, setting
from textvae.latent_stats import posterior_means
from textvae.vae import TextVAE

MAX_STRENGTH = 100.0
CANDIDATE_CHUNK = 1 << 18  # candidates drawn at once (256 MB of codes at D = 256)
RESTYLE_STRENGTH = 30.0  # restyle's default: a poem's own code holds it fast, so it takes a stronger pull


@dataclass(frozen=True)
class Steering:
    like: str = setting("", "write in the manner of this poet, e.g. 杜甫 (one with at least 200 training poems)")
    era: str = setting("", "write as a poet of this era: tang | song")
    theme: str = setting("", "write about this theme: " + " | ".join(attributes.THEMES))
    strength: float = setting(5.0, "s in p(z) p(y|z)^s: how hard the attributes pull, in (0, 100]")
    candidates: int = setting(512, "prior draws per steered code: more follow the tilted density more closely")
    langevin_steps: int = setting(0, "Langevin steps after the resampling (0: none)")

    def __post_init__(self):
        check_float(self, "strength", 0, MAX_STRENGTH, low_open=True)
        check_int(self, "candidates", 1, 4096)
        check_int(self, "langevin_steps", 0, 1000)
        for name in ("like", "era", "theme"):
            if not isinstance(getattr(self, name), str):
                raise TextVAEError(f"Steering.{name} must be a string, not {getattr(self, name)!r}")

    @property
    def active(self) -> bool:
        return bool(self.like or self.era or self.theme)

    def wanted(self, model: TextVAE) -> dict[str, int]:
        """{kind: class index} of the attributes asked for, each checked against the model's attribute models."""
        asked = {kind: value for kind, value in (("author", self.like), ("era", self.era), ("theme", self.theme))
                 if value}
        if asked and model.attributes is None:
            raise TextVAEError("this model has no attribute models, so it cannot steer by poet, era or theme: fit "
                               "them with `textvae fit-attributes MODEL` (a few minutes)")
        return {kind: model.attributes.check(kind, value) for kind, value in asked.items()}


def fit_attributes(model: TextVAE, dataset, max_points: int | None = None, progress: bool = False) -> dict:
    """Fit the model's attribute models to the posterior means of the training split (a seeded subset of
    max_points poems) and attach them; returns their accuracy on the validation split."""
    missing = {"author", "dynasty", "title"} - set(dataset["train"].column_names)
    if missing:
        raise TextVAEError(f"attribute models need poems labelled with author, dynasty and title; this dataset "
                           f"lacks {', '.join(sorted(missing))} (prepare it with `textvae prepare poems`)")
    train = dataset["train"]
    if max_points is not None:  # a seeded subset, not the first poems: the split is ordered by dynasty
        train = train.select(data.seeded_subset(len(train), max_points, seed=0))
    columns = ["author", "dynasty", "title", "text"]
    means = posterior_means(model, data.token_ids(train), progress=progress)
    model.attributes = attributes.fit(means, train.select_columns(columns).to_list(), progress=progress)
    validation = dataset["validation"]
    held_out = posterior_means(model, data.token_ids(validation))
    return attributes.accuracy(model.attributes, held_out, validation.select_columns(columns).to_list())


def tilted_codes(model: TextVAE, n: int, wanted: dict[str, int], steering: Steering, draw) -> torch.Tensor:
    """n codes (n, D) from p(z) p(y|z)^s: `draw(m)` gives m prior codes; K = steering.candidates of them per code
    are weighted by p(y|z)^s and the codes kept without replacement, in chunks of at most CANDIDATE_CHUNK
    candidates so that memory stays bounded whatever n is."""
    per_chunk = max(1, CANDIDATE_CHUNK // steering.candidates)
    kept = []
    for start in range(0, n, per_chunk):
        m = min(per_chunk, n - start)
        z = draw(m * steering.candidates)  # (m K, D)
        log_weight = steering.strength * model.attributes.log_prob(z, wanted)  # (m K,)
        gumbel = -torch.empty_like(log_weight).exponential_().log()
        kept.append(z[(log_weight + gumbel).topk(m).indices])
    return torch.cat(kept)


def langevin(model: TextVAE, z: torch.Tensor, wanted: dict[str, int], strength: float, log_prior, steps: int,
             step_size: float = 1e-3) -> torch.Tensor:
    """Unadjusted Langevin steps on log p(z) + s log p(y|z): z += ε ∇ + √(2ε) ξ, ε in units of the training
    codes' variance per dimension."""
    scale2 = model.attributes.scale.to(z).pow(2)
    for _ in range(steps):
        with torch.enable_grad():
            point = z.detach().requires_grad_(True)
            energy = log_prior(point) + strength * model.attributes.log_prob(point, wanted)
            grad, = torch.autograd.grad(energy.sum(), point)
        z = point.detach() + step_size * scale2 * grad + (2 * step_size * scale2).sqrt() * torch.randn_like(z)
    return z


def restyled_code(model: TextVAE, z0: torch.Tensor, wanted: dict[str, int], strength: float, steps: int = 200,
                  lr: float = 0.05) -> torch.Tensor:
    """argmax_z s log p(y|z) - ½‖(z - z0)/σ‖² by Adam from z0 (N, D), σ the training codes' spread per dimension."""
    scale = model.attributes.scale.to(z0)
    offset = torch.zeros_like(z0, requires_grad=True)  # (z - z0) / σ
    optimizer = torch.optim.Adam([offset], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            objective = strength * model.attributes.log_prob(z0 + offset * scale, wanted) - 0.5 * offset.pow(2).sum(-1)
            optimizer.zero_grad()
            (-objective.sum()).backward()
            optimizer.step()
    return (z0 + offset.detach() * scale).detach()
