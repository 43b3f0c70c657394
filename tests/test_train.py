import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from textvae import data, presets, train as train_module
from textvae.atomic import atomic_directory, recover
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.evaluate import EvalConfig, evaluate
from textvae.latent_stats import validation_figures
from textvae.metrics import mutual_information
from textvae.train import (TrainConfig, check_compatible, kl_weight, lr_at, regularised_kl, start_encoder_from,
                           start_weights_from,
                           train)
from textvae.presets import DEFAULT, PRESETS
from textvae.vae import TextVAE, VAEConfig

TINY_MODEL = dict(embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=4, max_len=40)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny prepared dataset: 300 short pseudo-sentences over 12 characters, char tokenizer."""
    g = torch.Generator().manual_seed(0)
    chars = "春夏秋冬山水風月花鳥雲雨"
    texts = sorted({"".join(chars[i] for i in torch.randint(0, 12, (int(torch.randint(4, 12, (1,), generator=g)),),
                                                             generator=g)) for _ in range(300)})
    dataset, tokenizer = data.build([dict(text=t) for t in texts], kind="char", vocab_size=300)
    out = tmp_path_factory.mktemp("data") / "tiny"
    data.save(dataset, tokenizer, {}, out)
    return out


def tiny_configs(data_dir, run_dir, model=None, **train_overrides):
    training = dict(data_dir=str(data_dir), run_dir=str(run_dir), max_steps=20, batch_size=8, eval_every=5,
                    log_every=1, warmup_steps=3, kl_warmup_steps=10, eval_examples=0, lr=3e-3)
    return VAEConfig.from_dict({**TINY_MODEL, **(model or {})}), TrainConfig(**{**training, **train_overrides})


def train_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]

# --- schedules ---------------------------------------------------------------------------------------------


def test_constant_and_linear_schedules():
    c = TrainConfig(kl_schedule="constant", beta_max=0.7)
    assert [kl_weight(s, c) for s in (0, 10, 10_000)] == [0.7, 0.7, 0.7]
    c = TrainConfig(kl_schedule="linear", kl_warmup_steps=100)
    assert [kl_weight(s, c) for s in (0, 25, 50, 100, 500)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_sigmoid_schedule_is_monotone_and_centred():
    c = TrainConfig(kl_schedule="sigmoid", kl_warmup_steps=1000)
    values = [kl_weight(s, c) for s in range(0, 1001, 50)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert kl_weight(500, c) == pytest.approx(0.5)
    assert kl_weight(0, c) < 0.01 and kl_weight(1000, c) > 0.99


def test_cyclical_schedule_follows_fu_et_al():
    # M = 4 cycles of 250 steps; β rises linearly over the first R = 0.5 of each, then holds at 1
    c = TrainConfig(kl_schedule="cyclical", max_steps=1000, kl_cycles=4, kl_ratio=0.5)
    expected = {0: 0.0, 62: 62 / 125, 125: 1.0, 200: 1.0, 249: 1.0, 250: 0.0, 375: 1.0, 500: 0.0, 999: 1.0}
    for step, beta in expected.items():
        assert kl_weight(step, c) == pytest.approx(beta), step


def test_learning_rate_warms_up_then_decays_by_cosine():
    c = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, c) == pytest.approx(1e-4)
    assert lr_at(9, c) == pytest.approx(1e-3)
    assert lr_at(60, c) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(110, c) == pytest.approx(1e-4)

# --- free bits ---------------------------------------------------------------------------------------------


def test_free_bits_per_sentence_and_per_dimension():
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=300, **TINY_MODEL)).eval()
    ids, mask = data.pad_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13]])
    out, prior = model(ids, mask), model.prior(3)
    big = TrainConfig(free_bits=100.0)
    assert regularised_kl(out, prior, big).tolist() == [100.0] * 3
    assert torch.equal(regularised_kl(out, prior, TrainConfig()), out.kl)
    lam = 0.05
    q = out.q.base_dist
    per_dim = (0.5 * (q.loc**2 + q.scale**2 - 2 * q.scale.log() - 1)).mean(0)  # (D,) batch mean
    expected = torch.maximum(per_dim, torch.tensor(lam)).sum()
    got = regularised_kl(out, prior, TrainConfig(free_bits=lam, free_bits_mode="dimension"))
    torch.testing.assert_close(got, expected.expand(3), rtol=1e-5, atol=1e-6)


def test_free_bits_gradient_vanishes_below_the_floor():
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=300, **TINY_MODEL)).eval()
    ids, mask = data.pad_batch([[5, 6, 7]])
    out = model(ids, mask)
    regularised_kl(out, model.prior(1), TrainConfig(free_bits=out.kl.item() + 1)).sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.head.parameters())

def test_target_rate_pulls_the_batch_mean_kl_towards_c():
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=300, **TINY_MODEL)).eval()
    ids, mask = data.pad_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13]])
    out, prior = model(ids, mask), model.prior(3)
    mean_kl = out.kl.mean().item()
    for target, sign in ((mean_kl + 5, -1.0), (mean_kl / 2, 1.0)):
        term = regularised_kl(out, prior, TrainConfig(target_kl=target))
        torch.testing.assert_close(term, torch.full((3,), abs(mean_kl - target)))
        (kl_grad,) = torch.autograd.grad(term.mean(), out.kl, retain_graph=True)
        torch.testing.assert_close(kl_grad, torch.full((3,), sign / 3))  # d|KL̄ − C|/dKL_i = sign(KL̄ − C)/B


def test_target_rate_needs_a_latent_and_excludes_free_bits():
    with pytest.raises(TextVAEError, match="target_kl needs a latent"):
        check_compatible(VAEConfig(posterior="none"), TrainConfig(target_kl=50))
    with pytest.raises(TextVAEError, match="use one of them"):
        check_compatible(VAEConfig(), TrainConfig(target_kl=50, free_bits=3))

# --- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,field", [(dict(batch_size=-1), "batch_size"), (dict(lr=0.0), "lr"),
                                       (dict(kl_schedule="cosine"), "kl_schedule"), (dict(kl_ratio=0.0), "kl_ratio"),
                                       (dict(free_bits_mode="token"), "free_bits_mode"), (dict(max_steps=0), "max_steps"),
                                       (dict(precision="fp16"), "precision")])
def test_invalid_train_config_names_the_field(bad, field):
    with pytest.raises(TextVAEError, match=field):
        TrainConfig(**bad)


def test_free_bits_per_dimension_is_refused_for_vmf():
    with pytest.raises(TextVAEError, match="free_bits_mode"):
        check_compatible(VAEConfig(posterior="vmf"), TrainConfig(free_bits=0.5, free_bits_mode="dimension"))


@pytest.mark.parametrize("argv,words", [(["--preset", "poem-huge"], "invalid choice"),
                                        (["--kappa", "0", "--posterior", "vmf"], "kappa"),
                                        (["--latent-dim", "-3"], "latent_dim"),
                                        (["--batch-size", "0"], "batch_size"),
                                        (["--posterior", "vmf", "--free-bits", "1", "--free-bits-mode", "dimension"],
                                         "free_bits_mode")])
def test_cli_rejects_bad_configuration_before_any_work(tmp_path, capsys, argv, words):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data-dir", str(tmp_path / "missing"), "--run-dir", str(run_dir), *argv])
    assert exit_info.value.code != 0
    assert words in capsys.readouterr().err
    assert not run_dir.exists()


def test_poem_preset_is_poem_base_with_the_adaptive_output_layer_and_a_faster_schedule():
    from textvae.cli import build_parser, train_configs
    base, fast = (train_configs(build_parser().parse_args(["train", "--preset", p])) for p in ("poem-base", "poem"))
    assert fast[0] == dataclasses.replace(base[0], output_layer="adaptive", output_layer_settings=None)
    assert base[0].output_layer == "full"
    assert dataclasses.replace(fast[1], run_dir=base[1].run_dir, lr=base[1].lr, warmup_steps=base[1].warmup_steps) == base[1]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_a_valid_compatible_configuration(preset):
    from textvae.cli import build_parser, train_configs
    model, config = train_configs(build_parser().parse_args(["train", "--preset", preset]))
    check_compatible(model, config)  # the constructors validated each field
    # each preset has its same-budget LM baseline: no latent, and no rate control (free bits, a KL target)
    no_rate = ["--posterior", "none", "--free-bits", "0", "--target-kl", "0"]
    lm = train_configs(build_parser().parse_args(["train", "--preset", preset, *no_rate]))
    check_compatible(*lm)
    assert not lm[0].has_latent and lm[1] == dataclasses.replace(config, free_bits=0.0, target_kl=0.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_reads_back_the_settings_its_file_holds(preset):
    written = json.loads((Path(presets.__file__).parent / f"{preset}.json").read_text())
    assert PRESETS[preset].model == written["model"] and PRESETS[preset].train == written["train"]


def test_cli_reads_adaptive_cutoffs_as_integers():
    from textvae.cli import build_parser, train_configs
    args = build_parser().parse_args(["train", "--output-layer", "adaptive", "--adaptive-cutoffs", "500,2000"])
    assert train_configs(args)[0].output_layer_settings.adaptive_cutoffs == (500, 2000)


def test_cli_config_file_and_flags_override_the_preset(tmp_path):
    from textvae.cli import build_parser, train_configs
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"latent_dim": 16}, "train": {"max_steps": 77, "lr": 0.01}}))
    args = build_parser().parse_args(["train", "--preset", "poem-small", "--config", str(config), "--lr", "0.02"])
    model, training = train_configs(args)
    assert (model.latent_dim, model.decoder_hidden) == (16, 256)  # file, preset
    assert (training.max_steps, training.lr, training.run_dir) == (77, 0.02, "runs/poem-small")
    config.write_text(json.dumps({"model": {"latent": 16}}))
    with pytest.raises(TextVAEError, match="latent"):
        train_configs(build_parser().parse_args(["train", "--config", str(config)]))
    config.write_text(json.dumps({"model": {"posterior": "gaussian", "gamma": 0.9}}))
    with pytest.raises(TextVAEError, match="gamma is a setting of the bn posterior"):
        train_configs(build_parser().parse_args(["train", "--config", str(config)]))
    config.write_text(json.dumps({"model": {"posterior": "vmf"}}))  # the preset's gamma does not follow bn out
    model, _ = train_configs(build_parser().parse_args(["train", "--preset", "poem", "--config", str(config)]))
    assert model.posterior == "vmf" and "gamma" not in model.to_dict()


def test_bare_train_is_the_default_preset():
    from textvae.cli import build_parser, train_configs
    bare = train_configs(build_parser().parse_args(["train"]))
    assert bare == train_configs(build_parser().parse_args(["train", "--preset", DEFAULT]))
    assert bare[0].posterior == "bn" and bare[1].run_dir == f"runs/{DEFAULT}"


def test_list_presets_prints_each_name_and_description(capsys):
    main(["train", "--list-presets"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(PRESETS)
    assert all(PRESETS[line.split()[0]].description in line for line in lines)
    assert sum("(the default)" in line for line in lines) == 1


@pytest.mark.parametrize("argv", [["--posterior", "gaussian", "--gamma", "0.9"], ["--kernel-size", "5"],
                                  ["--decoder", "transformer", "--segment-marks", "，。"]])
def test_a_flag_for_another_kind_exits_2_with_one_line(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--run-dir", str(tmp_path / "run"), *argv])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and argv[-2].lstrip("-").replace("-", "_") in error
    assert not (tmp_path / "run").exists()

# --- the loop ----------------------------------------------------------------------------------------------


def test_training_writes_run_config_metrics_and_checkpoints(data_dir, tmp_path):
    model_config, c = tiny_configs(data_dir, tmp_path / "run")
    figures = train(model_config, c)
    run = tmp_path / "run"
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["train"] == dataclasses.asdict(c) and saved["model"]["latent_dim"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "validation"] == [5, 10, 15, 20]
    seconds = [r["train_seconds"] for r in records if r["split"] == "validation"]
    assert 0 < seconds[0] and seconds == sorted(seconds)  # training time so far, validation left out
    assert {"elbo", "rec", "kl", "ppl", "active_units"} <= set(figures)
    assert math.isclose(figures["elbo"], -(figures["rec"] + figures["kl"]), rel_tol=1e-9)
    best = TextVAE.from_pretrained(run / "best")
    assert best.config.vocab_size == best.tokenizer.vocab_size
    assert (run / "last" / "trainer_state.pt").is_file()
    with pytest.raises(TextVAEError, match="--resume"):
        train(model_config, c)


def test_training_lowers_the_validation_loss(data_dir, tmp_path):
    model_config, c = tiny_configs(data_dir, tmp_path / "run", max_steps=60, eval_every=30)
    dataset, tokenizer = data.load(data_dir)
    valid = data.token_ids(dataset["validation"])
    torch.manual_seed(c.seed)
    untrained = TextVAE(dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size))
    before = validation_figures(untrained, valid)
    after = train(model_config, c)
    assert after["elbo"] > before["elbo"] + 5  # nats per sentence


def test_validation_mutual_information_is_the_whole_set_estimate(data_dir, tmp_path):
    model_config, _ = tiny_configs(data_dir, tmp_path / "run")
    dataset, tokenizer = data.load(data_dir)
    valid = data.token_ids(dataset["validation"])
    torch.manual_seed(0)
    model = TextVAE(dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size)).eval()
    figures = validation_figures(model, valid, batch_size=4, seed=3)
    torch.manual_seed(3)  # the same draws, in the same order, as evaluate makes them
    with torch.no_grad():
        outs = [model(*data.pad_batch(valid[i:i + 4], model_config.max_len)) for i in range(0, len(valid), 4)]
    z = torch.cat([o.z for o in outs])  # (N, D)
    log_q = torch.cat([o.q.log_prob(z[:, None, :]) for o in outs], dim=1)  # (N, N): [n, m] = log q(z_n|x_m)
    assert figures["mi"] == pytest.approx(mutual_information(log_q), abs=1e-4)
    assert 0 <= figures["mi"] <= math.log(len(valid)) + 1e-9


def test_logged_validation_figures_are_the_evaluation_reports(data_dir, tmp_path):
    """Training validates with the evaluation core: its last record equals `evaluate`'s report on the saved
    weights, the same split and the same seed (the report's extra decoder-reliance pass draws nothing)."""
    model_config, c = tiny_configs(data_dir, tmp_path / "run", max_steps=10, eval_every=10)
    train(model_config, c)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert logged["split"] == "validation" and logged["step"] == 10
    dataset, _ = data.load(data_dir)
    config = EvalConfig(split="validation", batch_size=256, seed=c.seed, precision=c.precision, iw_samples=0,
                        n=0)
    lat = evaluate(TextVAE.from_pretrained(tmp_path / "run" / "last"), dataset, config)[0]["latent"]
    expected = dict(elbo=lat["elbo"], rec=lat["rec"], kl=lat["kl"], ppl=lat["elbo_ppl"],
                    active_units=lat["active_units"], mi=lat["mi"])
    assert {k: logged[k] for k in expected} == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert lat["decoder_reliance"] is not None  # the report has what validation skips


def test_resume_continues_exactly(data_dir, tmp_path, monkeypatch):
    model_config, straight = tiny_configs(data_dir, tmp_path / "straight")
    train(model_config, straight)
    real_save = train_module.save_checkpoint

    def save_then_crash(run_dir, model, state):
        real_save(run_dir, model, state)
        if state["step"] == 10:
            raise KeyboardInterrupt("crash right after the step-10 checkpoint")

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    _, interrupted = tiny_configs(data_dir, tmp_path / "halves")
    with pytest.raises(KeyboardInterrupt):
        train(model_config, interrupted)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    train(model_config, interrupted, resume=True)
    assert train_losses(tmp_path / "halves") == train_losses(tmp_path / "straight")
    records = [json.loads(line) for line in (tmp_path / "halves" / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["train_seconds"] for r in records if r["split"] == "validation"]
    assert len(seconds) == 4 and seconds == sorted(seconds)  # the resumed run counts on from the checkpoint
    a = TextVAE.from_pretrained(tmp_path / "straight" / "last").state_dict()
    b = TextVAE.from_pretrained(tmp_path / "halves" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _train_command(data_dir, run_dir, *extra):
    return [sys.executable, "-m", "textvae", "train", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            "--max-steps", "20", "--batch-size", "8", "--eval-every", "5", "--log-every", "1", "--warmup-steps", "3",
            "--kl-warmup-steps", "10", "--lr", "0.003", "--embed-dim", "16", "--encoder-hidden", "16",
            "--decoder-hidden", "32", "--latent-dim", "4", "--max-len", "40", "--posterior", "gaussian",
            "--output-layer", "full", *extra]


def test_resume_after_sigkill_matches_an_uninterrupted_run(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_command(data_dir, tmp_path / "straight"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_train_command(data_dir, tmp_path / "killed"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(line)["step"] >= 12 for line in metrics.read_text().splitlines() if line):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(tmp_path / "killed" / "last" / "trainer_state.pt", weights_only=True)
    assert state["step"] in (10, 15), "the kill should land after the step-10 checkpoint and before the end"
    subprocess.run(_train_command(data_dir, tmp_path / "killed", "--resume"), check=True, env=env, capture_output=True)
    assert train_losses(tmp_path / "killed") == train_losses(tmp_path / "straight")


def test_non_finite_losses_are_skipped_then_stop_the_run(data_dir, tmp_path, monkeypatch):
    real_forward = TextVAE.forward
    calls = {"n": 0}

    def flaky_forward(self, ids, mask, sample=True, **options):
        out = real_forward(self, ids, mask, sample, **options)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3 or calls["n"] >= 8:  # one isolated bad step, then a run of them
                return out._replace(rec=out.rec * float("nan"))
        return out

    monkeypatch.setattr(TextVAE, "forward", flaky_forward)
    model_config, c = tiny_configs(data_dir, tmp_path / "run", max_bad_steps=3, eval_every=100)
    with pytest.raises(TextVAEError, match="3 non-finite losses"):
        train(model_config, c)
    saved = TextVAE.from_pretrained(tmp_path / "run" / "last")
    assert all(torch.isfinite(p).all() for p in saved.parameters())
    steps = [s for s, _ in train_losses(tmp_path / "run")]
    assert steps == [1, 2, 4, 5, 6, 7], "the isolated bad step is skipped and not logged"


def test_collapse_warning_is_printed_once(data_dir, tmp_path, monkeypatch, capsys):
    collapsed = dict(elbo=-10.0, rec=10.0, kl=0.01, ppl=5.0, active_units=0)
    monkeypatch.setattr(train_module, "validation_figures", lambda *args, **kwargs: dict(collapsed))
    model_config, c = tiny_configs(data_dir, tmp_path / "run", eval_every=2, collapse_evals=3)
    train(model_config, c)
    err = capsys.readouterr().err
    assert err.count("posterior collapse") == 1
    assert "--free-bits" in err and "--kl-schedule cyclical" in err and "--posterior vmf" in err

# --- checkpoints -------------------------------------------------------------------------------------------


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path):
    target = tmp_path / "last"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_recover_restores_a_swap_cut_between_its_renames(tmp_path):
    target = tmp_path / "last"
    old = tmp_path / ".last-old-1234"
    old.mkdir()
    (old / "weights").write_text("previous")
    recover(target)  # the process died after moving the old checkpoint aside, before the new one landed
    assert (target / "weights").read_text() == "previous"
    (tmp_path / ".last-old-999").mkdir()
    recover(target)  # died after the swap, before deleting the old copy
    assert [p.name for p in tmp_path.iterdir()] == ["last"]

# --- distributed -------------------------------------------------------------------------------------------


def test_two_process_ddp_trains_in_sync_and_resumes(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a free port for each launch, so the second cannot meet the first's socket still closing
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command = _train_command(data_dir, tmp_path / "ddp", "--max-steps", "10")[1:]  # drop the interpreter
    first = subprocess.run(torchrun + command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-8000:]
    resumed = subprocess.run(torchrun + command[:-2] + ["--max-steps", "15", "--resume"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-8000:]  # the ranks' own errors come before the summary
    steps = [s for s, _ in train_losses(tmp_path / "ddp")]
    assert steps == list(range(1, 16)), "only rank 0 logs, once per step"
    state = torch.load(tmp_path / "ddp" / "last" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 15


def test_encoder_from_copies_the_pretrained_encoder_and_head_and_keeps_the_fresh_decoder(data_dir, tmp_path):
    model_config, c = tiny_configs(data_dir, tmp_path / "ae", beta_max=0.0, kl_schedule="constant")
    train(model_config, c)
    donor = TextVAE.from_pretrained(tmp_path / "ae" / "best")
    _, tokenizer = data.load(data_dir)
    torch.manual_seed(1)
    model = TextVAE(dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size), tokenizer)
    fresh_decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    start_encoder_from(model, tmp_path / "ae" / "best", str(data_dir))
    for mine, theirs in ((model.encoder, donor.encoder), (model.head, donor.head)):
        for key, value in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    for key, value in model.decoder.state_dict().items():
        torch.testing.assert_close(value, fresh_decoder[key], rtol=0, atol=0)
    _, follow = tiny_configs(data_dir, tmp_path / "vae", max_steps=5, encoder_from=str(tmp_path / "ae" / "best"))
    assert train(model_config, follow)["kl"] > 0


def test_init_from_copies_every_weight_and_the_run_starts_where_the_donor_ended(data_dir, tmp_path):
    model_config, c = tiny_configs(data_dir, tmp_path / "first")
    train(model_config, c)
    donor = TextVAE.from_pretrained(tmp_path / "first" / "last")
    _, tokenizer = data.load(data_dir)
    torch.manual_seed(1)
    model = TextVAE(dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, decoder_dropout=0.3), tokenizer)
    start_weights_from(model, tmp_path / "first" / "last", str(data_dir))
    mine = model.state_dict()
    assert mine.keys() == donor.state_dict().keys()
    for key, value in donor.state_dict().items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=0)
    # through train(): one step at a vanishing learning rate leaves the donor's weights in the new run's last/
    _, more = tiny_configs(data_dir, tmp_path / "more", max_steps=1, eval_every=1, lr=1e-12, min_lr=0.0,
                           init_from=str(tmp_path / "first" / "last"))
    train(model_config, more)
    continued = TextVAE.from_pretrained(tmp_path / "more" / "last").state_dict()
    for key, value in donor.state_dict().items():
        torch.testing.assert_close(continued[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("option, change, message", [("encoder_from", dict(latent_dim=6), "latent_dim 4 != 6"),
                                                     ("init_from", dict(decoder_hidden=24),
                                                      "another architecture.*decoder_hidden 32 != 24")])
def test_a_donor_model_is_refused_when_mismatched_or_missing(data_dir, tmp_path, option, change, message):
    model_config, c = tiny_configs(data_dir, tmp_path / "donor", max_steps=5)
    train(model_config, c)
    other, follow = tiny_configs(data_dir, tmp_path / "run", model=change, **{option: str(tmp_path / "donor" / "best")})
    with pytest.raises(TextVAEError, match=message):
        train(other, follow)
    assert not (tmp_path / "run").exists()  # refused before the run's first write
    missing = dataclasses.replace(follow, **{option: str(tmp_path / "nothing")})
    with pytest.raises(TextVAEError, match="is not a saved model"):
        train(model_config, missing)


def test_encoder_from_needs_a_latent_and_excludes_init_from():
    follow = TrainConfig(encoder_from="runs/ae/best")
    with pytest.raises(TextVAEError, match="needs a latent"):
        check_compatible(VAEConfig(**{**TINY_MODEL, "posterior": "none"}), follow)
    with pytest.raises(TextVAEError, match="use one of them"):
        check_compatible(VAEConfig(**TINY_MODEL), dataclasses.replace(follow, init_from="runs/vae/last"))


def test_training_with_corruption_records_it(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    model, training = tiny_configs(data_dir, run_dir, max_steps=6, corrupt_drop=0.3, corrupt_shuffle=0.1)
    figures = train(model, training)
    recorded = json.loads((run_dir / "run_config.json").read_text())["train"]
    assert (recorded["corrupt_drop"], recorded["corrupt_substitute"], recorded["corrupt_shuffle"]) == (0.3, 0, 0.1)
    assert math.isfinite(figures["elbo"])


@pytest.mark.parametrize("model, overrides, words", [
    ({}, dict(crossing_weight=1.0), "needs lines"),
    (dict(segment_marks="，。", posterior="vmf"), dict(crossing_weight=1.0), "Gaussian"),
    (dict(posterior="none"), dict(corrupt_drop=0.1), "shape the latent")])
def test_latent_shaping_options_need_what_they_shape(model, overrides, words):
    with pytest.raises(TextVAEError, match=words):
        check_compatible(VAEConfig.from_dict(model), TrainConfig(**overrides))
