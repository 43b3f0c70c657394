"""The studio's latent map: the test split's posterior means E_q[z|x] projected to 2-D by PCA, with each
poem's form and dynasty for colour, and the same projection for any text pasted or generated later.
Shapes: N poems, D latent size."""

from dataclasses import dataclass
from pathlib import Path

import torch

from textvae import data, generate
from textvae.errors import TextVAEError
from textvae.latent_stats import posterior_means
from textvae.poetry import form_of, split_lines
from textvae.tokenizer import check_same_tokenizer
from textvae.vae import TextVAE

MAX_POINTS = 3000  # a seeded subset beyond this: enough to see the shape, light to send and draw


@dataclass
class LatentMap:
    centre: torch.Tensor  # (D,) the mean of the posterior means
    axes: torch.Tensor  # (D, 2) the two leading principal directions
    points: list[list[float]]  # (N, 2)
    labels: dict[str, list[str]]  # "form" / "dynasty": one label per point
    texts: list[str]
    explained: list[float]  # the share of the variance along each axis

    def project(self, means: torch.Tensor) -> list[list[float]]:
        return ((means.double() - self.centre) @ self.axes).tolist()


def build(model: TextVAE, data_dir: Path, split: str = "test") -> LatentMap:
    """PCA of the split's posterior means; a clear error where the dataset is missing or not the model's."""
    dataset, tokenizer = data.load(data_dir)
    check_same_tokenizer(model.tokenizer, tokenizer, "the model", data_dir, "Serve it with the dataset it was "
                                                                            "trained on (--data).")
    if split not in dataset or len(dataset[split]) < 3:
        raise TextVAEError(f"{data_dir} has no {split} split of 3 or more texts to map")
    rows = dataset[split]
    if len(rows) > MAX_POINTS:
        rows = rows.shuffle(seed=0).select(range(MAX_POINTS)).flatten_indices()
    means = posterior_means(model, data.token_ids(rows))  # (N, D)
    centre = means.mean(dim=0)
    _, singular, vh = torch.linalg.svd(means - centre, full_matrices=False)
    axes = vh[:2].T  # (D, 2)
    texts = rows.data.column("text").to_pylist()
    labels = dict(form=[form_of(split_lines(t)) or "other" for t in texts])
    if "dynasty" in rows.column_names:
        labels["dynasty"] = rows.data.column("dynasty").to_pylist()
    variance = singular.square()
    return LatentMap(centre, axes, ((means - centre) @ axes).tolist(), labels, texts,
                     (variance[:2] / variance.sum()).tolist())


def project_texts(model: TextVAE, latent_map: LatentMap, texts: list[str]) -> list[list[float]]:
    return latent_map.project(generate.posterior(model, texts).mean)
