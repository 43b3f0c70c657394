"""The dataset passes of textvae.latent_stats against references: IW-NLL against the one-sample ELBO and the
exact NLL of a decoder that ignores z; MI, active units and KL per dimension against closed forms and Monte Carlo."""

import math
import subprocess
import sys

import pytest
import torch

from textvae import data, metrics
from textvae.latent_stats import iw_nll, iw_nll_batch, latent_pass, latent_report
from textvae.metrics import mutual_information
from textvae.tokenizer import Tokenizer
from textvae.vae import TextVAE
from tiny_poems import POEMS, tiny



@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(POEMS, kind="char", vocab_size=600)




def batch(tokenizer, texts=POEMS[:6]):
    return data.pad_batch([tokenizer.encode(t) for t in texts])


def ignore_latent(model: TextVAE, ignore_x: bool = True) -> TextVAE:
    """Make the GRU decoder independent of z and, with ignore_x, q(z|x) = N(0, I) = p(z) for every x."""
    with torch.no_grad():
        model.decoder.z_to_hidden.weight.zero_()
        model.decoder.z_to_hidden.bias.zero_()
        model.decoder.rnn.weight_ih_l0[:, -model.config.latent_dim:].zero_()
        if ignore_x:
            for layer in (model.head.to_loc, model.head.to_logvar):
                layer.weight.zero_()
                layer.bias.zero_()
    return model

# -----------------------------------------------------------------------------
# IW-NLL


@pytest.mark.parametrize("posterior", ["gaussian", "vmf"])
def test_iw_nll_with_one_sample_averages_to_negative_elbo(tokenizer, posterior):
    model = tiny(tokenizer, posterior)
    ids, mask = batch(tokenizer)
    repeats, B = 200, ids.size(0)
    ids, mask = ids.repeat(repeats, 1), mask.repeat(repeats, 1)
    with torch.no_grad():
        iw = iw_nll_batch(model, ids, mask, iw_samples=1, rows=ids.size(0)).view(repeats, B)
        out = model(ids, mask)
    neg_elbo = (out.rec + out.kl).double().view(repeats, B)  # one-sample rec, exact KL
    se = (iw.var(0) / repeats + neg_elbo.var(0) / repeats).sqrt()
    assert ((iw.mean(0) - neg_elbo.mean(0)).abs() < 4.5 * se + 1e-6).all()


@pytest.mark.parametrize("posterior", ["gaussian", "vmf"])
def test_iw_nll_mean_does_not_increase_from_1_to_50_samples(tokenizer, posterior):
    model = tiny(tokenizer, posterior)
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        one = iw_nll_batch(model, ids.repeat(200, 1), mask.repeat(200, 1), iw_samples=1, rows=1200)
        fifty = iw_nll_batch(model, ids.repeat(4, 1), mask.repeat(4, 1), iw_samples=50, rows=1200)
    se = math.sqrt(one.var() / one.numel() + fifty.var() / fifty.numel())
    assert fifty.mean() <= one.mean() + 3 * se
    assert fifty.mean() < one.mean()


def test_iw_nll_equals_the_decoders_exact_nll_when_the_latent_is_ignored(tokenizer):
    model = ignore_latent(tiny(tokenizer))
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        exact = model.reconstruction_nll(torch.zeros(ids.size(0), 8), ids).double()
        torch.testing.assert_close(iw_nll_batch(model, ids, mask, iw_samples=7, rows=16), exact, rtol=1e-6, atol=1e-4)
    # the dataset-level driver batches by length and puts each result back in place
    sequences = [tokenizer.encode(t) for t in POEMS[:6]]
    torch.testing.assert_close(iw_nll(model, sequences, iw_samples=3, rows=8, batch_size=4), exact, rtol=1e-6,
                               atol=1e-4)


def test_iw_nll_of_the_language_model_baseline_is_its_exact_nll(tokenizer):
    model = tiny(tokenizer, "none")
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        exact = model.reconstruction_nll(None, ids).double()
    torch.testing.assert_close(iw_nll(model, [tokenizer.encode(t) for t in POEMS[:6]], iw_samples=5), exact)

# -----------------------------------------------------------------------------
# latent statistics


def sequences(tokenizer):
    return [tokenizer.encode(t) for t in POEMS]


def test_mutual_information_is_zero_when_the_encoder_ignores_x(tokenizer):
    model = ignore_latent(tiny(tokenizer), ignore_x=False)
    with torch.no_grad():
        model.head.to_loc.weight.zero_()
        model.head.to_logvar.weight.zero_()
        model.head.to_loc.bias.fill_(0.5)
        model.head.to_logvar.bias.fill_(-1.0)  # q = N(0.5, e^-1) for every x: not the prior, so KL > 0
    report = latent_report(model, latent_pass(model, sequences(tokenizer), batch_size=5))
    assert report["mi"] == pytest.approx(0.0, abs=1e-9)
    assert report["mi_minibatch"] == pytest.approx(0.0, abs=1e-9)
    assert report["kl"] > 0.1
    assert report["active_units"] == 0 and report["effective_units"] == 0
    assert report["decoder_reliance"] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("posterior", ["gaussian", "bn", "vmf"])
def test_mutual_information_is_at_most_kl_and_log_n(tokenizer, posterior):
    model = tiny(tokenizer, posterior)
    report = latent_report(model, latent_pass(model, sequences(tokenizer), batch_size=5))
    assert 0 < report["mi"] <= math.log(len(POEMS)) + 1e-9
    assert report["mi"] <= report["kl"]
    assert report["mi_minibatch"] <= math.log(5) + 1e-9


def test_chunked_aggregate_mutual_information_equals_the_whole_matrix(tokenizer):
    model = tiny(tokenizer)
    stats = latent_pass(model, sequences(tokenizer), batch_size=5)
    q = torch.distributions.Independent(torch.distributions.Normal(
        torch.cat([p.base_dist.loc for p in stats["posteriors"]]),
        torch.cat([p.base_dist.scale for p in stats["posteriors"]])), 1)
    whole = mutual_information(q.log_prob(stats["z"][:, None, :].float()))
    chunked = metrics.aggregate_mutual_information(stats["posteriors"], stats["z"], stats["log_q_own"], rows=5)
    assert chunked == pytest.approx(whole, abs=1e-5)


def test_active_units_use_the_vmf_mean_not_its_mode(tokenizer):
    model = tiny(tokenizer, "vmf", kappa=20.0)
    stats = latent_pass(model, sequences(tokenizer)[:3], batch_size=3)
    ids, mask = batch(tokenizer, POEMS[:3])
    with torch.no_grad():
        draws = model.encode(ids, mask).sample((40_000,)).double().mean(dim=0)  # Monte Carlo E_q[z]
    torch.testing.assert_close(stats["mean"], draws, atol=0.01, rtol=0)
    assert (stats["mean"].norm(dim=1) < 0.95).all()
    assert torch.allclose(stats["mode"].norm(dim=1), torch.ones(3).double())


def test_skipping_the_reliance_pass_changes_no_other_figure(tokenizer):
    model = tiny(tokenizer)
    full = latent_report(model, latent_pass(model, sequences(tokenizer), batch_size=5, seed=2))
    cheap = latent_report(model, latent_pass(model, sequences(tokenizer), batch_size=5, seed=2, reliance=False))
    assert cheap["decoder_reliance"] is None and cheap["decoder_reliance_per_token"] is None
    assert {k: v for k, v in cheap.items() if not k.startswith("decoder_reliance")} == \
        {k: v for k, v in full.items() if not k.startswith("decoder_reliance")}


def test_bf16_latent_pass_stays_close_to_fp32(tokenizer):
    model = tiny(tokenizer)
    fp32 = latent_pass(model, sequences(tokenizer), batch_size=6, precision="fp32")
    bf16 = latent_pass(model, sequences(tokenizer), batch_size=6, precision="bf16")
    assert fp32["rec"].dtype == bf16["rec"].dtype == torch.float64  # accumulated in double either way
    assert not torch.equal(bf16["rec"], fp32["rec"])  # the decoder did run in bf16
    torch.testing.assert_close(bf16["rec"], fp32["rec"], rtol=0.02, atol=0)  # bf16 keeps ~3 digits per product
    torch.testing.assert_close(bf16["kl"], fp32["kl"], rtol=0.05, atol=0.05)


def test_kl_per_dimension_sums_to_the_kl(tokenizer):
    report = latent_report(tiny(tokenizer), latent_pass(tiny(tokenizer), sequences(tokenizer)))
    assert sum(report["kl_per_dim"]) == pytest.approx(report["kl"], rel=1e-5)
    vmf = tiny(tokenizer, "vmf")
    assert latent_report(vmf, latent_pass(vmf, sequences(tokenizer)))["kl_per_dim"] is None


def test_training_and_the_latent_statistics_import_no_generation_or_poetry():
    code = ("import sys, textvae.latent_stats, textvae.train; "
            "print(sorted(m for m in sys.modules if m.startswith(('textvae.generate', 'textvae.poetry'))))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
