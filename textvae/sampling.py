"""The next token of each row from an output layer's input features under a logit bias (poetry.Bias): sampled,
shaped by temperature, top-k or top-p (Fan et al. 2018; Holtzman et al. 2020), or greedy.

For the adaptive softmax (decoders.AdaptiveSoftmax; Grave et al. 2017) the draw is band-first and exact: the head
gives p(token) for the frequent tokens and p(band) for each band of rarer ones, so a row draws from the head first
and computes a band's tail only if it chose that band. Where a band's bias is not all 0 (a mask that keeps part of
it, or nats added), the head proposes the band with p(band) times its largest exp(bias) and the tail's token is
kept with the rest of its weight (rejection sampling); a rejected row falls back to the whole distribution, which
keeps the draw exact without computing the band's allowed mass for every row. Greedy and top-k decide from the
head alone for the rows whose k-th head token beats any token a band could hold; top-p, a temperature, and the
other rows of greedy and top-k fall back to the whole distribution.
Shapes: B rows, H features, V vocab, S head tokens, N bands, M bias table rows.
"""

import torch
import torch.nn.functional as F

from textvae.decoders import AdaptiveSoftmax
from textvae.poetry import Bias

_NEG_INF = float("-inf")


def _draw(weights: torch.Tensor) -> torch.Tensor:
    """One index per row of (B, N) nonnegative weights by inverse CDF, from one uniform each."""
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:]
    # u < total strictly, so the first cdf entry above u exists, and its weight is > 0
    u = (torch.rand_like(total) * total).minimum(total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True)[:, 0]


def inverse_cdf(probs: torch.Tensor, block: int = 64) -> torch.Tensor:
    """One draw per row of (B, V) unnormalised probabilities: a block of `block` tokens by its mass, then
    a token within it. Exact, and on CPU about 10x cheaper than torch.multinomial or Gumbel noise over the
    vocabulary; the two levels replace a sequential V-long cumsum by a vectorised sum."""
    B, V = probs.shape
    blocks = (F.pad(probs, (0, -V % block)) if V % block else probs).view(B, -1, block)  # padding: p = 0
    first = _draw(blocks.sum(dim=-1))  # (B,)
    return first * block + _draw(blocks[torch.arange(B, device=probs.device), first])


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) logits with the tokens outside the top k, then outside the nucleus of mass top_p, at -inf."""
    if top_k:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, _NEG_INF)
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the tokens before these already hold top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), _NEG_INF)
    return logits


def choose_from_logits(logits: torch.Tensor, strategy: str = "sample", temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0) -> torch.Tensor:
    """(B, V) biased logits -> (B,) next tokens, greedily or by sampling."""
    if strategy == "greedy":
        return logits.max(dim=-1).indices  # several times faster than argmax on CPU, bf16 especially
    if temperature != 1 or top_k or top_p < 1:
        logits = filter_top_k_top_p(logits / temperature, top_k, top_p)
    return inverse_cdf(torch.softmax(logits, dim=-1))


def choose(layer, features: torch.Tensor, bias: Bias, strategy: str = "sample", temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(B, H) output-layer inputs -> (B,) next tokens from softmax(layer(features) + bias), shaped as asked;
    band-first where the layer is an adaptive softmax (see the module's docstring)."""
    shaping = dict(strategy=strategy, temperature=temperature, top_k=top_k, top_p=top_p)
    if not isinstance(layer, AdaptiveSoftmax):
        return choose_from_logits(layer(features) + bias.dense(), **shaping)
    if strategy == "sample" and temperature == 1 and not top_k and top_p == 1:
        return _sample_band_first(layer, features, bias)
    if strategy == "greedy" or (top_k and top_p == 1):
        return _head_first(layer, features, bias, 1 if strategy == "greedy" else top_k, shaping)
    return _full(layer, features, bias, torch.arange(len(features), device=features.device), shaping)


def _full(layer: AdaptiveSoftmax, features: torch.Tensor, bias: Bias, rows: torch.Tensor, shaping: dict):
    """The fallback: the rows' tokens from the whole (n, V) distribution."""
    table = bias.table[bias.row_index(len(features))[rows]]  # (n, V)
    return choose_from_logits(layer(features[rows]) + table, **shaping)

# -----------------------------------------------------------------------------
# the band-first factorisation


def band_stats(layer: AdaptiveSoftmax, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per table row and band (M, N): the largest bias in the band (-inf: closed), and whether it is all 0."""
    bands = [table[:, lo:hi] for lo, hi in zip(layer.bounds, layer.bounds[1:])]
    top = torch.stack([band.amax(dim=-1) for band in bands], dim=-1)
    zero = torch.stack([(band == 0).all(dim=-1) for band in bands], dim=-1)
    return top, zero


def head_logits(layer: AdaptiveSoftmax, features: torch.Tensor, bias: Bias, top: torch.Tensor) -> torch.Tensor:
    """(B, S + N) fp32 head logits with the head tokens' bias added and each band's column raised by the largest
    bias in the band (`top` of band_stats: -inf closes it, 0 leaves p(band) where the band's bias is all 0)."""
    S = layer.shortlist
    shift = torch.cat([bias.table[:, :S], top], dim=-1)  # (M, S + N)
    if bias.index is not None:  # else the table's rows are the rows already, or one row broadcasts to all
        shift = shift[bias.index]
    return layer.head(features).float() + shift  # (B, S + N)


def _sample_band_first(layer: AdaptiveSoftmax, features: torch.Tensor, bias: Bias) -> torch.Tensor:
    """Exact ancestral draw by rejection: the head proposes, each band weighted by p(band) exp(top) (top: its
    largest bias); a row that chose a band draws from the band's bare tail and keeps the token with probability
    exp(bias - top), which is 1 where the band's bias is all 0. A rejected row draws from the whole distribution
    (`_full`), so every row's token follows softmax(logits + bias) exactly."""
    S, B = layer.shortlist, len(features)
    top, zero = band_stats(layer, bias.table)  # (M, N)
    index = bias.row_index(B)
    pick = inverse_cdf(torch.softmax(head_logits(layer, features, bias, top), dim=-1))  # (B,) in [0, S + N)
    tokens, rejected = pick.clone(), []
    for band in range(len(layer.tails)):
        chosen = (pick == S + band).nonzero()[:, 0]
        if not chosen.numel():
            continue
        picked = layer.bounds[band] + inverse_cdf(torch.softmax(layer.tails[band](features[chosen]).float(), dim=-1))
        tokens[chosen] = picked
        tilted = (~zero[index[chosen], band]).nonzero()[:, 0]
        if tilted.numel():
            rows = chosen[tilted]
            keep = (bias.table[index[rows], picked[tilted]] - top[index[rows], band]).exp()
            rejected.append(rows[torch.rand_like(keep) >= keep])
    rejected = torch.cat(rejected) if rejected else tokens[:0]
    if rejected.numel():
        tokens[rejected] = _full(layer, features, bias, rejected, dict(strategy="sample"))
    return tokens


def _head_first(layer: AdaptiveSoftmax, features: torch.Tensor, bias: Bias, k: int, shaping: dict) -> torch.Tensor:
    """Greedy (k = 1) or top-k: a row whose k-th best head token beats every token its bands could hold (p(band)
    times the band's largest exp(bias)) draws among its head tokens alone; the other rows fall back to `_full`."""
    S, B = layer.shortlist, len(features)
    top, _ = band_stats(layer, bias.table)  # (M, N)
    logits = head_logits(layer, features, bias, top)
    bound = logits[:, S:].amax(dim=-1)  # (B,) no band token's logit is above it
    tokens_only = logits[:, :S]
    kth = tokens_only.topk(min(k, S), dim=-1).values[:, -1]
    settled = (bound == _NEG_INF) | ((kth > bound) & (k <= S))
    tokens = torch.empty(B, dtype=torch.long, device=features.device)
    rows = settled.nonzero()[:, 0]
    if rows.numel():
        tokens[rows] = choose_from_logits(tokens_only[rows], **shaping)
    rest = (~settled).nonzero()[:, 0]
    if rest.numel():
        tokens[rest] = _full(layer, features, bias, rest, shaping)
    return tokens
