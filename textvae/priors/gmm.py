"""A Gaussian mixture over z fitted to the aggregate posterior (Ghosh et al. 2020, "From variational to
deterministic autoencoders"; Bauer & Mnih 2019 on learned priors). A high-rate VAE's aggregate posterior leaves
holes in N(0, I), so its prior samples decode poorly; sampling z from this density lands where the decoder was
trained, and its exact log p(z) makes `evaluate --iw-prior gmm` the likelihood of the model that samples from it.

The fit is scikit-learn's GaussianMixture (k-means start, EM, full covariances); the component count is the one
with the best validation log-likelihood. At use it is a torch MixtureSameFamily of MultivariateNormals. Where the
points carry classes (a poem's form), each class also gets its own component weights, the mean responsibilities
of its training points, so that p(z | class) shares the components and reweights them.
Shapes: N points, C components, D latent size, K classes.
"""

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from textvae.errors import TextVAEError

COMPONENTS = (1, 2, 4, 8, 16, 32, 64)


class GaussianMixturePrior:
    kind, has_log_prob = "gmm", True

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor, info: dict,
                 class_weights: torch.Tensor | None = None):
        """weights (C,), means (C, D), Cholesky factors of the covariances (C, D, D); class_weights (K, C) the
        weights given each of info["classes"]."""
        self.components = MultivariateNormal(means, scale_tril=scale_tril)
        self.density = MixtureSameFamily(Categorical(probs=weights), self.components)
        self.class_weights, self.info = class_weights, info
        self.classes = tuple(info.get("classes", ()))

    @property
    def latent_dim(self) -> int:
        return self.density.event_shape[0]

    def sample(self, n: int, condition: str | None = None) -> torch.Tensor:  # (n, D)
        """n draws, from p(z | condition) where the prior knows that class (a form), else from p(z). Each
        component transforms only its own draws (torch's MixtureSameFamily draws from every component for every
        sample: 16 components of D = 256 made that 50 times slower)."""
        weights = self.density.mixture_distribution.probs
        if condition is not None and condition in self.classes:
            weights = self.class_weights[self.classes.index(condition)]
        picks = Categorical(probs=weights).sample((n,))  # (n,)
        noise = torch.randn(n, self.latent_dim, device=weights.device, dtype=self.components.loc.dtype)
        z = torch.empty_like(noise)
        for c in picks.unique().tolist():
            rows = picks == c
            z[rows] = self.components.loc[c] + noise[rows] @ self.components.scale_tril[c].T
        return z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:  # (..., D) -> (...)
        return self.density.log_prob(z)

    def state(self) -> dict[str, torch.Tensor]:
        tensors = dict(weights=self.density.mixture_distribution.probs, means=self.components.loc,
                       scale_tril=self.components.scale_tril)
        return tensors if self.class_weights is None else tensors | dict(class_weights=self.class_weights)

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], info: dict) -> "GaussianMixturePrior":
        return cls(tensors["weights"], tensors["means"], tensors["scale_tril"], info, tensors.get("class_weights"))

    def to(self, device) -> "GaussianMixturePrior":
        state = {k: v.to(device) for k, v in self.state().items()}
        return GaussianMixturePrior(state["weights"], state["means"], state["scale_tril"], self.info,
                                    state.get("class_weights"))


def _fit_one(train, components: int, seed: int):
    from sklearn.mixture import GaussianMixture  # imported here: only fitting needs scikit-learn
    return GaussianMixture(components, covariance_type="full", reg_covar=1e-4, max_iter=200, n_init=1,
                           random_state=seed).fit(train)


def fit(train: torch.Tensor, validation: torch.Tensor, components=COMPONENTS, seed: int = 0, progress=None,
        labels: torch.Tensor | None = None, classes: tuple[str, ...] = ()) -> GaussianMixturePrior:
    """The mixture, among `components` counts (each below the number of training points), with the highest
    mean validation log-likelihood; its info records every candidate's scores. With the training points' class
    labels (N,), each class's weights are its points' mean responsibilities."""
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
            progress(f"{c:>4} components: validation log-likelihood {scores[c]['validation']:.3f} "
                     f"(train {scores[c]['train']:.3f})")
    info = dict(components=best.n_components, covariance="full", validation_log_prob=best_score,
                scores={str(c): s for c, s in scores.items()}, classes=list(classes))
    tensors = (best.weights_, best.means_, torch.linalg.cholesky(torch.as_tensor(best.covariances_)))
    class_weights = None
    if classes:
        responsibilities = torch.as_tensor(best.predict_proba(train64), dtype=torch.float64)  # (N, C)
        sums = torch.zeros(len(classes), best.n_components, dtype=torch.float64)
        sums.index_add_(0, labels, responsibilities)  # (K, C) each class's summed responsibilities
        class_weights = ((sums + 1e-6) / (sums + 1e-6).sum(1, keepdim=True)).float()  # (K, C)
    return GaussianMixturePrior(*(torch.as_tensor(x, dtype=torch.float32) for x in tensors), info, class_weights)
