import math
import random

import pytest
import sacrebleu
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from textvae import metrics
from textvae.poetry import split_lines

# real Tang poems: 登鸛雀樓 (5x4), 杜甫 絕句 (7x4), 春望 (5x8); 靜夜思 (5x4)
DENG = "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。"
JUEJU = "兩個黃鸝鳴翠柳，一行白鷺上青天。窗含西嶺千秋雪，門泊東吳萬里船。"
CHUNWANG = "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。"
JINGYE = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"

# -----------------------------------------------------------------------------
# likelihood


def test_perplexity_is_exp_of_total_nll_over_total_tokens():
    assert metrics.perplexity(torch.tensor([10.0, 20.0]), torch.tensor([5, 10])) == pytest.approx(math.exp(2.0))


def test_perplexity_of_a_diverged_model_is_inf_not_an_overflow():
    assert metrics.perplexity(torch.tensor([800.0, 1e6]), torch.tensor([1, 1])) == math.inf
    assert metrics.perplexity(torch.tensor([700.0]), torch.tensor([1])) == pytest.approx(math.exp(700.0))


def test_iw_nll_with_one_sample_is_the_single_sample_negative_elbo():
    log_joint, log_q = torch.randn(1, 6), torch.randn(1, 6)
    torch.testing.assert_close(metrics.iw_nll(log_joint, log_q), -(log_joint - log_q)[0].double())


def test_iw_nll_is_minus_log_mean_weight_even_for_huge_weights():
    log_w = torch.tensor([[1000.0], [1000.0 + math.log(3)]], dtype=torch.float64)
    expected = -(1000 + math.log((1 + 3) / 2))
    assert metrics.iw_nll(log_w, torch.zeros_like(log_w)).item() == pytest.approx(expected, rel=1e-12)


def _linear_gaussian(seed=0, x_dim=3, z_dim=2, noise=0.5):
    """p(z) = N(0, I), p(x|z) = N(W z + b, noise^2 I): p(x) = N(b, W W^T + noise^2 I), and the exact
    posterior is Gaussian too."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64)
    b = torch.randn(x_dim, generator=g, dtype=torch.float64)
    x = torch.randn(4, x_dim, generator=g, dtype=torch.float64) * 2  # (B, X)
    log_px = MultivariateNormal(b, W @ W.T + noise ** 2 * torch.eye(x_dim)).log_prob(x)  # (B,)
    precision = torch.eye(z_dim, dtype=torch.float64) + W.T @ W / noise ** 2
    cov = torch.linalg.inv(precision)
    post_mean = (x - b) @ W @ cov.T / noise ** 2  # (B, Z)

    def log_joint(z):  # (K, B, Z) -> (K, B)
        prior = Independent(Normal(torch.zeros(z_dim, dtype=torch.float64), 1.0), 1)
        lik = Independent(Normal(z @ W.T + b, noise), 1)
        return prior.log_prob(z) + lik.log_prob(x)

    return log_px, post_mean, cov, log_joint


def test_iw_nll_is_exact_for_every_k_when_q_is_the_true_posterior():
    log_px, post_mean, cov, log_joint = _linear_gaussian()
    q = MultivariateNormal(post_mean, cov)
    z = q.sample((3,))
    torch.testing.assert_close(metrics.iw_nll(log_joint(z), q.log_prob(z)), -log_px)


def test_iw_nll_converges_to_the_closed_form_log_likelihood():
    torch.manual_seed(0)
    log_px, post_mean, cov, log_joint = _linear_gaussian()
    # a proposal off the true posterior, wider so that the weights have finite variance
    q = MultivariateNormal(post_mean + 0.1, 1.5 * cov)
    errors = {}
    for k in (1, 100, 20_000):
        z = q.sample((k, ))
        errors[k] = (metrics.iw_nll(log_joint(z), q.log_prob(z)) + log_px).abs().mean().item()
    assert errors[20_000] < 0.02
    assert errors[20_000] < errors[100] < errors[1]


def test_iw_nll_mean_does_not_increase_with_k():
    torch.manual_seed(0)
    log_px, post_mean, cov, log_joint = _linear_gaussian()
    q = MultivariateNormal(post_mean - 0.5, 1.5 * cov)
    means = []
    for k in (1, 5, 50):
        z = q.sample((k, 2000))  # 2000 independent K-sample estimates per example
        log_q = q.log_prob(z)
        means.append(metrics.iw_nll(log_joint(z).flatten(1), log_q.flatten(1)).view(2000, -1).mean(0))
    assert (means[0] >= means[1]).all() and (means[1] >= means[2]).all()
    assert (means[2] >= -log_px - 1e-3).all()  # still an upper bound on -log p(x)

# -----------------------------------------------------------------------------
# mutual information


def _gaussian_channel(n, dim=2, spread=2.0, noise=0.5, seed=0):
    """x_n ~ N(0, spread^2 I), q(z|x) = N(x, noise^2 I): I(x; z) = D/2 log(1 + spread^2 / noise^2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * spread
    z = x + noise * torch.randn(n, dim, generator=g, dtype=torch.float64)
    q = Independent(Normal(x, noise), 1)
    kl = 0.5 * (spread ** 2 + noise ** 2 - 1 - math.log(noise ** 2)) * dim  # E_x KL(q(z|x) || N(0, I))
    return q.log_prob(z[:, None, :]), dim / 2 * math.log(1 + spread ** 2 / noise ** 2), kl


def test_mutual_information_of_a_gaussian_channel_matches_the_closed_form():
    log_q, exact, kl = _gaussian_channel(3000)
    mi = metrics.mutual_information(log_q)
    assert mi == pytest.approx(exact, abs=0.1)
    assert mi <= kl and mi <= math.log(3000)


def test_mutual_information_is_zero_when_q_ignores_x():
    z = torch.randn(50, 3)
    log_q = Independent(Normal(torch.full((50, 3), 0.7), 1.3), 1).log_prob(z[:, None, :])
    assert metrics.mutual_information(log_q) == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_is_log_n_for_separated_posteriors():
    n = 16
    loc = torch.arange(n, dtype=torch.float64)[:, None] * 100  # posteriors 100 standard deviations apart
    z = loc + torch.randn(n, 1, dtype=torch.float64)
    log_q = Independent(Normal(loc, 1.0), 1).log_prob(z[:, None, :])
    assert metrics.mutual_information(log_q) == pytest.approx(math.log(n), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_mutual_information_never_exceeds_log_n(seed):
    g = torch.Generator().manual_seed(seed)
    log_q = torch.randn(20, 20, generator=g) * 30
    log_q.diagonal().add_(100)  # own posteriors dominate
    assert metrics.mutual_information(log_q) <= math.log(20) + 1e-12


def test_aggregate_posterior_is_the_mean_density_over_all_posteriors():
    log_q = torch.randn(5, 7)
    expected = log_q.exp().mean(dim=1).log()
    torch.testing.assert_close(metrics.log_aggregate_posterior(log_q), expected.double())

# -----------------------------------------------------------------------------
# active units


def _means_with_variances(variances, n=100):
    """(n, D) columns of ±sqrt(v): population variance exactly v per column."""
    signs = torch.tensor([1.0, -1.0]).repeat(n // 2)[:, None]
    return signs * torch.tensor(variances, dtype=torch.float64).sqrt() + 3.0


def test_active_units_counts_dimensions_over_the_threshold():
    means = _means_with_variances([1.0, 0.04, 0.0101, 0.0099, 0.0])
    assert metrics.active_units(means) == 3
    assert metrics.active_units(means, threshold=0.001) == 4


@pytest.mark.parametrize("share,expected", [(0.99, 4), (0.9, 3), (0.7, 2), (0.4, 1)])
def test_effective_units_count_the_largest_variances_that_carry_the_share(share, expected):
    means = _means_with_variances([1.0, 3.0, 0.0, 2.0, 4.0])  # total 10: cumulative 4, 7, 9, 10
    assert metrics.effective_units(means, share) == expected
    assert metrics.effective_units(means * 1e-3, share) == expected  # scale-free


def test_effective_units_on_principal_axes_see_through_a_rotation():
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(500, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 8, generator=g,
                                                                                    dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    means = low_rank @ rotation
    assert metrics.effective_units(means, principal=True) == 2
    assert metrics.effective_units(means) > 2
    assert metrics.effective_units(torch.ones(10, 4)) == 0

# -----------------------------------------------------------------------------
# text


def test_bleu_is_100_for_exact_reconstructions_and_character_level_for_chinese():
    assert metrics.bleu([DENG, JUEJU], [DENG, JUEJU]) == pytest.approx(100.0)
    one_char_off = DENG.replace("盡", "落")
    assert 50 < metrics.bleu([one_char_off], [DENG]) < 100  # a word-level BLEU would see one "word"


SELF_BLEU_SETS = [
    [DENG, JUEJU, CHUNWANG, JINGYE],
    [DENG, DENG, JUEJU, "白日依山落，黃河入海流。"],  # duplicates and a shorter text
    ["the cat sat on the mat", "the cat sat on a hat", "a dog ran", "the the the", "dogs and cats"],
]


@pytest.mark.parametrize("texts", SELF_BLEU_SETS)
def test_self_bleu_matches_sacrebleu_leave_one_out(texts):
    reference = sum(sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:], tokenize="zh").score
                    for i, t in enumerate(texts)) / len(texts)
    assert metrics.self_bleu(texts) == pytest.approx(reference, abs=1e-9)


def test_self_bleu_is_100_for_identical_texts():
    assert metrics.self_bleu([DENG] * 3) == pytest.approx(100.0)


def test_distinct_n_counts_ngrams_within_each_sequence():
    assert metrics.distinct_n(["春眠不覺曉", "春眠不覺曉"], 1) == pytest.approx(5 / 10)
    assert metrics.distinct_n(["春眠不覺曉", "春眠不覺曉"], 2) == pytest.approx(4 / 8)
    assert metrics.distinct_n(["ab", "cd"], 2) == pytest.approx(1.0)  # no "bc" across sequences
    assert metrics.distinct_n([["the", "cat"], ["the", "dog"]], 1) == pytest.approx(3 / 4)
    assert metrics.distinct_n(["a"], 2) == 0.0


def test_copy_rate_counts_verbatim_texts_and_lines():
    training = {DENG, JUEJU}
    assert metrics.copy_rate([DENG, CHUNWANG, JINGYE, JUEJU], training) == pytest.approx(0.5)
    lines = {line for poem in (DENG, JUEJU) for line in split_lines(poem)}
    sample = ["白日依山盡", "黃河入海去", "更上一層樓", "春眠不覺曉"]
    assert metrics.copy_rate(sample, lines) == pytest.approx(0.5)


# --- edits -------------------------------------------------------------------------------------------------


def _edit_distance_by_search(a: str, b: str) -> int:
    """The fewest single edits from a to b, by breadth-first search over every string one edit away."""
    alphabet, seen, frontier = set(a + b), {a}, [a]
    for distance in range(len(a) + len(b) + 1):
        if b in frontier:
            return distance
        step = set()
        for s in frontier:
            for i in range(len(s) + 1):
                step |= {s[:i] + c + s[i:] for c in alphabet} | {s[:i] + c + s[i + 1:] for c in alphabet}
                step.add(s[:i] + s[i + 1:])
        frontier = list(step - seen)
        seen |= step


@pytest.mark.parametrize("seed", range(20))
def test_edit_distance_matches_an_exhaustive_search(seed):
    rng = random.Random(seed)
    a, b = ("".join(rng.choice("春花月") for _ in range(rng.randint(0, 4))) for _ in range(2))
    assert metrics.edit_distance(a, b) == _edit_distance_by_search(a, b) == metrics.edit_distance(b, a)


def test_edit_distance_of_known_pairs():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance("床前明月光", "床前明月光") == 0
    assert metrics.edit_distance("", "春眠不覺曉") == 5


def test_kept_in_place_counts_characters_at_their_position():
    assert metrics.kept_in_place("白日依山盡", "白日依山盡") == 1.0
    assert metrics.kept_in_place("白日依山盡", "白月依水盡") == 0.6
    assert metrics.kept_in_place("白日依山盡", "日依山盡") == 0.0  # shifted: nothing in place
    assert metrics.kept_in_place("白日依山盡", "白日") == 0.4
