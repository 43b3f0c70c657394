"""An ex-post density on the latent space: a Gaussian mixture fitted to the aggregate posterior, i.e. to the
posterior means of the training set, or to one draw from each posterior (Ghosh et al. 2020, "From variational
to deterministic autoencoders"; Bauer & Mnih 2019 on learned priors). A high-rate VAE's aggregate posterior
leaves holes in N(0, I), so its prior samples decode poorly; sampling z from this density instead lands where
the decoder was trained. It is also a prior in its own right: `evaluate --iw-prior aggregate` scores the
likelihood of the model that samples from it.

The fit is scikit-learn's GaussianMixture (k-means start, EM, full covariances); the component count is the
one with the best validation log-likelihood. Saved beside the model as prior.safetensors (weights, means,
Cholesky factors of the covariances) and prior.json (how it was fitted), no pickle. At use it is a torch
MixtureSameFamily of MultivariateNormals. Shapes: N points, C components, D latent size.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from textvae.errors import TextVAEError

TENSORS, INFO = "prior.safetensors", "prior.json"
COMPONENTS = (1, 2, 4, 8, 16, 32, 64)


def mixture(weights: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> MixtureSameFamily:
    """The mixture density: weights (C,), means (C, D), Cholesky factors of the covariances (C, D, D)."""
    return MixtureSameFamily(Categorical(probs=weights), MultivariateNormal(means, scale_tril=scale_tril))


def moved(density: MixtureSameFamily, device: str | torch.device) -> MixtureSameFamily:
    """The same mixture with its tensors on `device`."""
    parts = (density.mixture_distribution.probs, density.component_distribution.loc,
             density.component_distribution.scale_tril)
    return mixture(*(x.to(device) for x in parts))


def _fit_one(train, components: int, seed: int):
    from sklearn.mixture import GaussianMixture  # imported here: only fitting needs scikit-learn
    return GaussianMixture(components, covariance_type="full", reg_covar=1e-4, max_iter=200, n_init=1,
                           random_state=seed).fit(train)


def fit(train: torch.Tensor, validation: torch.Tensor, components=COMPONENTS, seed: int = 0,
        progress=None) -> tuple[MixtureSameFamily, dict]:
    """The mixture, among `components` counts (each below the number of training points), with the highest
    mean validation log-likelihood, and a record of every candidate's scores."""
    train64, valid64 = train.double().numpy(), validation.double().numpy()
    candidates = [c for c in components if c < len(train64)]
    if not candidates:
        raise TextVAEError(f"{len(train64)} training points are too few for a mixture of {min(components)} components")
    scores, best, best_score = {}, None, -float("inf")
    for c in candidates:
        gm = _fit_one(train64, c, seed)
        scores[c] = dict(train=float(gm.score(train64)), validation=float(gm.score(valid64)),
                         converged=bool(gm.converged_))
        if scores[c]["validation"] > best_score:
            best, best_score = gm, scores[c]["validation"]
        if progress is not None:
            progress(c, scores[c])
    density = mixture(*(torch.as_tensor(x, dtype=torch.float32) for x in
                        (best.weights_, best.means_, torch.linalg.cholesky(torch.as_tensor(best.covariances_)))))
    info = dict(kind="gaussian-mixture", components=best.n_components, covariance="full",
                train_points=len(train64), validation_points=len(valid64), seed=seed,
                scores={str(c): s for c, s in scores.items()})
    return density, info


def save(density: MixtureSameFamily, info: dict, directory: Path) -> None:
    """Write prior.safetensors and prior.json into a folder (the caller makes the write atomic)."""
    parts = dict(weights=density.mixture_distribution.probs, means=density.component_distribution.loc,
                 scale_tril=density.component_distribution.scale_tril)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in parts.items()}, str(directory / TENSORS))
    (directory / INFO).write_text(json.dumps(info, indent=1) + "\n")


def load(directory: Path, latent_dim: int) -> tuple[MixtureSameFamily | None, dict | None]:
    """The mixture saved in a model folder and its prior.json record, or (None, None) where it has none."""
    if not (directory / TENSORS).is_file():
        return None, None
    try:
        parts = load_file(str(directory / TENSORS))
        density = mixture(parts["weights"], parts["means"], parts["scale_tril"])
        info = json.loads((directory / INFO).read_text())
    except (SafetensorError, KeyError, ValueError, RuntimeError, OSError) as e:  # JSONDecodeError: a ValueError
        raise TextVAEError(f"{directory}'s aggregate prior ({TENSORS}, {INFO}) is missing a part or corrupt ({e}); "
                           "fit it again with `textvae fit-prior`") from e
    if density.event_shape != (latent_dim,):
        raise TextVAEError(f"{directory / TENSORS} is a density over {tuple(density.event_shape)}, but the model's "
                           f"latent has D = {latent_dim}: it belongs to another model")
    return density, info
