"""Attribute models on z: small linear classifiers of a poem's author, era and themes from its latent code.

They are fitted to the posterior means of the training split (`textvae fit-attributes`) and tilt the prior
toward an attribute when sampling, p(z) p(y|z)^s (LatentOps, Liu et al. 2023), or pull a poem's code toward one
(restyle). Four kinds: `author` (softmax over every poet with at least MIN_POEMS training poems, plus "other"),
`era` (softmax over the corpus's dynasties), `theme` (one-vs-rest logistic, a poem may have several; the
themes come from its title and text by the fixed rule `themes_of`) and `char` (one-vs-rest: whether the poem
holds each of the CHAR_CLASSES commonest characters, on a seeded CHAR_POINTS of the poems; it tilts sampling
toward poems that use given keywords). Saved as attributes.safetensors + .json
beside the model (no pickle; the weights in fp16, which the tilt does not feel, to keep a shipped model's folder
small), checksummed with it. Shapes: N codes, D latent, C classes.
"""

import difflib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from textvae.data import seeded_subset
from textvae.errors import TextVAEError

MIN_POEMS = 200  # a poet needs this many training poems to be an author class
KINDS = ("author", "era", "theme", "char")
CHAR_CLASSES = 300  # the commonest characters the char kind reads
CHAR_POINTS = 50_000  # poems the char kind is fitted on (a seeded subset: its targets are (N, CHAR_CLASSES))
FILES = ("attributes.safetensors", "attributes.json")
OTHER = "other"  # the author class of every poet below MIN_POEMS

# theme -> (Chinese name, words any of which in the title gives the theme, words any of which in the text does).
# A title says what a poem is about more reliably than its words, so most rules read it; the text words are
# phrases rare outside the theme.
THEMES = {
    "farewell": ("送別", ("送", "別", "餞", "贈行"), ("送君", "離別", "別離", "相送", "惜別")),
    "autumn": ("秋", ("秋",), ("秋風", "秋色", "秋聲", "秋意", "悲秋")),
    "spring": ("春", ("春",), ("春風", "春色", "春光", "春歸", "惜春")),
    "moon": ("月", ("月夜", "對月", "望月", "玩月", "詠月", "中秋", "月下", "明月", "新月"),
             ("明月", "月明", "月光", "月色", "孤月")),
    "frontier": ("邊塞", ("塞", "邊", "從軍", "征", "戍", "關山", "胡"), ("烽火", "戍樓", "胡馬", "征人", "玉門", "陽關")),
    "history": ("懷古", ("懷古", "詠史", "古意", "廟", "陵", "故宮", "古城", "遺"), ("興亡", "六朝", "故國", "前朝")),
    "landscape": ("山水", ("山", "峰", "溪", "泉", "湖", "瀑", "江行", "巖"), ("青山", "流水", "山色", "溪上")),
    "temple": ("寺/僧", ("寺", "僧", "禪", "庵", "上人", "長老"), ("僧", "禪", "梵", "袈裟")),
    "wine": ("酒", ("酒", "飲", "醉"), ("美酒", "醉", "酒杯", "把酒")),
    "plum": ("梅", ("梅",), ("梅花", "寒梅", "梅香")),
}


def themes_of(title: str, text: str) -> tuple[str, ...]:
    """The themes of a poem, in THEMES order: those whose title words its title holds, or whose text words its
    text holds."""
    return tuple(name for name, (_, in_title, in_text) in THEMES.items()
                 if any(w in title for w in in_title) or any(w in text for w in in_text))


def authors_of(counts: dict[str, int]) -> tuple[str, ...]:
    """The author classes: poets with at least MIN_POEMS poems, most prolific first, then OTHER."""
    prolific = sorted((poet for poet, n in counts.items() if n >= MIN_POEMS), key=lambda p: (-counts[p], p))
    return (*prolific, OTHER)


@dataclass
class Classifier:
    """A linear classifier on standardised codes: softmax over classes, or one-vs-rest logistic (`multi`)."""
    classes: tuple[str, ...]
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    multi: bool  # one-vs-rest: a code may belong to several classes

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) standardised -> (N, C)
        return x @ self.weight.T.to(x.dtype) + self.bias.to(x.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y = c | z) (N, C); for one-vs-rest each class's own log sigmoid."""
        logits = self.logits(x)
        return F.logsigmoid(logits) if self.multi else logits.log_softmax(dim=-1)


class AttributeModels:
    """The author, era and theme classifiers of one model, on codes standardised by the training means."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, classifiers: dict[str, Classifier], info: dict):
        self.loc, self.scale, self.classifiers, self.info = loc, scale, classifiers, info

    def values(self, kind: str) -> tuple[str, ...]:
        """What a user may ask for: the poets (without OTHER), the eras or the themes."""
        return tuple(c for c in self.classifiers[kind].classes if c != OTHER)

    def check(self, kind: str, value: str) -> int:
        """The class index of `value`, or a one-line error naming the nearest values."""
        known = self.values(kind)
        if value in known:
            return self.classifiers[kind].classes.index(value)
        near = difflib.get_close_matches(value, known, n=5, cutoff=0.0) if kind == "author" else known
        raise TextVAEError(f"unknown {'poet' if kind == 'author' else kind} {value!r}: the model knows "
                           f"{len(known)}; {'nearest' if kind == 'author' else 'they are'}: {', '.join(near)}")

    def chars(self, text: str) -> tuple[int, ...]:
        """The char classes of a text's characters (those among the commonest CHAR_CLASSES)."""
        classes = self.classifiers["char"].classes if "char" in self.classifiers else ()
        return tuple(sorted({classes.index(c) for c in text if c in classes}))

    def log_prob(self, z: torch.Tensor, wanted: dict[str, int | tuple[int, ...]]) -> torch.Tensor:
        """Σ log p(attribute = value | z) over the wanted {kind: class index, or several for one-vs-rest
        kinds}, (N,)."""
        x = (z - self.loc.to(z)) / self.scale.to(z)
        total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for kind, index in wanted.items():
            columns = list(index) if isinstance(index, tuple) else [index]
            total = total + self.classifiers[kind].log_prob(x)[:, columns].sum(dim=-1)
        return total


def _fit_one(x: torch.Tensor, y: torch.Tensor, classes: int, multi: bool, l2: float, steps: int,
             progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (C, D) and biases (C,) minimising the mean cross-entropy + l2 ||W||^2 by L-BFGS."""
    weight = torch.zeros(classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)

    def closure():
        optimizer.zero_grad()
        logits = x @ weight.T + bias
        loss = (F.binary_cross_entropy_with_logits(logits, y) if multi else F.cross_entropy(logits, y))
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        bar.update(1)
        return loss

    optimizer.step(closure)
    bar.close()
    return weight.detach(), bias.detach()


def commonest_chars(records: list[dict]) -> tuple[str, ...]:
    """The CHAR_CLASSES commonest characters of the poems' texts (in the CJK unified block), ties by code point."""
    counts = Counter(c for r in records for c in r["text"] if "\u4e00" <= c <= "\u9fff")
    return tuple(sorted(counts, key=lambda c: (-counts[c], c))[:CHAR_CLASSES])


def targets(kind: str, records: list[dict], classes: tuple[str, ...]) -> torch.Tensor:
    """Class indices (N,) for author and era; a 0/1 matrix (N, C) for themes and characters."""
    if kind == "char":
        index = {c: i for i, c in enumerate(classes)}
        held = torch.zeros(len(records), len(classes))
        for n, r in enumerate(records):
            held[n, [index[c] for c in set(r["text"]) if c in index]] = 1.0
        return held
    if kind == "theme":
        found = [themes_of(r["title"], r["text"]) for r in records]
        return torch.tensor([[float(c in f) for c in classes] for f in found])
    field = {"author": "author", "era": "dynasty"}[kind]
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index.get(r[field], index.get(OTHER, -1)) for r in records])


def fit(means: torch.Tensor, records: list[dict], *, l2: float = 1e-4, steps: int = 100,
        progress: bool = False) -> AttributeModels:
    """Classifiers of author, era and theme on the posterior means (N, D) of the poems `records` (their author,
    dynasty, title and text)."""
    loc, scale = means.mean(dim=0), means.std(dim=0).clamp_min(1e-6)
    x = ((means - loc) / scale).float()
    counts = Counter(r["author"] for r in records)
    classes = {"author": authors_of(counts), "era": tuple(sorted({r["dynasty"] for r in records})),
               "theme": tuple(THEMES), "char": commonest_chars(records)}
    some = torch.tensor(seeded_subset(len(records), CHAR_POINTS, seed=0))
    classifiers = {}
    for kind in KINDS:
        rows = some if kind == "char" else torch.arange(len(records))
        y = targets(kind, [records[i] for i in rows.tolist()], classes[kind])
        multi = kind in ("theme", "char")
        weight, bias = _fit_one(x[rows], y, len(classes[kind]), multi, l2, steps, progress, f"fit {kind}")
        classifiers[kind] = Classifier(classes[kind], weight.float(), bias.float(), multi)
    info = dict(train_points=len(records), l2=l2, min_poems=MIN_POEMS,
                themes={name: chinese for name, (chinese, _, _) in THEMES.items()})
    return AttributeModels(loc.float(), scale.float(), classifiers, info)


def _auc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    """P(a positive scores above a negative) (ties half), or None where a class lacks either."""
    n_pos = int(positive.sum())
    if n_pos in (0, len(positive)):
        return None
    ranks = scores.argsort().argsort().double() + 1
    return ((ranks[positive.bool()].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(positive) - n_pos))).item()


def accuracy(models: AttributeModels, means: torch.Tensor, records: list[dict]) -> dict[str, float]:
    """Held-out scores per kind: top-1 accuracy for author and era; for the one-vs-rest kinds the mean ROC AUC
    over the classes that have poems of both sides."""
    x = (means.float() - models.loc) / models.scale
    scores = {}
    for kind, clf in models.classifiers.items():
        y, logits = targets(kind, records, clf.classes), clf.logits(x)
        if clf.multi:
            aucs = [a for c in range(len(clf.classes)) if (a := _auc(logits[:, c], y[:, c])) is not None]
            scores[kind] = sum(aucs) / len(aucs) if aucs else float("nan")
        else:
            scores[kind] = (logits.argmax(dim=-1) == y).double().mean().item()
    return scores


def save(models: AttributeModels, directory: Path) -> None:
    tensors = {"loc": models.loc.contiguous(), "scale": models.scale.contiguous()}
    meta = dict(models.info, kinds={})
    for kind, clf in models.classifiers.items():
        tensors[f"{kind}.weight"] = clf.weight.to(torch.float16).contiguous()
        tensors[f"{kind}.bias"] = clf.bias.contiguous()
        meta["kinds"][kind] = dict(classes=list(clf.classes), multi=clf.multi)
    save_file(tensors, str(directory / FILES[0]))
    (directory / FILES[1]).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")


def load(directory: Path) -> AttributeModels | None:
    """The attribute models saved in `directory`, or None where it has none."""
    if not (directory / FILES[0]).is_file():
        return None
    try:
        tensors, meta = load_file(str(directory / FILES[0])), json.loads((directory / FILES[1]).read_text())
        classifiers = {kind: Classifier(tuple(spec["classes"]), tensors[f"{kind}.weight"].float(),
                                        tensors[f"{kind}.bias"], spec["multi"])
                       for kind, spec in meta.pop("kinds").items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TextVAEError(f"{directory}: the attribute models are corrupt ({e}); fit them again with "
                           "`textvae fit-attributes`") from e
    return AttributeModels(tensors["loc"], tensors["scale"], classifiers, meta)
