import json
import math

import pytest
from datasets import Dataset, DatasetDict

from textvae import data
from textvae.cli import _flags_set, build_parser, main
from textvae.errors import TextVAEError
from textvae.evaluate import EvalConfig, evaluate
from textvae.poetry import follows_tonal_pattern, form_of, split_lines
from textvae.precision import resolve_precision
from textvae.report import format_report
from textvae.tokenizer import Tokenizer
from tiny_poems import POEMS, tiny



@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(POEMS, kind="char", vocab_size=600)


@pytest.fixture(scope="module")
def dataset(tokenizer):
    records = [dict(text=t, lines=split_lines(t), form=form_of(split_lines(t)), dynasty=("tang", "song")[i % 2],
                    ids=tokenizer.encode(t)) for i, t in enumerate(POEMS)]
    return DatasetDict(train=Dataset.from_list(records), validation=Dataset.from_list(records[:2]),
                       test=Dataset.from_list(records[1::2]))



# -----------------------------------------------------------------------------
# the whole evaluation and the command


def test_evaluate_reports_every_figure_and_the_corpus_reference(tokenizer, dataset):
    config = EvalConfig(iw_samples=4, n=3, batch_size=4)
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
    config = EvalConfig(iw_samples=0, n=8, batch_size=4, form="5x4", rhyme=True)
    report, _ = evaluate(tiny(tokenizer), dataset, config)
    sampled = report["text"]["samples"]
    assert sampled["form"] == 1.0 and sampled["constrained_form"] == "5x4" and sampled["rhyme_steering"] == "auto"
    assert sampled["rhyme"] == 1.0  # an untrained model, steered: every judged poem rhymes


@pytest.mark.parametrize("form", ["7x4", "auto"])
def test_meter_steered_prior_samples_follow_the_tonal_pattern(tokenizer, dataset, form):
    config = EvalConfig(iw_samples=0, n=8, batch_size=4, form=form, rhyme="auto", meter=True)
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
    with pytest.raises(TextVAEError, match="rhyme takes True, False, or a group"):
        EvalConfig(form="5x4", rhyme=3)


@pytest.mark.parametrize("argv, n, rhyme", [
    (["-n", "5", "--rhyme"], 5, True), (["--rhyme", "陽", "-n", "0"], 0, "陽"), ([], EvalConfig.n, False)])
def test_evaluate_flags_spell_n_and_rhyme_as_sample_does(argv, n, rhyme):
    args = build_parser().parse_args(["evaluate", "run", "--form", "5x4", *argv])
    config = EvalConfig(**_flags_set(args, EvalConfig))
    assert (config.n, config.rhyme) == (n, rhyme)


def test_evaluate_is_reproducible_under_its_seed(tokenizer, dataset):
    config = EvalConfig(iw_samples=3, n=2, batch_size=4)
    first, _ = evaluate(tiny(tokenizer), dataset, config)
    second, _ = evaluate(tiny(tokenizer), dataset, config)
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_language_model_baseline_reports_its_exact_nll(tokenizer, dataset):
    # fp32: the exact NLL and the reconstruction term batch the rows differently, which bf16 rounds differently
    config = EvalConfig(iw_samples=5, n=2, precision="fp32")
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
          "-n", "3", "--plots", str(tmp_path / "plots")])
    printed = capsys.readouterr().out
    assert "IW-NLL (K=3)" in printed and "rhyme rate" in printed and "active units" in printed
    report = json.loads((tmp_path / "run" / "best" / "eval.json").read_text())
    assert report["split"] == "test" and report["config"]["iw_samples"] == 3
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "active_units.png", "kl_per_dim.png", "latent_projection.png", "training_curves.png"]


def test_evaluate_command_refuses_a_dataset_with_another_tokenizer(tmp_path, tokenizer, dataset, capsys):
    other = Tokenizer.train(POEMS[:6], kind="char", vocab_size=600)
    data.save(dataset.map(lambda row: dict(ids=other.encode(row["text"]))), other, {}, tmp_path / "data")
    tiny(tokenizer).save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path / "model"), "--data", str(tmp_path / "data")])
    assert exit_info.value.code == 1 and "another tokenizer" in capsys.readouterr().err
