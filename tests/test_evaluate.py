import json
import math

import pytest
import torch
from datasets import Dataset, DatasetDict

from textvae import data, metrics
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.evaluate import (EvalConfig, evaluate, format_report, iw_nll, iw_nll_batch,
                              latent_pass, latent_report)
from textvae.metrics import mutual_information
from textvae.poetry import follows_tonal_pattern, form_of, split_lines
from textvae.precision import resolve_precision
from textvae.tokenizer import Tokenizer
from textvae.vae import TextVAE, VAEConfig

POEMS = [
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
    "兩個黃鸝鳴翠柳，一行白鷺上青天。窗含西嶺千秋雪，門泊東吳萬里船。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "故人西辭黃鶴樓，煙花三月下揚州。孤帆遠影碧空盡，唯見長江天際流。",
    "月落烏啼霜滿天，江楓漁火對愁眠。姑蘇城外寒山寺，夜半鐘聲到客船。",
    "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。",
    "空山新雨後，天氣晚來秋。明月松間照，清泉石上流。竹喧歸浣女，蓮動下漁舟。隨意春芳歇，王孫自可留。",
    "葡萄美酒夜光杯，欲飲琵琶馬上催。醉臥沙場君莫笑，古來征戰幾人回。",
]
TINY = dict(embed_dim=32, encoder_hidden=32, decoder_hidden=64, latent_dim=8, num_heads=2, max_len=80)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(POEMS, kind="char", vocab_size=600)


@pytest.fixture(scope="module")
def dataset(tokenizer):
    records = [dict(text=t, lines=split_lines(t), form=form_of(split_lines(t)), dynasty=("tang", "song")[i % 2],
                    ids=tokenizer.encode(t)) for i, t in enumerate(POEMS)]
    return DatasetDict(train=Dataset.from_list(records), validation=Dataset.from_list(records[:2]),
                       test=Dataset.from_list(records[1::2]))


def tiny(tokenizer, posterior="gaussian", seed=0, **extra):
    torch.manual_seed(seed)
    config = VAEConfig(vocab_size=tokenizer.vocab_size, posterior=posterior, **TINY, **extra)
    return TextVAE(config, tokenizer).eval()


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
        iw = iw_nll_batch(model, ids, mask, num_samples=1, rows=ids.size(0)).view(repeats, B)
        out = model(ids, mask)
    neg_elbo = (out.rec + out.kl).double().view(repeats, B)  # one-sample rec, exact KL
    se = (iw.var(0) / repeats + neg_elbo.var(0) / repeats).sqrt()
    assert ((iw.mean(0) - neg_elbo.mean(0)).abs() < 4.5 * se + 1e-6).all()


@pytest.mark.parametrize("posterior", ["gaussian", "vmf"])
def test_iw_nll_mean_does_not_increase_from_1_to_50_samples(tokenizer, posterior):
    model = tiny(tokenizer, posterior)
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        one = iw_nll_batch(model, ids.repeat(200, 1), mask.repeat(200, 1), num_samples=1, rows=1200)
        fifty = iw_nll_batch(model, ids.repeat(4, 1), mask.repeat(4, 1), num_samples=50, rows=1200)
    se = math.sqrt(one.var() / one.numel() + fifty.var() / fifty.numel())
    assert fifty.mean() <= one.mean() + 3 * se
    assert fifty.mean() < one.mean()


def test_iw_nll_equals_the_decoders_exact_nll_when_the_latent_is_ignored(tokenizer):
    model = ignore_latent(tiny(tokenizer))
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        exact = model.reconstruction_nll(torch.zeros(ids.size(0), 8), ids).double()
        torch.testing.assert_close(iw_nll_batch(model, ids, mask, num_samples=7, rows=16), exact, rtol=1e-6, atol=1e-4)
    # the dataset-level driver batches by length and puts each result back in place
    sequences = [tokenizer.encode(t) for t in POEMS[:6]]
    torch.testing.assert_close(iw_nll(model, sequences, num_samples=3, rows=8, batch_size=4), exact, rtol=1e-6, atol=1e-4)


def test_iw_nll_of_the_language_model_baseline_is_its_exact_nll(tokenizer):
    model = tiny(tokenizer, "none")
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        exact = model.reconstruction_nll(None, ids).double()
    torch.testing.assert_close(iw_nll(model, [tokenizer.encode(t) for t in POEMS[:6]], num_samples=5), exact)

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
    assert (stats["mean"].norm(dim=1) < 0.95).all() and torch.allclose(stats["mode"].norm(dim=1), torch.ones(3).double())


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

# -----------------------------------------------------------------------------
# the whole evaluation and the command


def test_evaluate_reports_every_figure_and_the_corpus_reference(tokenizer, dataset):
    config = EvalConfig(iw_samples=4, num_samples=3, batch_size=4)
    report, means = evaluate(tiny(tokenizer, "bn"), dataset, config)
    lat, text = report["latent"], report["text"]
    assert lat["examples"] == len(dataset["test"]) and means.shape == (len(dataset["test"]), 8)
    assert lat["iw_estimator"] == "IW-NLL (K=4)"
    assert lat["tokens"] == sum(len(ids) + 1 for ids in dataset["test"]["ids"])  # EOS counted, BOS not
    assert lat["elbo_ppl"] == pytest.approx(math.exp(-lat["elbo"] * lat["examples"] / lat["tokens"]))
    assert text["samples"]["count"] == 3 and 0 <= text["reconstruction_bleu"] <= 100
    for pair in text["reconstruction_examples"]:  # an untrained decoder, held to each input's form
        assert form_of(split_lines(pair["decoded"])) == form_of(split_lines(pair["reference"])) is not None
    corpus = text["corpus"]  # the test poems are real regulated verse that the training split contains
    assert corpus["form"] == 1.0 and corpus["copied_texts"] == 1.0 and corpus["rhyme"] == 1.0
    assert report["seed"] == 0 and set(report["seconds"]) == {"latent", "iw_nll", "text"}
    assert report["config"]["precision"] == "auto" and report["precision"] == resolve_precision("auto", "cpu")


def test_form_constrained_prior_samples_are_all_well_formed_and_rhyme(tokenizer, dataset):
    config = EvalConfig(iw_samples=0, num_samples=8, batch_size=4, form="5x4", rhyme="auto")
    report, _ = evaluate(tiny(tokenizer), dataset, config)
    sampled = report["text"]["samples"]
    assert sampled["form"] == 1.0 and sampled["constrained_form"] == "5x4"
    assert sampled["rhyme"] == 1.0  # an untrained model, steered: every judged poem rhymes


@pytest.mark.parametrize("form", ["7x4", "auto"])
def test_meter_steered_prior_samples_follow_the_tonal_pattern(tokenizer, dataset, form):
    config = EvalConfig(iw_samples=0, num_samples=8, batch_size=4, form=form, rhyme="auto", meter=True)
    report, _ = evaluate(tiny(tokenizer), dataset, config)
    sampled = report["text"]["samples"]
    assert sampled["tonal"] == sampled["rhyme"] == sampled["form"] == 1.0
    assert sampled["meter_steering"] is True and {"meter", "rhyme"}.isdisjoint(sampled["relaxed"])
    assert all(follows_tonal_pattern(split_lines(t)) for t in sampled["examples"])
    assert "meter steering on" in format_report(report)


def test_steering_needs_a_poem_form():
    with pytest.raises(TextVAEError, match="give a form"):
        EvalConfig(meter=True)
    with pytest.raises(TextVAEError, match="give a form"):
        EvalConfig(rhyme="auto", form="free")
    with pytest.raises(TextVAEError, match="meter must be true or false"):
        EvalConfig(form="5x4", meter="yes")


def test_evaluate_is_reproducible_under_its_seed(tokenizer, dataset):
    config = EvalConfig(iw_samples=3, num_samples=2, batch_size=4)
    first, _ = evaluate(tiny(tokenizer), dataset, config)
    second, _ = evaluate(tiny(tokenizer), dataset, config)
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_language_model_baseline_reports_its_exact_nll(tokenizer, dataset):
    # fp32: the exact NLL and the reconstruction term batch the rows differently, which bf16 rounds differently
    config = EvalConfig(iw_samples=5, num_samples=2, precision="fp32")
    report, means = evaluate(tiny(tokenizer, "none"), dataset, config)
    lat = report["latent"]
    assert means is None and "mi" not in lat and "reconstruction_bleu" not in report["text"]
    assert "exact" in lat["iw_estimator"] and lat["iw_nll"] == pytest.approx(lat["rec"])
    assert "NLL (exact, no latent)" in format_report(report) and "MI" not in format_report(report)


def test_evaluate_command_prints_a_table_and_writes_eval_json_and_plots(tmp_path, tokenizer, dataset, capsys):
    data.save(dataset, tokenizer, {}, tmp_path / "data")
    tiny(tokenizer).save_pretrained(tmp_path / "run" / "best")
    log = [dict(step=s, split="train", loss=9.0 - s / 10, rec=8.0, kl=1.0, beta=s / 30, lr=1e-3, tokens_per_s=1e3)
           for s in (10, 20, 30)] + [dict(step=30, split="validation", elbo=-9.0, rec=8.0, kl=1.0, ppl=50.0,
                                          active_units=3)]
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"step": 4')
    main(["evaluate", str(tmp_path / "run" / "best"), "--data", str(tmp_path / "data"), "--iw-samples", "3",
          "--num-samples", "3", "--plots", str(tmp_path / "plots")])
    printed = capsys.readouterr().out
    assert "IW-NLL (K=3)" in printed and "rhyme rate" in printed and "active units" in printed
    report = json.loads((tmp_path / "run" / "best" / "eval.json").read_text())
    assert report["split"] == "test" and report["config"]["iw_samples"] == 3
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "active_units.png", "kl_per_dim.png", "latent_projection.png", "training_curves.png"]


def test_evaluate_command_refuses_a_dataset_with_another_tokenizer(tmp_path, tokenizer, dataset, capsys):
    other = Tokenizer.train(POEMS[:6], kind="char", vocab_size=600)
    data.save(dataset, other, {}, tmp_path / "data")
    tiny(tokenizer).save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path / "model"), "--data", str(tmp_path / "data")])
    assert exit_info.value.code == 1 and "another tokenizer" in capsys.readouterr().err


def test_report_keeps_a_space_after_a_long_iw_estimator_label():
    latent = dict(examples=2, tokens=10, rec=9.0, kl=1.0, elbo=-10.0, elbo_ppl=7.4, iw_nll=9.5, iw_ppl=6.7,
                  iw_estimator="IW-NLL (K=10000, flow prior)")
    text = dict(poems=False, strategy="sample", corpus=dict(count=2))
    report = dict(split="test", posterior="gaussian", seed=0, precision="fp32", latent=latent, text=text)
    assert "IW-NLL (K=10000, flow prior) 9.50   IW-PPL 6.70" in format_report(report)
    assert "  IW-NLL (K=4)                9.50" in format_report({**report, "latent": {
        **latent, "iw_estimator": "IW-NLL (K=4)"}})
