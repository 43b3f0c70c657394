"""The full evaluation of a saved model on a dataset split: the latent statistics (textvae.latent_stats),
decoded-text and poem metrics (reconstruction BLEU; diversity, novelty, form, rhyme and tonal figures of prior
samples beside the corpus's own), gathered into one JSON-able report for eval.json (textvae.report prints it
and plots it). Also the learned-prior fit of `textvae fit-prior`, which labels poems by form.

Every number says which estimator it is (see textvae.latent_stats); prior samples and reconstructions are
decoded by textvae.generate under one reported seed and one precision (textvae.precision).
Shapes: D latent, N examples.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import DatasetDict

from textvae import data, metrics, priors
from textvae.errors import TextVAEError
from textvae.fields import SEED_LIMIT, check_choice, check_device, check_int, setting
from textvae.generate import (FORM_CHOICES, PRIORS, Decoding, check_prior, check_rhyme, constraint_for,
                              decode_each, load_model, sample)
from textvae.latent_stats import iw_nll, latent_pass, latent_report, posterior_parameters
from textvae.poetry import FORMS, form_compliance, form_of, rhyme_rate, split_lines, tonal_compliance
from textvae.precision import PRECISION_HELP, check_precision, resolve_precision
from textvae.tokenizer import check_same_tokenizer
from textvae.vae import TextVAE

STRATEGIES = ("sample", "greedy")
MAX_IW_SAMPLES = 10_000  # K = 500 already takes ~18 min for 2,334 poems on 2 cores


@dataclass(frozen=True)
class EvalConfig:
    split: str = setting("test", "the dataset split to score")
    batch_size: int = setting(64, "examples per encoder pass")
    iw_samples: int = setting(500, "K importance samples per example for IW-NLL (0 skips it)")
    iw_rows: int = setting(256, "decoder rows per IW pass (samples x examples); bounds memory")
    n: int = setting(1000, "prior samples decoded for the text and poem metrics (0 skips them)")
    strategy: str = setting("sample", "decoding of prior samples: sample (ancestral) | greedy")
    form: str = setting("free", "prior samples' form: free (the model decides) | auto (regular, the model picks it "
                                "as it writes) | drawn (from the corpus's form shares) | 5x4 | 7x4 | 5x8 | 7x8")
    rhyme: bool | str = setting(False, "prior samples rhyme-steered, as `sample --rhyme`: true (bare --rhyme: the "
                                       "group line 2 ends in) | random | a group or one of its characters | false")
    meter: bool = setting(False, "prior samples meter-steered (格律: the 近體詩 tonal pattern, as `sample --meter`)")
    prior: str = setting("auto", "prior samples' z: auto (the model's default learned prior, else the standard "
                                 "one) | standard | gmm | flow | diffusion (aggregate = gmm)")
    iw_prior: str = setting("standard", "p(z) in the IW-NLL: standard (the model's N(0, I)) | gmm | flow (a fitted "
                                        "learned prior: the likelihood of what `sample` draws from; diffusion has "
                                        "no log p(z)) | auto (the default learned prior)")
    max_examples: int = setting(0, "score a seeded random subset of N examples of the split (0: all)")
    seed: int = setting(0, "seeds every random draw")
    precision: str = setting("auto", PRECISION_HELP)
    device: str = setting("cpu", "cpu | cuda | cuda:N")

    def __post_init__(self):
        check_int(self, "batch_size", 1, 65536)
        check_int(self, "iw_rows", 1, 1 << 20)
        check_int(self, "iw_samples", 0, MAX_IW_SAMPLES)
        check_int(self, "n", 0, 100_000)
        check_int(self, "max_examples", 0, 10**9)
        check_int(self, "seed", 0, SEED_LIMIT - 1)
        if self.n == 1:
            raise TextVAEError("EvalConfig.n must be 0 or >= 2 (Self-BLEU compares samples)")
        check_choice(self, "strategy", STRATEGIES)
        check_choice(self, "form", FORM_CHOICES)
        check_choice(self, "prior", PRIORS)
        check_choice(self, "iw_prior", PRIORS)
        check_rhyme(self.rhyme)  # a one-line error for an unknown group before any work
        if not isinstance(self.meter, bool):
            raise TextVAEError(f"EvalConfig.meter must be true or false, not {self.meter!r}")
        if self.form == "free" and (self.rhyme or self.meter):
            raise TextVAEError("EvalConfig.rhyme and meter steer poems: give a form (auto, 5x4, 7x4, 5x8 or 7x8), "
                               "not free")
        check_device(self)
        check_precision(self.precision, "EvalConfig.precision")

# -----------------------------------------------------------------------------
# learned priors


def _check_prior_fit(model: TextVAE, dataset: DatasetDict, kind: str, fit_on: str, min_points: int = 10) -> None:
    """One-line refusals before any encoding: an unknown kind or fit_on, a model without a Gaussian latent (the
    learned priors are densities on R^D; a vMF latent lives on the sphere), or too few points."""
    if kind not in priors.KINDS:
        raise TextVAEError(f"the prior kind must be one of {', '.join(priors.KINDS)}, not {kind!r}")
    if fit_on not in priors.FIT_ON:
        raise TextVAEError(f"fit_on must be one of {', '.join(priors.FIT_ON)}, not {fit_on!r}")
    if model.head is None:
        raise TextVAEError("this model has no latent (--posterior none): there is no z to fit a prior to")
    if model.config.posterior == "vmf":
        raise TextVAEError(f"a {kind} prior is a density on R^D, but this model's vMF latent lives on the unit "
                           "sphere: its prior stays the uniform one")
    for split in ("train", "validation"):
        if split not in dataset or len(dataset[split]) < min_points:
            raise TextVAEError(f"fitting a prior needs a {split} split of {min_points} or more examples, not "
                               f"{len(dataset[split]) if split in dataset else 0}")


def form_labels(split, classes: tuple[str, ...]) -> torch.Tensor | None:
    """(N,) each poem's form as an index into classes (the last, "other", for irregular verse), or None for a
    dataset that is not verse."""
    if not classes:
        return None
    return torch.tensor([classes.index(form_of(lines) or "other") for lines in split["lines"]])


def fit_prior(model: TextVAE, dataset: DatasetDict, kind: str = "gmm", *, fit_on: str = "means",
              max_points: int = 100_000, seed: int = 0, progress: bool = False, **options) -> None:
    """Fit a learned prior of `kind` to the posteriors of (a seeded subset of max_points of) the training split,
    checked or stopped early on the validation split's, and attach it to the model (model.priors[kind]). fit_on:
    each poem's posterior mean, or draws z ~ q(z|x) (textvae.priors.fitting). On a poem dataset the prior also
    learns p(z | form), which `sample --form` uses. Options are the kind's own."""
    _check_prior_fit(model, dataset, kind, fit_on)
    picked = data.seeded_subset(len(dataset["train"]), max_points, seed)
    classes = (*FORMS, "other") if "lines" in dataset["train"].column_names else ()
    points = []
    for split in (dataset["train"].select(picked), dataset["validation"]):
        loc, scale = posterior_parameters(model, data.token_ids(split), progress=progress)
        points.append(priors.Posteriors(loc, scale if fit_on == "samples" else torch.zeros_like(scale),
                                        form_labels(split, classes), classes))
    prior = priors.fit(kind, *points, seed=seed, progress=progress, **options)
    prior.info |= dict(fitted_on=priors.FIT_ON[fit_on], train_points=len(points[0]),
                       validation_points=len(points[1]), seed=seed)
    model.priors[kind] = prior


# -----------------------------------------------------------------------------
# text and poem metrics


def nats_per_character(model: TextVAE, texts: list[str], batch_size: int = 250) -> list[float]:
    """Each text's -ELBO under `model` (z at the posterior mode) divided by its characters: how natural another
    model's output reads to this one (a judge that never trained with it)."""
    scores, device = [], next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        ids, mask = data.pad_batch(model.tokenizer.encode_batch(chunk), model.config.max_len)
        with torch.inference_mode():
            out = model(ids.to(device), mask.to(device), sample=False)
        scores += ((out.rec + out.kl).cpu() / torch.tensor([len(t) for t in chunk])).tolist()
    return scores


def text_report(texts: list[str], train_texts: set[str], train_lines: set[str] | None, poems: bool) -> dict:
    """Diversity, novelty and (for poems) form, rhyme and tonal figures of a list of texts."""
    lines = [split_lines(t) for t in texts]
    sequences = [line for ls in lines for line in ls] if poems else [t.split() for t in texts]  # n-grams stay inside
    report = dict(count=len(texts), self_bleu=metrics.self_bleu(texts) if len(texts) > 1 else None,
                  distinct_1=metrics.distinct_n(sequences, 1), distinct_2=metrics.distinct_n(sequences, 2),
                  copied_texts=metrics.copy_rate(texts, train_texts))
    if not poems:
        return report
    rate, judged = rhyme_rate(lines)
    return report | dict(copied_lines=metrics.copy_rate([x for ls in lines for x in ls], train_lines),
                         form=form_compliance(lines), rhyme=rate, rhyme_judged=judged, tonal=tonal_compliance(lines))


def _subsample(items: list, n: int, seed: int) -> list:
    return [items[i] for i in data.seeded_subset(len(items), n, seed)]

# -----------------------------------------------------------------------------
# the whole evaluation


def load(model_dir: str | Path, data_dir: str | Path, device: str = "cpu") -> tuple[TextVAE, DatasetDict]:
    """A saved model and the prepared dataset it is scored on, checked to share one tokenizer."""
    model = load_model(model_dir, device=device)
    dataset, tokenizer = data.load(data_dir)
    check_same_tokenizer(model.tokenizer, tokenizer, model_dir, data_dir,
                         "Pass the dataset the model was trained on (--data).")
    return model, dataset


def select_split(dataset: DatasetDict, config: EvalConfig):
    """The examples scored: the split, or a seeded random subset of max_examples of it."""
    if config.split not in dataset:
        raise TextVAEError(f"the dataset has no split {config.split!r}; it has {', '.join(dataset)}")
    split = dataset[config.split]
    if config.max_examples and config.max_examples < len(split):
        # flatten_indices: the Arrow table (`.data`, read column-wise below) then holds only the selection
        split = split.select(data.seeded_subset(len(split), config.max_examples, config.seed)).flatten_indices()
    if len(split) < 2:
        raise TextVAEError(f"the {config.split} split has {len(split)} examples; evaluation needs at least 2")
    return split


def evaluate(model: TextVAE, dataset: DatasetDict, config: EvalConfig = EvalConfig(),
             progress: bool = False) -> tuple[dict, torch.Tensor | None]:
    """The report (JSON-able) and the posterior means E_q[z] (N, D) of the scored examples, in the order of
    `select_split` (for plots)."""
    split = select_split(dataset, config)
    model = model.to(config.device).eval()
    constraint = None
    if config.n and model.tokenizer is not None:  # built now: refuse what would fail after the IW pass
        constraint = constraint_for(model.tokenizer, config.form, rhyme=config.rhyme, meter=config.meter,
                                    device=next(model.parameters()).device)
        if model.head is not None:
            check_prior(model, config.prior)
    iw_prior, iw_kind = None, check_prior(model, config.iw_prior) if model.head is not None else "standard"
    if iw_kind != "standard" and config.iw_samples:  # None: the model's own p(z)
        iw_prior = model.priors[iw_kind].to(config.device)
        if not iw_prior.has_log_prob:
            raise TextVAEError(f"--iw-prior {iw_kind}: a {iw_kind} prior has no tractable log p(z), so it gives no "
                               "likelihood bound; use standard, gmm or flow")
    sequences = data.token_ids(split)
    data.warn_if_cut(sequences, model.config.max_len, f"{config.split} examples (scored cut short)")
    report = dict(split=config.split, seed=config.seed, posterior=model.config.posterior,
                  precision=resolve_precision(config.precision, config.device), config=dataclasses.asdict(config),
                  seconds={})
    tick = time.perf_counter()

    def lap(name):
        nonlocal tick
        report["seconds"][name], tick = round(time.perf_counter() - tick, 1), time.perf_counter()

    with torch.random.fork_rng(devices=[torch.device(config.device)] if config.device.startswith("cuda") else []):
        stats = latent_pass(model, sequences, config.batch_size, config.seed, precision=config.precision,
                            progress=progress)
        report["latent"] = latent_report(model, stats)
        lap("latent")
        if config.iw_samples:
            nll = iw_nll(model, sequences, config.iw_samples, config.iw_rows, config.batch_size, config.precision,
                         config.seed, progress, iw_prior)
            estimator = f"IW-NLL (K={config.iw_samples}{f', {iw_kind} prior' if iw_prior is not None else ''})"
            report["latent"] |= dict(iw_nll=float(nll.mean()), iw_ppl=metrics.perplexity(nll, stats["ntokens"]),
                                     iw_estimator="NLL (exact, no latent)" if model.head is None else estimator)
            lap("iw_nll")
        report["text"] = _text_metrics(model, dataset, split, stats, config, constraint, progress)
        lap("text")
    return report, stats["mean"]


def _prior_name(model: TextVAE, prior: str) -> str | None:
    """The prior samples came from, named: standard or a learned kind (None without a latent)."""
    return None if model.head is None else check_prior(model, prior)


def _text_metrics(model: TextVAE, dataset: DatasetDict, split, stats: dict, config: EvalConfig, constraint,
                  progress: bool) -> dict:
    poems = "lines" in split.column_names
    texts = split.data.column("text").to_pylist()
    train = dataset["train"] if "train" in dataset else split
    train_texts = set(train.data.column("text").to_pylist())
    train_lines = {x for ls in train.data.column("lines").to_pylist() for x in ls} if poems else None
    out = dict(bleu_tokenize="zh", strategy=config.strategy, poems=poems)
    if model.head is not None and model.tokenizer is not None:
        keep_form = constraint_for(model.tokenizer, device=config.device)  # a poem keeps its form, text is free
        decoded = decode_each(model, stats["mode"].to(config.device, torch.float32),
                              [keep_form.for_text(t) for t in texts], decoding=Decoding(precision=config.precision))
        out["reconstruction_bleu"] = metrics.bleu(decoded, texts)
        out["reconstruction_examples"] = [dict(reference=r, decoded=d) for r, d in zip(texts[:5], decoded[:5])]
    if constraint is not None:
        if progress:
            print(f"decoding {config.n} prior samples ...", flush=True)
        decoding = Decoding(strategy=config.strategy, precision=config.precision)
        samples = sample(model, config.n, decoding=decoding, constraint=constraint, seed=config.seed,
                         prior=config.prior)
        out["samples"] = text_report(samples, train_texts, train_lines, poems) | dict(
            examples=samples[:10], constrained_form=config.form, rhyme_steering=check_rhyme(config.rhyme) or "off",
            meter_steering=config.meter, prior=_prior_name(model, config.prior),
            relaxed=dict(constraint.relaxed))
    reference = _subsample(texts, config.n or len(texts), config.seed)
    out["corpus"] = text_report(reference, train_texts, train_lines, poems)
    return out


__all__ = ["EvalConfig", "evaluate", "fit_prior", "load", "nats_per_character", "select_split", "text_report"]
