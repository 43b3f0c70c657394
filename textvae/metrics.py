"""Evaluation metrics as pure functions of tensors, log-densities and strings; the model-level loops that
feed them live in latent_stats.py and evaluate.py.

Shapes: K importance samples, B batch, N examples (M of them in a chunk of rows), D latent.
References: Burda et al. 2016 (importance-weighted bound, active units); Hoffman & Johnson 2016 (MI term
of the ELBO); Papineni et al. 2002 and Post 2018 (BLEU, sacrebleu); Zhu et al. 2018, Texygen (Self-BLEU);
Li et al. 2016 (distinct-n); Levenshtein 1966 (edit distance). Poem metrics (form, rhyme, tonal patterns)
live in textvae.poetry.
"""

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import sacrebleu
import torch
from sacrebleu.metrics import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams

# -----------------------------------------------------------------------------
# likelihood


def perplexity(nll, ntokens) -> float:
    """exp(Σ nll / Σ tokens): per-token perplexity from per-sentence NLLs (nats) and token counts.

    With nll = rec + KL this is the ELBO-PPL (an upper bound on the true perplexity); with the IW-NLL it
    is the IW-PPL. Tokens count EOS and exclude BOS, as `VAEOutput.ntokens` does. A diverged model's
    NLL past ~709 nats a token has no finite float perplexity: inf, not an OverflowError mid-training.
    """
    per_token = (float(torch.as_tensor(nll, dtype=torch.float64).sum())
                 / float(torch.as_tensor(ntokens, dtype=torch.float64).sum()))
    try:
        return math.exp(per_token)
    except OverflowError:
        return math.inf


def iw_nll(log_joint: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Importance-weighted NLL (Burda et al. 2016), (K, B) -> (B,) nats.

        IW-NLL(x) = -log (1/K) Σ_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x) independently,

    with log_joint[k, b] = log p(x_b|z_k) + log p(z_k) and log_q[k, b] = log q(z_k|x_b). Its expectation
    is an upper bound on -log p(x) that does not increase with K, equals -ELBO (with a one-sample KL) at
    K = 1, and tends to -log p(x) as K -> ∞. The log-mean-exp runs in float64.
    """
    log_w = log_joint.double() - log_q.double()
    return math.log(log_w.shape[0]) - torch.logsumexp(log_w, dim=0)


def log_aggregate_posterior(log_q: torch.Tensor) -> torch.Tensor:
    """log q(z_m) = log (1/N) Σ_n q(z_m|x_n) for a chunk of rows: (M, N) -> (M,), where
    log_q[m, n] = log q(z_m|x_n) over all N posteriors of the evaluation set."""
    return torch.logsumexp(log_q.double(), dim=1) - math.log(log_q.shape[1])


def mutual_information(log_q: torch.Tensor) -> float:
    """I_q(x; z) (Hoffman & Johnson 2016) estimated from one z_n ~ q(z|x_n) per example, (N, N) -> nats:

        MI = (1/N) Σ_n [log q(z_n|x_n) - log q(z_n)],   q(z) = (1/N) Σ_m q(z|x_m),

    where log_q[n, m] = log q(z_n|x_m), so the diagonal holds the own posteriors. The aggregate posterior
    is taken over the whole set passed in: restricted to one mini-batch of B the estimate is capped at
    log B. Since q(z_n) >= q(z_n|x_n) / N, the estimate never exceeds log N; the true MI is at most the
    mean KL(q(z|x) || p(z)), as KL = MI + KL(q(z) || p(z)).
    """
    return float((log_q.diagonal().double() - log_aggregate_posterior(log_q)).mean())


@torch.no_grad()
def aggregate_mutual_information(posteriors: list, z: torch.Tensor, log_q_own: torch.Tensor,
                                 rows: int = 256) -> float:
    """MI with q(z) = (1/N) Σ_m q(z|x_m) over all N posteriors (given as per-batch distributions) and one
    z_n ~ q(z|x_n) per example (`metrics.mutual_information`, without holding the N x N matrix)."""
    agg = []
    for start in range(0, z.size(0), rows):
        zs = z[start:start + rows, None, :]  # (M, 1, D)
        log_q = torch.cat([q.log_prob(zs.to(q.mode.device, q.mode.dtype)).double().cpu() for q in posteriors],
                          dim=1)  # (M, N)
        agg.append(log_aggregate_posterior(log_q))
    return float((log_q_own - torch.cat(agg)).mean())


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Active units (Burda et al. 2016): dimensions j with Cov_x(E_{q(z|x)}[z_j]) > threshold.

    `means` (N, D) holds E_q[z] per example (μ for Gaussian heads, A_D(κ)·μ for vMF); the variance is
    the population variance over the N examples.
    """
    return int((means.double().var(dim=0, unbiased=False) > threshold).sum())


def effective_units(means: torch.Tensor, share: float = 0.99, principal: bool = False) -> int:
    """A scale-free count of used dimensions: the fewest dimensions that together carry `share` of the
    total variance Σ_j Var_x(E_q[z_j]) of the posterior means (N, D), largest first.

    With principal=False the dimensions are the coordinate axes (what `active_units` thresholds); with
    principal=True they are the principal axes (eigenvalues of the covariance), so means that vary along
    few directions count as few units even when batch-norm gives every axis the same variance. Unlike the
    0.01 threshold this does not depend on the latent's scale (a vMF sphere spreads unit variance over D
    axes; BN fixes each axis's). Zero total variance gives 0.
    """
    centred = means.double() - means.double().mean(dim=0)
    if principal:
        variances = torch.linalg.eigvalsh(centred.T @ centred / means.shape[0]).clamp_min(0)
    else:
        variances = centred.pow(2).mean(dim=0)
    total = variances.sum()
    if total <= 0:
        return 0
    carried = variances.sort(descending=True).values.cumsum(0)
    return int((carried < share * total * (1 - 1e-12)).sum()) + 1


# -----------------------------------------------------------------------------
# text


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "zh") -> float:
    """Corpus BLEU (sacrebleu, 0-100) of hypotheses against one reference each. The "zh" tokenizer
    splits Chinese into characters and tokenises other text as sacrebleu's default 13a does."""
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score


def self_bleu(texts: Sequence[str], tokenize: str = "zh") -> float:
    """Self-BLEU (Zhu et al. 2018): the mean over texts of the sentence BLEU (sacrebleu's, 4-grams,
    exponential smoothing, effective order) of each text against all the others as references.
    100 means every text repeats the others; lower means more diverse.

    Computed exactly but without sacrebleu's N² reference passes: a hypothesis n-gram's clip count against
    "all others" is the largest count among the other texts, so the two largest counts per n-gram (and
    who holds the first) give every leave-one-out maximum; likewise for the closest reference length.
    """
    if len(texts) < 2:
        raise ValueError("Self-BLEU needs at least two texts")
    scorer = BLEU(tokenize=tokenize, effective_order=True)
    grams, lengths = zip(*(extract_all_word_ngrams(scorer._preprocess_segment(t), 1, 4) for t in texts))
    top: dict[tuple, list] = {}  # n-gram -> [largest count, its holder, second largest count]
    for i, counts in enumerate(grams):
        for gram, c in counts.items():
            best = top.setdefault(gram, [0, -1, 0])
            if c > best[0]:
                best[:] = [c, i, best[0]]
            elif c > best[2]:
                best[2] = c
    length_counts = Counter(lengths)
    scores = []
    for i, (counts, length) in enumerate(zip(grams, lengths)):
        correct, total = [0] * 4, [0] * 4
        for gram, c in counts.items():
            first, holder, second = top[gram]
            total[len(gram) - 1] += c
            correct[len(gram) - 1] += min(c, second if holder == i else first)
        others = [n for n, k in length_counts.items() if k > (n == length)]
        ref_len = min(others, key=lambda n: (abs(n - length), n))  # sacrebleu: closest, then shortest
        scores.append(BLEU.compute_bleu(correct, total, length, ref_len, smooth_method="exp",
                                        effective_order=True).score)
    return sum(scores) / len(scores)


def distinct_n(sequences: Iterable[Sequence[str]], n: int) -> float:
    """distinct-n (Li et al. 2016): distinct n-grams / all n-grams, n-grams taken within each sequence
    (a poem line, or a sentence's words) and pooled over all sequences. 0 when there are none."""
    grams = Counter(tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def copy_rate(texts: Sequence[str], training: set[str] | frozenset[str]) -> float:
    """Share of texts found verbatim in the training set (a set of texts, or of lines): 0 = all novel."""
    return sum(t in training for t in texts) / len(texts) if texts else 0.0


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions (characters, for strings)
    that turn a into b; one row of the dynamic programme at a time."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def kept_in_place(source: str, other: str) -> float:
    """Share of source's characters that other has at the same position (1 = identical, for texts of one
    length such as two poems of one form; positions past other's end count as changed)."""
    return sum(x == y for x, y in zip(source, other)) / len(source) if source else 0.0


__all__ = ["active_units", "aggregate_mutual_information", "bleu", "copy_rate", "distinct_n", "edit_distance",
           "effective_units", "iw_nll", "kept_in_place", "log_aggregate_posterior", "mutual_information",
           "perplexity", "self_bleu"]
