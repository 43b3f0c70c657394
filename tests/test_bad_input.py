"""Bad input and faults through the CLI, as a new user meets them: every case exits non-zero with one
line `error: ...` that names the offending value, no traceback, and, where the user's files were at
stake, leaves them byte-identical."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_text import QUICK, TINY, prepare_corpus, train_model

from textvae import data, evaluate, shipped
from textvae.cli import build_parser, main
from textvae.errors import TextVAEError
from textvae.precision import PRECISION_HELP
from textvae.tokenizer import Tokenizer
from textvae.train import TrainConfig
from textvae.vae import VAEConfig

CHARS = "春夏秋冬山水風月花鳥雲雨"


def corpus_lines(n: int = 400) -> list[str]:
    g = torch.Generator().manual_seed(0)
    return sorted({"".join(CHARS[i] for i in torch.randint(0, 12, (int(torch.randint(4, 12, (1,), generator=g)),),
                                                            generator=g)) for _ in range(n)})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_corpus(tmp_path_factory.mktemp("data"), corpus_lines())


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return train_model(data_dir, tmp_path_factory.mktemp("runs"))


def fails(argv: list[str], capsys, *words: str) -> str:
    """Run the CLI; it must exit non-zero with one error line holding every word, and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and len([line for line in err.splitlines() if not line.startswith("warning: ")]) == 1, err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("three years of work\n")
    (path / "notes").mkdir()
    (path / "notes" / "a.md").write_text("keep me\n")
    return snapshot(path)

# --- prepare: data loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", " x"])
def test_prepare_refuses_a_name_that_is_not_one_folder(tmp_path, capsys, name):
    before = user_folder(tmp_path / "out")
    (tmp_path / "c.txt").write_text("\n".join(corpus_lines()))
    fails(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"), "--name", name], capsys,
          f"--name {name!r}")
    assert snapshot(tmp_path / "out") == before


def test_prepare_refuses_an_output_folder_that_holds_the_input(tmp_path, capsys):
    before = user_folder(tmp_path / "mine")
    (tmp_path / "mine" / "c.txt").write_text("\n".join(corpus_lines()))
    before = snapshot(tmp_path / "mine")
    fails(["prepare", "text", str(tmp_path / "mine" / "c.txt"), "--out", str(tmp_path), "--name", "mine",
           "--overwrite"], capsys, "c.txt", "inside the output folder")
    assert snapshot(tmp_path / "mine") == before


def test_prepare_replaces_only_what_textvae_wrote(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("\n".join(corpus_lines()))
    argv = ["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "x", "--tokenizer", "char"]
    before = user_folder(tmp_path / "x")
    fails(argv, capsys, str(tmp_path / "x"), "--overwrite")
    assert snapshot(tmp_path / "x") == before
    main(argv + ["--overwrite"])  # the way out, asked for by name
    assert not (tmp_path / "x" / "thesis.txt").exists() and (tmp_path / "x" / ".textvae-dataset").is_file()
    main(argv)  # a dataset textvae wrote is replaced without asking
    (tmp_path / "x" / ".textvae-dataset").unlink()  # a dataset from before the marker: exactly prepare's files
    main(argv)
    assert (tmp_path / "x" / ".textvae-dataset").is_file()


def test_prepare_refuses_an_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("\n".join(corpus_lines()))
    (tmp_path / "x").write_text("mine\n")
    fails(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "x"], capsys, "is a file")
    assert (tmp_path / "x").read_text() == "mine\n"


def test_prepare_refuses_an_output_folder_under_a_file(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("\n".join(corpus_lines()))
    fails(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path / "c.txt"), "--name", "x"], capsys,
          "c.txt")

# --- prepare: inputs ----------------------------------------------------------------------------------------


def test_prepare_text_refuses_nul_bytes_naming_the_line(tmp_path, capsys):
    (tmp_path / "c.txt").write_bytes("春夏\n秋\x00冬\n".encode())
    fails(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "x"], capsys,
          "c.txt:2", "NUL")
    assert not (tmp_path / "x").exists()


def test_prepare_text_drops_a_huge_line_and_says_so(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("春" * 200_000 + "\n" + "\n".join(corpus_lines()))
    main(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "x", "--tokenizer", "char"])
    assert "1  longer than 10,000 characters" in capsys.readouterr().out


@pytest.mark.parametrize("files,words", [
    ({"c.txt": ["春" * 12_000]}, ["1 line read", "longer than 10,000 characters (1)"]),
    ({"a.txt": ["", "春" * 10_001], "b.txt": ["  ", ""]}, ["4 lines read", "empty line (3)", "characters (1)"]),
])
def test_prepare_names_the_files_that_came_out_empty_and_why(tmp_path, capsys, files, words):
    for name, lines in files.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    paths = [str(tmp_path / name) for name in files]
    fails(["prepare", "text", *paths, "--out", str(tmp_path), "--name", "x"], capsys, ", ".join(paths),
          "nothing left to prepare", *words)
    assert not (tmp_path / "x").exists()


def test_one_line_corpus_warns_of_empty_splits_and_training_refuses_it_before_step_one(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("春夏秋冬\n")
    main(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "one", "--tokenizer", "char"])
    err = capsys.readouterr().err
    assert "warning: the validation split is empty" in err and "warning: the test split is empty" in err
    fails(["train", "--data-dir", str(tmp_path / "one"), "--run-dir", str(tmp_path / "run"), *TINY, *QUICK], capsys,
          "validation split is empty")
    assert not (tmp_path / "run").exists()


def test_a_dataset_whose_tokenizer_was_swapped_is_refused_before_step_one(data_dir, model_dir, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    smaller = Tokenizer.train([CHARS[:2]], kind="char", vocab_size=300)  # 2 of the 12 characters
    smaller.save(copy / "tokenizer.model")
    dataset, _ = data.load(data_dir)
    largest = max(max(ids) for split in dataset.values() for ids in data.token_ids(split))
    assert largest >= smaller.vocab_size  # the embedding lookup of the first step would fail
    words = [str(copy), f"largest id {largest:,}", f"vocabulary of {smaller.vocab_size:,}", "textvae prepare"]
    fails(["train", "--data-dir", str(copy), "--run-dir", str(tmp_path / "run"), *TINY, *QUICK], capsys, *words)
    assert not (tmp_path / "run").exists()
    fails(["evaluate", str(model_dir), "--data", str(copy), "-n", "0"], capsys, *words)


@pytest.mark.parametrize("argv,words", [
    (["--vocab-size", "5"], "--vocab-size"),
    (["--vocab-size", "100000000"], "100000000"),
])
def test_prepare_values(tmp_path, capsys, argv, words):
    (tmp_path / "c.txt").write_text("\n".join(corpus_lines()))
    fails(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "x", *argv], capsys, words)

# --- train: the run folder ----------------------------------------------------------------------------------


def test_train_refuses_a_run_dir_that_is_a_file(data_dir, tmp_path, capsys):
    (tmp_path / "run").write_text("mine\n")
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "run"), *TINY, *QUICK], capsys,
          str(tmp_path / "run"), "is a file")
    assert (tmp_path / "run").read_text() == "mine\n"


def test_train_refuses_a_model_folder_as_run_dir(data_dir, model_dir, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    before = snapshot(copy)
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(copy), *TINY, *QUICK], capsys, str(copy),
          "saved model")
    assert snapshot(copy) == before


def test_train_refuses_a_dataset_folder_or_one_inside_it(data_dir, capsys):
    before = snapshot(data_dir)
    for run_dir in (data_dir, data_dir / "run"):
        fails(["train", "--data-dir", str(data_dir), "--run-dir", str(run_dir), *TINY, *QUICK], capsys,
              str(run_dir), "dataset")
    assert snapshot(data_dir) == before


def test_train_refuses_a_folder_of_other_files(data_dir, tmp_path, capsys):
    before = user_folder(tmp_path / "docs")
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "docs"), *TINY, *QUICK], capsys,
          "not a textvae run")
    assert snapshot(tmp_path / "docs") == before


def test_resume_refuses_another_data_dir(data_dir, model_dir, tmp_path, capsys):
    run = model_dir.parent
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    before = snapshot(run)
    fails(["train", "--resume", "--run-dir", str(run), "--data-dir", str(other), "--max-steps", "8"], capsys,
          str(other), "--resume")
    assert snapshot(run) == before


def test_read_only_run_dir_is_refused_before_any_work(data_dir, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse it as a read-only mount would
        real = __import__("tempfile").TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == run:
                raise PermissionError(13, "Permission denied", str(run))
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK], capsys, str(run),
          "Permission denied")
    assert list(run.iterdir()) == []


def test_batch_norm_with_batch_size_one_is_refused(data_dir, tmp_path, capsys):
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), *TINY, *QUICK, "--posterior", "bn",
           "--batch-size", "1"], capsys, "batch_size 1", "'bn'")


def test_evaluation_with_batch_norm_keeps_the_kl_whatever_the_batch_size(data_dir, tmp_path):
    # evaluation normalises with the running statistics, so one example per batch is scored like 64
    run = tmp_path / "bn"
    main(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK, "--posterior", "bn"])
    model, dataset = evaluate.load(run / "best", data_dir)
    kl = [evaluate.evaluate(model, dataset, evaluate.EvalConfig(split="validation", batch_size=b, iw_samples=0,
                                                                 n=0))[0]["latent"]["kl"] for b in (1, 64)]
    assert kl[0] == pytest.approx(kl[1], rel=1e-5) and kl[0] > 0


def test_transformer_max_len_warns_with_the_count_of_cut_examples(data_dir, tmp_path, capsys):
    dataset, _ = data.load(data_dir)
    too_long = sum(len(t) > 6 for split in ("train", "validation") for t in dataset[split]["text"])  # chars = tokens
    main(["train", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), *TINY, *QUICK,
          "--decoder", "transformer", "--max-len", "8"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    counts = [int(line.split()[1].replace(",", "")) for line in lines if "longer than max_len 8" in line]
    assert sum(counts) == too_long > 0

# --- evaluate -----------------------------------------------------------------------------------------------


def test_evaluate_keeps_the_previous_report(data_dir, model_dir, capsys):
    argv = ["evaluate", str(model_dir), "--data", str(data_dir), "--split", "validation", "--iw-samples", "2",
            "-n", "0"]
    main(argv)
    first = (model_dir / "eval.json").read_bytes()
    main(argv)
    kept = [p for p in model_dir.glob("eval.*.json")]
    assert len(kept) == 1 and kept[0].read_bytes() == first
    assert "the previous report is kept as" in capsys.readouterr().out
    kept[0].unlink()


@pytest.mark.parametrize("argv,words", [
    (["--rhyme", "xyz"], "'xyz'"),
    (["--form", "6x4"], "'6x4'"),
    (["--form", "5x4"], "，"),  # the tiny model has no ，or 。: constrained poems are impossible
    (["--iw-samples", "1000000000000"], "1000000000000"),
    (["-n", "1000000000"], "1000000000"),
    (["--seed", "1000000000000"], "1000000000000"),
    (["--device", "tpu"], "'tpu'"),
    (["--split", "nope"], "'nope'"),
])
def test_evaluate_checks_every_argument_before_the_long_passes(data_dir, model_dir, capsys, monkeypatch, argv, words):
    monkeypatch.setattr(evaluate, "latent_pass", lambda *a, **k: pytest.fail("work started before the checks"))
    fails(["evaluate", str(model_dir), "--data", str(data_dir), *argv], capsys, words)


@pytest.mark.parametrize("flag", ["--out", "--plots"])
def test_evaluate_refuses_outputs_it_cannot_write_before_any_work(data_dir, model_dir, tmp_path, capsys, monkeypatch,
                                                                  flag):
    monkeypatch.setattr(evaluate, "latent_pass", lambda *a, **k: pytest.fail("work started before the checks"))
    (tmp_path / "file").write_text("mine\n")
    target = tmp_path / "file" / "x" if flag == "--out" else tmp_path / "file"
    fails(["evaluate", str(model_dir), "--data", str(data_dir), flag, str(target)], capsys, "file")
    assert (tmp_path / "file").read_text() == "mine\n"

# --- values -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,words", [
    (["--embed-dim", "100000"], "embed_dim"),
    (["--decoder-hidden", "16384", "--decoder-layers", "64"], "parameters"),
    (["--max-len", "10000000"], "max_len"),
    (["--latent-dim", "100000"], "latent_dim"),
    (["--batch-size", "10000000"], "batch_size"),
    (["--seed", "1000000000000"], "1000000000000"),
    (["--device", "tpu"], "'tpu'"),
    *[([flag, "nan"], "nan") for flag in ("--lr", "--weight-decay", "--grad-clip", "--min-lr", "--beta-max",
                                         "--free-bits", "--encoder-dropout", "--decoder-dropout")],
    *[(["--posterior", posterior, flag, "nan"], "nan") for posterior, flag in (("vmf", "--kappa"), ("bn", "--gamma"),
                                                                              ("bn-tau", "--tau"))],
    (["--lr", "inf"], "inf"),
])
def test_train_values(data_dir, tmp_path, capsys, argv, words):
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), *TINY, *QUICK, *argv], capsys,
          words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("verb,argv,words", [
    ("sample", ["-n", "1000000000000"], "1000000000000"),
    ("sample", ["--beam", "1000", "--strategy", "beam"], "1000"),
    ("sample", ["--temperature", "nan"], "nan"),
    ("sample", ["--top-p", "nan"], "nan"),
    ("sample", ["--seed", "1000000000000"], "1000000000000"),
    ("interpolate", ["--steps", "1000000000"], "1000000000"),
    ("vary", ["春夏秋冬", "-n", "1000000000"], "1000000000"),
    ("vary", ["春夏秋冬", "--spread", "-1"], "spread"),
    ("reconstruct", ["春夏秋冬", "-n", "1000000000"], "1000000000"),
])
def test_generation_values(model_dir, capsys, verb, argv, words):
    fails([verb, str(model_dir), *argv], capsys, words)


def test_nan_in_a_saved_config_is_refused(model_dir, tmp_path, capsys):
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["decoder_dropout"] = float("nan")
    (copy / "config.json").write_text(json.dumps(config))
    fails(["sample", str(copy)], capsys, "decoder_dropout", "nan")


def test_config_file_that_is_a_folder_or_not_an_object(tmp_path, capsys):
    fails(["train", "--config", str(tmp_path)], capsys, str(tmp_path), "folder")
    (tmp_path / "c.json").write_text("[1, 2]")
    fails(["train", "--config", str(tmp_path / "c.json")], capsys, "c.json", "JSON object")


def test_argument_that_is_not_utf8(capsys):
    fails(["sample", "data/pretrained", "--acrostic", "\udcff"], capsys, "not valid UTF-8")


def test_invalid_utf8_argument_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "textvae", "reconstruct", "data/pretrained", b"\xff\xfe"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: the argument") and "not valid UTF-8" in result.stderr


def test_argparse_errors_are_one_line(capsys):
    fails(["train", "--max-steps", "many"], capsys, "'many'", "textvae train --help")

# --- files written ------------------------------------------------------------------------------------------


def test_written_files_respect_the_umask(data_dir, tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "c.txt").write_text("\n".join(corpus_lines()))
        main(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path), "--name", "d", "--tokenizer", "char"])
        main(["train", "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "r"), *TINY, *QUICK])
    finally:
        os.umask(old)
    for root in (tmp_path / "d", tmp_path / "r"):
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_every_flag_has_its_whole_help_text():
    parser = build_parser()
    text = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert " ".join(PRECISION_HELP.split()[-4:]) in " ".join(text.split())
    for verb in ("train", "evaluate", "sample"):
        actions = parser._subparsers._group_actions[0].choices[verb]._actions
        assert all(a.help and not a.help.startswith(" (default") for a in actions), verb

# --- found while probing ------------------------------------------------------------------------------------


def test_errors_found_after_the_run_config_would_have_been_written_leave_no_run(data_dir, tmp_path, capsys,
                                                                                monkeypatch):
    run = tmp_path / "r"
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK, "--batch-size", "5000"],
          capsys, "5000")
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK, "--tensorboard"], capsys,
          "pip install tensorboard")
    assert not run.exists()


def test_resume_of_a_folder_without_a_run(tmp_path, capsys):
    fails(["train", "--resume", "--run-dir", str(tmp_path / "nowhere")], capsys, str(tmp_path / "nowhere"),
          "no run")


def test_reconstruct_from_empty_standard_input(model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("\n  \n"))
    fails(["reconstruct", str(model_dir), "-"], capsys, "standard input")


@pytest.mark.parametrize("content,words", [('{"vocab_size": 273, "colour": 1}', "colour"), ("[1]", "no JSON object"),
                                           ("{", "corrupt")])
def test_a_damaged_model_config_names_the_file(model_dir, tmp_path, capsys, content, words):
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    (copy / "config.json").write_text(content)
    fails(["sample", str(copy)], capsys, str(copy / "config.json"), words)


@pytest.mark.parametrize("edit,words", [
    ({"encoder": "gcnn"}, ["missing from the weights: encoder.", "not in config.json's model: encoder.rnn."]),
    ({"encoder_hidden": 24}, [f"encoder.rnn.weight_ih_l0 [{3 * 16}, 16] vs [{3 * 24}, 16]"]),  # a GRU's 3 gates
])
def test_a_config_that_does_not_describe_the_weights_is_not_called_corrupt(model_dir, tmp_path, capsys, edit, words):
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())  # it records the checksums of the other files only
    (copy / "config.json").write_text(json.dumps(config | edit))
    error = fails(["sample", str(copy)], capsys, str(copy), "config.json and model.safetensors describe different "
                  "models", "restore the config.json", *words)
    assert "corrupt" not in error


def test_weights_safetensors_cannot_read_are_corrupt(model_dir, tmp_path, capsys):
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    config = json.loads((copy / "config.json").read_text())
    config["checksums"]["model.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # past that check
    (copy / "config.json").write_text(json.dumps(config))
    fails(["sample", str(copy)], capsys, f"{weights} is corrupt", "Copy the whole model folder again")


@pytest.mark.parametrize("section,field,value,owner", [("train", "lr", float("nan"), "TrainConfig"),
                                                       ("train", "max_steps", True, "TrainConfig"),
                                                       ("model", "gamma", float("inf"), "BNSettings"),
                                                       ("model", "latent_dim", 2.5, "VAEConfig"),
                                                       ("train", "seed", 2**40, "TrainConfig"),
                                                       ("model", "embed_dim", 10**6, "VAEConfig")])
def test_config_files_and_the_python_api_get_the_same_checks(tmp_path, capsys, section, field, value, owner):
    build = {"model": lambda fields: VAEConfig.from_dict({"posterior": "bn", **fields}),  # the default preset's
             "train": lambda fields: TrainConfig(**fields)}[section]
    with pytest.raises(TextVAEError, match=f"{owner}.{field} must be"):
        build({field: value})
    (tmp_path / "run.json").write_text(json.dumps({section: {field: value}}))
    fails(["train", "--config", str(tmp_path / "run.json")], capsys, f"{owner}.{field}", repr(value))


def test_a_fresh_start_refuses_a_run_whose_checkpoint_swap_was_cut(data_dir, tmp_path, capsys):
    run = tmp_path / "r"
    main(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK])
    (run / "last").rename(run / ".last-old-4242")  # killed between the swap's two renames
    capsys.readouterr()
    fails(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK], capsys, "already holds a run")
    assert (run / "last" / "trainer_state.pt").is_file()


def test_resume_survives_a_metrics_line_torn_by_a_kill(data_dir, tmp_path, capsys):
    run = tmp_path / "r"
    main(["train", "--data-dir", str(data_dir), "--run-dir", str(run), *TINY, *QUICK])
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 5, "split": "tr')
    main(["train", "--resume", "--run-dir", str(run), "--max-steps", "8"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 8


@pytest.mark.parametrize("verb", ["sample", "reconstruct", "interpolate", "vary", "evaluate"])
def test_shipped_models_load_by_short_name_unless_a_folder_has_that_name(verb, tmp_path, monkeypatch):
    rest = {"reconstruct": ["x"], "vary": ["x"]}.get(verb, [])
    parse = lambda name: build_parser().parse_args([verb, name, *rest]).model_dir  # noqa: E731
    monkeypatch.chdir(tmp_path)
    assert (parse("poem"), parse("faithful")) == (shipped.REPOSITORY / "data" / "pretrained",
                                                  shipped.REPOSITORY / "data" / "faithful")
    (tmp_path / "poem").mkdir()
    assert parse("poem") == Path("poem") and parse("runs/x") == Path("runs/x")


def test_short_names_work_from_any_folder_in_the_cli_the_studio_s_list_and_from_pretrained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build_parser().parse_args(["sample"]).model_dir == shipped.REPOSITORY / "data" / "pretrained"
    assert list(build_parser().parse_args(["serve", "poem", "faithful"]).models) == list(shipped.shipped_dirs().values())
    from textvae.cli import _served_models
    assert list(_served_models(list(shipped.shipped_dirs().values()))) == ["poem", "faithful"]
    from textvae.vae import TextVAE
    assert TextVAE.from_pretrained("faithful").config.latent_dim == 256


def test_a_short_name_outside_a_clone_says_where_the_model_lives(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shipped, "REPOSITORY", tmp_path / "site-packages")
    with pytest.raises(SystemExit):
        main(["sample", "poem"])
    assert "the shipped model 'poem' is not installed: it lives in data/pretrained of a textvae clone" in \
        capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"textvae {shipped_version()}"


def shipped_version() -> str:
    import tomllib
    return tomllib.loads((shipped.REPOSITORY / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("name", ["poem", "faithful"])
def test_evaluate_never_writes_into_a_shipped_model_folder(name, tmp_path, monkeypatch):
    from textvae.cli import _report_path
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["evaluate", name])
    assert _report_path(args) == Path(f"eval-{name}.json")
    args = build_parser().parse_args(["evaluate", str(shipped.shipped_dirs()[name]), "--out", "x.json"])
    assert _report_path(args) == Path("x.json")
    (tmp_path / "run").mkdir()
    assert _report_path(build_parser().parse_args(["evaluate", "run"])) == Path("run") / "eval.json"
