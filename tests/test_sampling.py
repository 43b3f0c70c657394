import pytest
import torch
from scipy.stats import chisquare

from textvae import sampling
from textvae.decoders import AdaptiveSoftmax, FullSoftmax
from textvae.poetry import Bias

H, V, CUTOFFS = 16, 40, (10, 25)
NEG = float("-inf")
DRAWS = 100_000


def adaptive():
    torch.manual_seed(0)
    return AdaptiveSoftmax(H, V, CUTOFFS, div_value=2)


def features(layer, band_weight=2.0):
    """One row of features, with the bands' head logits raised so that both bands hold real mass."""
    torch.manual_seed(1)
    x = torch.randn(1, H)
    with torch.no_grad():
        layer.head.bias[CUTOFFS[0]:] += band_weight
    return x


def biases():
    """Named (1, V) biases: none; a mask keeping part of each band (and some head tokens); one closing the first
    band; nats added in a band (the keyword and restyle boosts) and a mask beside them."""
    part = torch.zeros(1, V)
    part[0, [1, 3, 12, 13, 14, 20, 30, 31, 38]] = NEG
    closed = torch.zeros(1, V)
    closed[0, 10:25] = NEG
    boosted = part.clone()
    boosted[0, [15, 27]] = 2.0
    boosted[0, 4] = 1.5
    return dict(none=torch.zeros(1, V), partial=part, closed=closed, boosted=boosted)


def full_probs(layer, x, bias):
    with torch.no_grad():
        return torch.softmax(layer(x).double() + bias.double(), dim=-1)[0]  # (V,)


@pytest.mark.parametrize("name", list(biases()))
def test_the_band_first_proposal_times_acceptance_is_proportional_to_the_full_distribution(name):
    """The rejection identity, token by token: q(v) a(v) = P(accept) pi(v), with q the head's proposal times the
    band's tail, a = exp(bias - top) for band tokens (1 in the head) and pi the full softmax of logits + bias."""
    layer, bias = adaptive(), biases()[name]
    x = features(layer)
    with torch.no_grad():
        top, _ = sampling.band_stats(layer, bias)
        head = torch.softmax(sampling.head_logits(layer, x, Bias(bias), top).double(), dim=-1)[0]
        accepted = torch.empty(V, dtype=torch.float64)
        accepted[:CUTOFFS[0]] = head[:CUTOFFS[0]]
        for band, (lo, hi) in enumerate(zip(layer.bounds, layer.bounds[1:])):
            tail = torch.softmax(layer.tails[band](x).double(), dim=-1)[0]
            keep = (bias[0, lo:hi].double() - top[0, band].double()).exp() if top[0, band] > NEG else 0 * tail
            accepted[lo:hi] = head[CUTOFFS[0] + band] * tail * keep
        pi = full_probs(layer, x, bias)
    rate = accepted.sum()
    assert 0 < rate <= 1 + 1e-9
    torch.testing.assert_close(accepted / rate, pi, rtol=1e-6, atol=1e-9)
    if name in ("none", "closed"):
        torch.testing.assert_close(rate, torch.tensor(1.0, dtype=torch.float64))  # nothing is ever rejected


def draw_counts(layer, x, bias, **shaping):
    torch.manual_seed(2)
    with torch.no_grad():
        tokens = sampling.choose(layer, x.expand(DRAWS, -1), Bias(bias), **shaping)
    return torch.bincount(tokens, minlength=V).double()


def assert_fits(counts, probs):
    """Chi-square goodness of fit over the tokens of nonzero probability; none drawn outside them."""
    support = probs > 0
    assert counts[~support].sum() == 0
    expected = probs[support] / probs[support].sum() * counts.sum()
    assert chisquare(counts[support].numpy(), expected.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("name", list(biases()))
def test_band_first_draws_follow_the_full_distribution(name):
    layer, bias = adaptive(), biases()[name]
    x = features(layer)
    assert_fits(draw_counts(layer, x, bias), full_probs(layer, x, bias))


def reference_filtered(layer, x, bias, temperature, top_k, top_p):
    """The shaped distribution of the whole (1, V) row, as the full softmax path computes it."""
    logits = sampling.filter_top_k_top_p((layer(x) + bias) / temperature, top_k, top_p)
    return torch.softmax(logits.double(), dim=-1)[0]


@pytest.mark.parametrize("band_weight, shaping", [
    (2.0, dict(top_k=5)),     # the k-th head token may fall below a band: rows fall back
    (-8.0, dict(top_k=3)),    # bands far below the head's best: decided from the head alone
    (2.0, dict(top_p=0.6)),   # needs the whole distribution's order: every row falls back
    (2.0, dict(temperature=0.7)),
    (-8.0, dict(top_k=3, temperature=1.5)),
])
@pytest.mark.parametrize("name", ["none", "partial", "boosted"])
def test_shaped_draws_follow_the_shaped_full_distribution(band_weight, shaping, name):
    layer, bias = adaptive(), biases()[name]
    x = features(layer, band_weight)
    options = dict(temperature=1.0, top_k=0, top_p=1.0) | shaping
    with torch.no_grad():
        probs = reference_filtered(layer, x, bias, **options)
    assert_fits(draw_counts(layer, x, bias, **shaping), probs)


@pytest.mark.parametrize("band_weight", [-8.0, 0.0, 2.0, 6.0])
@pytest.mark.parametrize("name", list(biases()))
def test_greedy_picks_the_full_distributions_best_token(band_weight, name):
    layer, bias = adaptive(), biases()[name]
    torch.manual_seed(3)
    x = torch.randn(64, H) * 2
    with torch.no_grad():
        layer.head.bias[CUTOFFS[0]:] += band_weight
        expected = (layer(x) + bias).argmax(dim=-1)
        got = sampling.choose(layer, x, Bias(bias), strategy="greedy")
    assert torch.equal(got, expected)


def test_rows_with_their_own_biases_draw_from_their_own_distributions():
    """A table of biases and an index (as poetry.Verse gives): each row draws under its own table row."""
    layer, table = adaptive(), torch.cat(list(biases().values()))  # (4, V)
    x = features(layer)
    index = torch.arange(DRAWS) % len(table)
    torch.manual_seed(4)
    with torch.no_grad():
        tokens = sampling.choose(layer, x.expand(DRAWS, -1), Bias(table, index))
        for m in range(len(table)):
            counts = torch.bincount(tokens[index == m], minlength=V).double()
            assert_fits(counts, full_probs(layer, x, table[m:m + 1]))


def test_a_full_softmax_draws_from_logits_plus_bias():
    torch.manual_seed(0)
    layer, bias = FullSoftmax(H, V), biases()["partial"]
    x = torch.randn(1, H)
    assert_fits(draw_counts(layer, x, bias), full_probs(layer, x, bias))


def test_sampler_matches_the_distribution_and_never_draws_a_masked_token():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    draws = sampling.inverse_cdf(probs.expand(40000, -1).clone())
    freq = torch.bincount(draws, minlength=5) / draws.numel()
    assert freq[1] == freq[4] == 0
    assert torch.allclose(freq, probs, atol=0.01)


def test_top_k_and_top_p_keep_what_a_direct_implementation_keeps():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    kept = lambda out: set(torch.isfinite(out[0]).nonzero()[:, 0].tolist())  # noqa: E731
    assert kept(sampling.filter_top_k_top_p(logits, 2, 1.0)) == {1, 3}
    assert kept(sampling.filter_top_k_top_p(logits, 0, 0.7)) == {1, 3}  # 0.4 + 0.3 reaches 0.7
    assert kept(sampling.filter_top_k_top_p(logits, 0, 0.71)) == {1, 3, 4}
    assert kept(sampling.filter_top_k_top_p(logits, 0, 0.01)) == {1}  # the top token always stays
