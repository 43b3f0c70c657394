"""Ex-post densities over z, fitted to a trained model's aggregate posterior and saved in its folder: a Gaussian
mixture (scikit-learn), a normalizing flow (zuko) and a latent diffusion model. Each has `sample(n)`, `log_prob(z)`
where it exists (`has_log_prob`), `state()` / `from_state(tensors, info)` and an `info` record of its fit. Fitted to
points with classes (a poem dataset's forms), each also samples given a class: `sample(n, condition="7x4")`.

In a model folder each kind is prior-KIND.safetensors (tensors, no pickle) beside prior-KIND.json (its shape and
how it was fitted); config.json checksums both and names the kind `--prior auto` uses. A folder from before
several kinds existed holds one mixture as prior.safetensors and prior.json; it loads as the gmm.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from textvae.errors import TextVAEError
from textvae.priors import diffusion, flow, gmm
from textvae.priors.fitting import FIT_ON, Posteriors

KINDS = {"gmm": gmm.GaussianMixturePrior, "flow": flow.FlowPrior, "diffusion": diffusion.DiffusionPrior}
ALIASES = {"aggregate": "gmm"}  # the name the mixture had when it was the only kind
CHOICES = ("auto", "standard", *KINDS, *ALIASES)  # what --prior takes
LEGACY = ("prior.safetensors", "prior.json")  # a lone mixture, as saved before there were several kinds


def files(kind: str) -> tuple[str, str]:
    """The tensors file and the info file of a kind in a model folder."""
    return f"prior-{kind}.safetensors", f"prior-{kind}.json"


ALL_FILES = tuple(name for kind in KINDS for name in files(kind))


def canonical(name: str) -> str:
    """A --prior choice with its alias resolved: aggregate is gmm."""
    if name not in CHOICES:
        raise TextVAEError(f"prior must be one of {', '.join(CHOICES)}, not {name!r}")
    return ALIASES.get(name, name)


def fit(kind: str, train: Posteriors, validation: Posteriors, *, seed: int = 0, progress: bool = False, **options):
    """A prior of `kind` fitted to the training posteriors, its hyperparameters chosen or stopped early on the
    validation ones. Options are the kind's own (gmm: components; flow: transforms, hidden, epochs; diffusion:
    hidden, blocks, steps, self_condition, epochs)."""
    if kind == "gmm":
        draws = torch.Generator().manual_seed(seed)
        return gmm.fit(train.draw(draws), validation.draw(draws), seed=seed, progress=tqdm.write if progress else None,
                       labels=train.labels, classes=train.classes, **options)
    return {"flow": flow.fit, "diffusion": diffusion.fit}[kind](train, validation, seed=seed, progress=progress,
                                                                **options)


def save(prior, directory: Path) -> None:
    """Write a prior's two files into a folder (the caller makes the write atomic)."""
    tensors_name, info_name = files(prior.kind)
    tensors = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.contiguous().cpu()
               for k, v in prior.state().items()}
    save_file(tensors, str(directory / tensors_name), metadata={"kind": prior.kind})
    (directory / info_name).write_text(json.dumps(prior.info, indent=1) + "\n")


def _load_one(kind: str, tensors_path: Path, info_path: Path, latent_dim: int):
    try:
        info = json.loads(info_path.read_text())
        with safe_open(str(tensors_path), "pt") as f:
            saved_kind = (f.metadata() or {}).get("kind", "gmm")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if saved_kind != kind:
            raise TextVAEError(f"{tensors_path} holds a {saved_kind} prior, not a {kind} one: it was copied from "
                               "elsewhere; fit it again with `textvae fit-prior`")
        prior = KINDS[kind].from_state(tensors, info)
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, OSError) as e:
        raise TextVAEError(f"{tensors_path} or {info_path.name} is missing a part or corrupt ({e}); fit it again "
                           "with `textvae fit-prior`") from e
    if prior.latent_dim != latent_dim:
        raise TextVAEError(f"{tensors_path} is a density over {prior.latent_dim} dimensions, but the model's latent "
                           f"has D = {latent_dim}: it belongs to another model")
    return prior


def load(directory: Path, latent_dim: int) -> dict:
    """Every prior saved in a model folder, by kind (a legacy lone mixture as gmm)."""
    found = {}
    for kind in KINDS:
        tensors_name, info_name = files(kind)
        if (directory / tensors_name).is_file() or (directory / info_name).is_file():
            found[kind] = _load_one(kind, directory / tensors_name, directory / info_name, latent_dim)
    if "gmm" not in found and (directory / LEGACY[0]).is_file():
        found["gmm"] = _load_one("gmm", directory / LEGACY[0], directory / LEGACY[1], latent_dim)
    return found


__all__ = ["ALIASES", "ALL_FILES", "CHOICES", "FIT_ON", "KINDS", "LEGACY", "Posteriors", "canonical",
           "files", "fit", "load", "save"]
