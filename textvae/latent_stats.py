"""Latent statistics: the dataset passes that training's validation and `textvae evaluate` share. IW-NLL,
the ELBO terms, KL (per dimension for diagonal Gaussians), MI, active and effective units and decoder reliance,
from the encoder and teacher-forced decoder alone: nothing here decodes text.

Every number says which estimator it is: ELBO terms use one z ~ q(z|x) per sentence with the exact KL;
IW-NLL uses K importance samples (Burda et al. 2016, also for active units); MI aggregates q(z) over the whole
split (Hoffman & Johnson 2016). Everything runs in eval mode under one seed and one precision (textvae.precision).
Shapes: B batch, T tokens, D latent, K importance samples, N examples.
"""

import math
from collections.abc import Iterator

import torch
from torch.distributions import Independent, kl_divergence
from tqdm import tqdm

from textvae import data, metrics
from textvae.precision import autocast_for
from textvae.vae import TextVAE


def _batches(sequences: list[list[int]], batch_size: int, max_len: int, sort: bool) -> Iterator:
    """(indices, ids (B, T), mask (B, T)); sorted by length when asked, so that batches carry no padding."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i])) if sort else list(range(len(sequences)))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield index, *data.pad_batch([sequences[i] for i in index], max_len)


@torch.no_grad()  # not inference_mode: with CPU bf16 autocast it sends the 3-D lm_head through a slow bmm
def iw_nll_batch(model: TextVAE, ids: torch.Tensor, mask: torch.Tensor, iw_samples: int = 500,
                 rows: int = 256, precision: str = "fp32", prior=None) -> torch.Tensor:
    """IW-NLL (B,) in nats with K = iw_samples, z_k ~ q(z|x) drawn in chunks of rows // B samples, each
    chunk decoded as one (chunk x B)-row batch. log q and log p(z) are the posterior's and the prior's own
    densities (vMF and the uniform sphere for vMF heads), or `prior`'s (a density on R^D, such as the
    aggregate prior). A model without a latent gets its exact NLL."""
    if model.head is None:
        return model.reconstruction_nll(None, ids).double()
    B = ids.size(0)
    q, prior = model.encode(ids, mask), model.prior(B) if prior is None else prior
    chunk = max(1, rows // B)
    log_joint, log_q = [], []
    for start in range(0, iw_samples, chunk):
        z = q.sample((min(chunk, iw_samples - start),))  # (c, B, D)
        c = z.size(0)
        with autocast_for(precision, ids.device):
            rec = model.reconstruction_nll(z.flatten(0, 1), ids.repeat(c, 1)).view(c, B)
        log_joint.append(prior.log_prob(z).double() - rec.double())
        log_q.append(q.log_prob(z).double())
    return metrics.iw_nll(torch.cat(log_joint), torch.cat(log_q))


@torch.no_grad()
def iw_nll(model: TextVAE, sequences: list[list[int]], iw_samples: int = 500, rows: int = 256,
           batch_size: int = 64, precision: str = "fp32", seed: int = 0, progress: bool = False,
           prior=None) -> torch.Tensor:
    """IW-NLL per example (N,), in the order given; examples are batched by length (no padding). `prior`
    as for iw_nll_batch."""
    model.eval()
    device = next(model.parameters()).device
    nll = torch.empty(len(sequences), dtype=torch.float64)
    batch_size = min(batch_size, rows)
    torch.manual_seed(seed)
    with tqdm(total=len(sequences), desc=f"IW-NLL (K={iw_samples})", unit="ex", disable=not progress) as bar:
        for index, ids, mask in _batches(sequences, batch_size, model.config.max_len, sort=True):
            nll[index] = iw_nll_batch(model, ids.to(device), mask.to(device), iw_samples, rows, precision,
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
    """What training logs for validation, from latent_pass and latent_report without the reliance pass: elbo,
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


__all__ = ["iw_nll", "iw_nll_batch", "latent_pass", "latent_report", "posterior_means", "posterior_parameters",
           "validation_figures"]
