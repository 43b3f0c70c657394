"""Dataset-level evaluation: the loops that run a model over a split and feed metrics.py, the report
(eval.json and a printed table), and the plots. Training's validation uses the same core
(`validation_figures`, built on `latent_pass` and `latent_report`).

Every number says which estimator it is: ELBO terms use one z ~ q(z|x) per sentence with the exact KL;
IW-NLL uses K importance samples (Burda et al. 2016); MI aggregates q(z) over the whole split (Hoffman &
Johnson 2016). Everything runs in eval mode under one reported seed and one precision (textvae.precision).
Shapes: B batch, T tokens, D latent, K importance samples, N examples.
"""

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import DatasetDict
from torch.distributions import Independent, kl_divergence
from tqdm import tqdm

from textvae import data, metrics, priors
from textvae.errors import TextVAEError
from textvae.fields import SEED_LIMIT, check_choice, check_device, check_int, setting
from textvae.generate import (FORM_CHOICES, PRIORS, Decoding, check_prior, constraint_for, decode_each,
                              load_model, sample)
from textvae.poetry import FORMS, find_group, form_compliance, form_of, rhyme_rate, split_lines, tonal_compliance
from textvae.precision import PRECISION_HELP, autocast_for, check_precision, resolve_precision
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
    num_samples: int = setting(1000, "prior samples for the text and poem metrics (0 skips them)")
    strategy: str = setting("sample", "decoding of prior samples: sample (ancestral) | greedy")
    form: str = setting("free", "prior samples' form: free (the model decides) | auto (regular, the model picks it "
                                "as it writes) | drawn (from the corpus's form shares) | 5x4 | 7x4 | 5x8 | 7x8")
    rhyme: str = setting("", "prior samples rhyme-steered: auto | random | a group or character (\"\" = off)")
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
        check_int(self, "num_samples", 0, 100_000)
        check_int(self, "max_examples", 0, 10**9)
        check_int(self, "seed", 0, SEED_LIMIT - 1)
        if self.num_samples == 1:
            raise TextVAEError("EvalConfig.num_samples must be 0 or >= 2 (Self-BLEU compares samples)")
        check_choice(self, "strategy", STRATEGIES)
        check_choice(self, "form", FORM_CHOICES)
        check_choice(self, "prior", PRIORS)
        check_choice(self, "iw_prior", PRIORS)
        if self.rhyme not in ("", "auto", "random"):
            find_group(self.rhyme)  # a one-line error for an unknown group before any work
        if not isinstance(self.meter, bool):
            raise TextVAEError(f"EvalConfig.meter must be true or false, not {self.meter!r}")
        if self.form == "free" and (self.rhyme or self.meter):
            raise TextVAEError("EvalConfig.rhyme and meter steer poems: give a form (auto, 5x4, 7x4, 5x8 or 7x8), "
                               "not free")
        check_device(self)
        check_precision(self.precision, "EvalConfig.precision")


def _batches(sequences: list[list[int]], batch_size: int, max_len: int, sort: bool) -> Iterator:
    """(indices, ids (B, T), mask (B, T)); sorted by length when asked, so that batches carry no padding."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i])) if sort else list(range(len(sequences)))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield index, *data.pad_batch([sequences[i] for i in index], max_len)

# -----------------------------------------------------------------------------
# likelihood and latent statistics


@torch.no_grad()  # not inference_mode: with CPU bf16 autocast it sends the 3-D lm_head through a slow bmm
def iw_nll_batch(model: TextVAE, ids: torch.Tensor, mask: torch.Tensor, num_samples: int = 500,
                 rows: int = 256, precision: str = "fp32", prior=None) -> torch.Tensor:
    """IW-NLL (B,) in nats with K = num_samples, z_k ~ q(z|x) drawn in chunks of rows // B samples, each
    chunk decoded as one (chunk x B)-row batch. log q and log p(z) are the posterior's and the prior's own
    densities (vMF and the uniform sphere for vMF heads), or `prior`'s (a density on R^D, such as the
    aggregate prior). A model without a latent gets its exact NLL."""
    if model.head is None:
        return model.reconstruction_nll(None, ids).double()
    B = ids.size(0)
    q, prior = model.encode(ids, mask), model.prior(B) if prior is None else prior
    chunk = max(1, rows // B)
    log_joint, log_q = [], []
    for start in range(0, num_samples, chunk):
        z = q.sample((min(chunk, num_samples - start),))  # (c, B, D)
        c = z.size(0)
        with autocast_for(precision, ids.device):
            rec = model.reconstruction_nll(z.flatten(0, 1), ids.repeat(c, 1)).view(c, B)
        log_joint.append(prior.log_prob(z).double() - rec.double())
        log_q.append(q.log_prob(z).double())
    return metrics.iw_nll(torch.cat(log_joint), torch.cat(log_q))


@torch.no_grad()
def iw_nll(model: TextVAE, sequences: list[list[int]], num_samples: int = 500, rows: int = 256,
           batch_size: int = 64, precision: str = "fp32", seed: int = 0, progress: bool = False,
           prior=None) -> torch.Tensor:
    """IW-NLL per example (N,), in the order given; examples are batched by length (no padding). `prior`
    as for iw_nll_batch."""
    model.eval()
    device = next(model.parameters()).device
    nll = torch.empty(len(sequences), dtype=torch.float64)
    batch_size = min(batch_size, rows)
    torch.manual_seed(seed)
    with tqdm(total=len(sequences), desc=f"IW-NLL (K={num_samples})", unit="ex", disable=not progress) as bar:
        for index, ids, mask in _batches(sequences, batch_size, model.config.max_len, sort=True):
            nll[index] = iw_nll_batch(model, ids.to(device), mask.to(device), num_samples, rows, precision,
                                      prior).cpu()
            bar.update(len(index))
    return nll


def _kl_per_dim(q, prior) -> torch.Tensor | None:
    """(B, D) KL of each coordinate for factorised (diagonal Gaussian) posteriors, else None."""
    if isinstance(q, Independent) and isinstance(prior, Independent):
        return kl_divergence(q.base_dist, prior.base_dist)
    return None


@torch.no_grad()  # not inference_mode: with CPU bf16 autocast it takes a 3.6x slower path for the output layer
def latent_pass(model: TextVAE, sequences: list[list[int]], batch_size: int = 64, seed: int = 0, *,
                precision: str = "fp32", reliance: bool = True, progress: bool = False) -> dict:
    """One pass over the examples in their given order, one z ~ q(z|x) each. Returns per-example tensors
    (N,): rec, kl, ntokens, rec_shuffled (-log p(x|z') with z' another example's sample: z rolled by
    one within the batch; only with `reliance`, as it costs a second decoder pass, else None), log_q_own
    (log q(z_n|x_n)); (N, D): mean (E_q[z]), mode, z, kl_dim (diagonal Gaussians only); and posteriors,
    the per-batch q(z|x), with mi_batches, the per-mini-batch MI."""
    model.eval()
    device = next(model.parameters()).device
    keys = ("rec", "kl", "ntokens", "rec_shuffled", "log_q_own", "mean", "mode", "z", "kl_dim")
    parts, posteriors, mi_batches = {k: [] for k in keys}, [], []
    torch.manual_seed(seed)
    batches = _batches(sequences, batch_size, model.config.max_len, sort=False)
    for _, ids, mask in tqdm(batches, desc="latent statistics", unit="batch", disable=not progress,
                             total=math.ceil(len(sequences) / batch_size)):
        ids, mask = ids.to(device), mask.to(device)
        with autocast_for(precision, device):
            out = model(ids, mask)
            shuffled = None
            if reliance and out.q is not None:
                shuffled = model.reconstruction_nll(out.z.roll(1, dims=0), ids)
        found = dict(rec=out.rec, kl=out.kl, ntokens=out.ntokens)
        if out.q is not None:
            cross = out.q.log_prob(out.z[:, None, :])  # (B, B): [n, m] = log q(z_n | x_m)
            found |= dict(rec_shuffled=shuffled, log_q_own=cross.diagonal(), mean=out.q.mean, mode=out.q.mode,
                          z=out.z, kl_dim=_kl_per_dim(out.q, model.prior(ids.size(0))))
            posteriors.append(out.q)
            if ids.size(0) > 1:
                mi_batches.append((metrics.mutual_information(cross), ids.size(0)))
        for k, v in found.items():
            if v is not None:
                parts[k].append(v.double().cpu())
    stats = {k: torch.cat(v) if v else None for k, v in parts.items()}
    return stats | dict(posteriors=posteriors, mi_batches=mi_batches)


def posterior_means(model: TextVAE, sequences: list[list[int]], batch_size: int = 256,
                    progress: bool = False) -> torch.Tensor:
    """E_q[z|x] (N, D) of each sequence in order, from the encoder alone."""
    return _posterior_points(model, sequences, lambda q: q.mean, batch_size, progress, "posterior means")


def posterior_parameters(model: TextVAE, sequences: list[list[int]], batch_size: int = 256,
                         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation (N, D) of each sequence's Gaussian q(z|x), in order."""
    both = _posterior_points(model, sequences, lambda q: torch.stack([q.mean, q.stddev], dim=1), batch_size,
                             progress, "posteriors")  # (N, 2, D)
    return both[:, 0], both[:, 1]


@torch.no_grad()
def _posterior_points(model: TextVAE, sequences: list[list[int]], pick, batch_size: int, progress: bool,
                      desc: str) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for _, ids, mask in tqdm(_batches(sequences, batch_size, model.config.max_len, sort=False), unit="batch",
                             desc=desc, disable=not progress, total=math.ceil(len(sequences) / batch_size)):
        parts.append(pick(model.encode(ids.to(device), mask.to(device))).double().cpu())
    return torch.cat(parts)


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
    picked = _subsample(list(range(len(dataset["train"]))), max_points, seed)
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


def latent_report(model: TextVAE, stats: dict) -> dict:
    """ELBO terms, KL, MI (whole set and per mini-batch), active and effective units, decoder reliance (None
    when the pass skipped it)."""
    rec, kl, ntokens = stats["rec"], stats["kl"], stats["ntokens"]
    n, tokens = rec.numel(), float(ntokens.sum())
    report = dict(examples=n, tokens=int(tokens), rec=float(rec.mean()), kl=float(kl.mean()),
                  elbo=-float((rec + kl).mean()), elbo_ppl=metrics.perplexity(rec + kl, ntokens))
    if model.head is None:
        return report
    mean, batches = stats["mean"], stats["mi_batches"]
    variances = mean.var(dim=0, unbiased=False)
    reliance = None if stats["rec_shuffled"] is None else stats["rec_shuffled"] - rec
    return report | dict(
        kl_per_dim=None if stats["kl_dim"] is None else stats["kl_dim"].mean(dim=0).tolist(),
        mi=metrics.aggregate_mutual_information(stats["posteriors"], stats["z"], stats["log_q_own"]),
        mi_minibatch=sum(mi * b for mi, b in batches) / sum(b for _, b in batches) if batches else None,
        log_n=math.log(n), latent_dim=mean.size(1), variance_per_dim=variances.tolist(),
        active_units=metrics.active_units(mean), effective_units=metrics.effective_units(mean),
        effective_units_pca=metrics.effective_units(mean, principal=True),
        decoder_reliance=None if reliance is None else float(reliance.mean()),
        decoder_reliance_per_token=None if reliance is None else float(reliance.sum()) / tokens)


def validation_figures(model: TextVAE, sequences: list[list[int]], batch_size: int = 256, seed: int = 0,
                       precision: str = "fp32") -> dict:
    """What training logs for validation, from the evaluation core without its decoder-reliance pass: elbo,
    rec and kl per sentence, ppl (the ELBO perplexity per token), active_units, and mi (the whole-set
    I_q(x; z)) for a model with a latent. The model's mode and the global random state are left as they were."""
    was_training, device = model.training, next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        stats = latent_pass(model, sequences, batch_size, seed, precision=precision, reliance=False)
    model.train(was_training)
    report = latent_report(model, stats)
    figures = dict(elbo=report["elbo"], rec=report["rec"], kl=report["kl"], ppl=report["elbo_ppl"])
    if model.head is None:
        return figures | dict(active_units=0)
    return figures | dict(active_units=report["active_units"], mi=report["mi"])

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
    if len(items) <= n:
        return items
    pick = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n]
    return [items[i] for i in sorted(pick.tolist())]

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
        split = split.select(_subsample(list(range(len(split))), config.max_examples, config.seed)).flatten_indices()
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
    if config.num_samples and model.tokenizer is not None:  # built now: refuse what would fail after the IW pass
        constraint = constraint_for(model.tokenizer, config.form, rhyme=config.rhyme or None, meter=config.meter,
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
            print(f"decoding {config.num_samples} prior samples ...", flush=True)
        decoding = Decoding(strategy=config.strategy, precision=config.precision)
        samples = sample(model, config.num_samples, decoding=decoding, constraint=constraint, seed=config.seed,
                         prior=config.prior)
        out["samples"] = text_report(samples, train_texts, train_lines, poems) | dict(
            examples=samples[:10], constrained_form=config.form, rhyme_steering=config.rhyme or "off",
            meter_steering=config.meter, prior=_prior_name(model, config.prior),
            relaxed=dict(getattr(constraint, "relaxed", {})))
    reference = _subsample(texts, config.num_samples or len(texts), config.seed)
    out["corpus"] = text_report(reference, train_texts, train_lines, poems)
    return out

# -----------------------------------------------------------------------------
# the printed table


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    lat, text = report["latent"], report["text"]
    rows = [f"split {report['split']}: {lat['examples']:,} examples, {lat['tokens']:,} tokens (EOS counted); "
            f"posterior {report['posterior']}; seed {report['seed']}; precision {report['precision']}",
            "", "likelihood (nats per sentence)",
            f"  rec                         {_fmt(lat['rec'])}",
            f"  KL                          {_fmt(lat['kl'])}",
            f"  -ELBO                       {_fmt(-lat['elbo'])}   ELBO-PPL {_fmt(lat['elbo_ppl'])}"]
    if "iw_nll" in lat:
        label = lat["iw_estimator"].ljust(27)  # "IW-NLL (K=500, aggregate prior)" overruns the column
        rows.append(f"  {label} {_fmt(lat['iw_nll'])}   IW-PPL {_fmt(lat['iw_ppl'])}")
    if "mi" in lat:
        d = lat["latent_dim"]
        rows += ["", "latent",
                 f"  MI, q(z) over the whole set {_fmt(lat['mi'], '.3f')}   (<= log N = {lat['log_n']:.2f})",
                 f"  MI, per mini-batch          {_fmt(lat['mi_minibatch'], '.3f')}   (capped at log B)",
                 f"  active units (Var > 0.01)   {lat['active_units']} / {d}",
                 f"  units with 99% of Var E[z]  {lat['effective_units']} / {d}   "
                 f"(principal axes: {lat['effective_units_pca']})",
                 f"  decoder reliance            {_fmt(lat['decoder_reliance'])}   (rec increase with another "
                 f"sentence's z; {_fmt(lat['decoder_reliance_per_token'], '.3f')} nats/token)"]
    if "reconstruction_bleu" in text:
        rows += ["", f"reconstruction BLEU (posterior mode, greedy, form kept)   {_fmt(text['reconstruction_bleu'])}"]
    rows += ["", f"{'text':28}{'samples':>10}{'corpus':>10}"]
    sampled, corpus = text.get("samples", {}), text["corpus"]
    names = [("self_bleu", "Self-BLEU", ".1f"), ("distinct_1", "distinct-1", ".3f"),
             ("distinct_2", "distinct-2", ".3f"), ("copied_texts", "copies a training text", ".1%")]
    if text["poems"]:
        names += [("copied_lines", "lines found in training", ".1%"), ("form", "regular form", ".1%"),
                  ("rhyme", "rhyme rate (judged)", ".1%"), ("rhyme_judged", "  judged by the table", ".1%"),
                  ("tonal", "tonal pattern", ".1%")]
    for key, label, spec in names:
        rows.append(f"  {label:26}{_fmt(sampled.get(key), spec):>10}{_fmt(corpus.get(key), spec):>10}")
    rows.append(f"  ({sampled.get('count', 0):,} prior samples, {text['strategy']} decoding, form "
                f"{sampled.get('constrained_form', 'free')}, rhyme steering {sampled.get('rhyme_steering', 'off')}, "
                f"meter steering {'on' if sampled.get('meter_steering') else 'off'}; corpus: "
                f"{corpus['count']:,} texts of the {report['split']} split)")
    if sampled.get("relaxed"):
        rows.append("  (rules relaxed where no character kept them all, positions: "
                    + ", ".join(f"{rule} {n:,}" for rule, n in sampled["relaxed"].items()) + ")")
    return "\n".join(rows)

# -----------------------------------------------------------------------------
# plots


def read_metrics_log(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a torn last line, from a run still writing, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_plots(report: dict, means: torch.Tensor | None, split, out_dir: Path,
                metrics_log: Path | None = None) -> list[Path]:
    """PNGs: KL per dimension, variance of E_q[z] per dimension, training curves (when the run's
    metrics.jsonl is given and exists), and a 2-D PCA projection of E_q[z] coloured by the split's form
    and dynasty columns (those it has)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lat, written = report["latent"], []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(out_dir / name)

    if lat.get("kl_per_dim"):
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar(range(len(lat["kl_per_dim"])), lat["kl_per_dim"])
        ax.set(xlabel="latent dimension", ylabel="KL (nats)", title=f"KL per dimension (total {lat['kl']:.2f})")
        save(fig, "kl_per_dim.png")
    if lat.get("variance_per_dim"):
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar(range(lat["latent_dim"]), lat["variance_per_dim"])
        ax.axhline(0.01, color="red", lw=1, label="0.01 (active-unit threshold)")
        ax.set(xlabel="latent dimension", ylabel="Var_x E_q[z_j]", yscale="log",
               title=f"active units: {lat['active_units']} / {lat['latent_dim']}")
        ax.legend(loc="lower right")
        save(fig, "active_units.png")
    if metrics_log is not None and Path(metrics_log).is_file():
        save(_training_curves(plt, read_metrics_log(metrics_log)), "training_curves.png")
    if means is not None and means.size(1) >= 2:
        labels = {c: split[c] for c in ("form", "dynasty") if c in split.column_names}
        save(_projection(plt, means, labels), "latent_projection.png")
    return written


def _training_curves(plt, records: list[dict]):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for split, style in (("train", "-"), ("validation", "o-")):
        rows = [r for r in records if r.get("split") == split]
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes[:2], ("rec", "kl")):
            ax.plot(steps, [r.get(key) for r in rows], style, label=split, ms=3)
        axes[2].plot(steps, [r.get("ppl") for r in rows], style, ms=3, label=f"{split} ELBO-PPL")
        if split == "train":
            twin = axes[1].twinx()
            twin.plot(steps, [r.get("beta") for r in rows], "k:", lw=1)
            twin.set_ylabel("β (dotted)")
    for ax, title in zip(axes, ("rec (nats / sentence)", "KL (nats / sentence)", "perplexity")):
        ax.set(xlabel="step", title=title)
        ax.legend()
    axes[2].set_yscale("log")
    fig.tight_layout()
    return fig


def _projection(plt, means: torch.Tensor, labels: dict[str, list[str]]):
    centred = means.double() - means.double().mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()  # (N, 2): the two principal axes
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(6 * max(1, len(labels)), 5), squeeze=False)
    for ax, (name, values) in zip(axes[0], labels.items() or [("", [""] * len(xy))]):
        for value in sorted(set(values)):
            pick = [i for i, v in enumerate(values) if v == value]
            ax.scatter(xy[pick, 0], xy[pick, 1], s=4, alpha=0.5, label=value or None)
        ax.set(xlabel="PC 1", ylabel="PC 2", title=f"E_q[z], coloured by {name}" if name else "E_q[z]")
        if name:
            ax.legend(markerscale=3)
    return fig


__all__ = ["EvalConfig", "evaluate", "format_report", "iw_nll", "iw_nll_batch",
           "latent_pass", "latent_report", "load", "read_metrics_log", "select_split", "text_report",
           "validation_figures", "write_plots"]
