"""Reliability: saved files are checked against their checksums, a model is never paired with another
tokenizer, simplified and traditional input read alike, and seeded sampling repeats across processes."""

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import opencc
import pytest
import safetensors.torch
import torch

from textvae import data, generate, poetry, priors
from textvae.cli import main
from textvae.data import pad_batch
from textvae.errors import TextVAEError
from textvae.poetry import Verse, split_lines
from textvae.tokenizer import Tokenizer
from textvae.train import TrainConfig, train
from textvae.vae import TextVAE, VAEConfig

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED = ROOT / "data" / "pretrained"
TINY = dict(embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=4, max_len=40)
QUIET_NIGHT = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"  # 靜夜思, as the shipped model's corpus writes it
QUIET_NIGHT_SIMPLIFIED = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


def tiny_model(chars: str) -> TextVAE:
    """A tiny untrained model whose char tokenizer knows exactly `chars`."""
    tokenizer = Tokenizer.train([chars], kind="char", vocab_size=300)
    torch.manual_seed(0)
    return TextVAE(VAEConfig(vocab_size=tokenizer.vocab_size, **TINY), tokenizer).eval()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_dataset(chars: str, out: Path) -> Path:
    """300 pseudo-sentences over the 12 `chars`, prepared into `out` (replacing what is there)."""
    g = torch.Generator().manual_seed(0)
    texts = {"".join(chars[i] for i in torch.randint(0, 12, (int(torch.randint(4, 12, (1,), generator=g)),),
                                                     generator=g)) for _ in range(300)}
    dataset, tokenizer = data.build([dict(text=t) for t in sorted(texts)], kind="char", vocab_size=300)
    data.save(dataset, tokenizer, {}, out)
    return out

# --- checksums ---------------------------------------------------------------------------------------------


def test_saving_records_the_sha256_of_the_weights_and_the_tokenizer(tmp_path):
    model = tiny_model("春夏秋冬")
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    files = ("model.safetensors", "tokenizer.model")
    assert saved["checksums"] == {name: sha256(tmp_path / "m" / name) for name in files}
    assert TextVAE.from_pretrained(tmp_path / "m").config == model.config  # the key is not a config field


def test_a_bit_flip_in_the_weights_is_refused(tmp_path):
    tiny_model("春夏秋冬").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x10  # a bit of the last tensor's data, past the header: the file still parses
    weights.write_bytes(bytes(raw))
    safetensors.torch.load_file(weights)  # safetensors alone would accept it
    with pytest.raises(TextVAEError, match=r"model\.safetensors does not match the checksum recorded when the "
                                           r"model was saved: it is corrupt, or was copied from another model"):
        TextVAE.from_pretrained(tmp_path / "m")


def test_a_tokenizer_copied_from_another_model_of_the_same_size_is_refused(tmp_path):
    model, other = tiny_model("春夏秋冬山水風月"), tiny_model("東南西北天地日星")
    assert model.tokenizer.vocab_size == other.tokenizer.vocab_size  # the vocabulary-size check cannot tell
    model.save_pretrained(tmp_path / "m")
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "m" / "tokenizer.model").write_bytes((tmp_path / "other" / "tokenizer.model").read_bytes())
    with pytest.raises(TextVAEError, match=r"tokenizer\.model does not match the checksum"):
        generate.load_model(tmp_path / "m")


def test_a_model_saved_before_checksums_loads_with_a_warning(tmp_path):
    model = tiny_model("春夏秋冬")
    model.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "checksums"}))
    with pytest.warns(UserWarning, match="model.safetensors and tokenizer.model could not be verified"):
        loaded = TextVAE.from_pretrained(tmp_path / "m")
    ids, mask = pad_batch([model.tokenizer.encode("春夏秋冬")])
    z = model.encode(ids, mask).mean
    torch.testing.assert_close(loaded.decoder(z, ids), model.decoder(z, ids), rtol=0, atol=0)


def test_the_shipped_model_is_verified():
    assert set(json.loads((PRETRAINED / "config.json").read_text())["checksums"]) == {
        "model.safetensors", "tokenizer.model", *priors.files("gmm"), *priors.files("flow")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "could not be verified" would fail here
        generate.load_model(PRETRAINED)


def test_resume_refuses_a_dataset_prepared_again_with_another_tokenizer(tmp_path):
    data_dir = tiny_dataset("春夏秋冬山水風月花鳥雲雨", tmp_path / "tiny")
    run_dir = tmp_path / "run"
    settings = dict(data_dir=str(data_dir), run_dir=str(run_dir), batch_size=8, eval_every=5, warmup_steps=1)
    train(VAEConfig(**TINY), TrainConfig(max_steps=5, **settings))
    vocab_size = Tokenizer.load(data_dir / "tokenizer.model").vocab_size
    tiny_dataset("東南西北天地日星江河草木", data_dir)  # the same folder, now with other characters
    assert Tokenizer.load(data_dir / "tokenizer.model").vocab_size == vocab_size
    with pytest.raises(TextVAEError, match=f"{run_dir / 'last'} was trained with another tokenizer than "
                                           f"{data_dir}'s: the token ids would mean other characters"):
        train(VAEConfig(**TINY), TrainConfig(max_steps=10, **settings), resume=True)

# --- simplified and traditional characters -----------------------------------------------------------------


@pytest.mark.parametrize("chars,script", [("床前明月光疑是地上霜舉頭望低思故鄉", "traditional"),
                                          ("床前明月光疑是地上霜举头望低思故乡", "simplified"),
                                          ("the moon before my bed", None)])
def test_the_model_script_is_read_off_the_vocabulary(chars, script):
    assert poetry.model_script(tiny_model(chars).tokenizer) == script


def test_a_stray_simplified_character_in_a_traditional_text_is_converted_where_the_vocabulary_has_it():
    tokenizer = tiny_model("床前明月光疑是地上霜舉頭望低思故鄉").tokenizer
    # mostly traditional, so read as typed, but 举 is outside the vocabulary and its traditional 舉 is in it;
    # 书's traditional form 書 is not in it either, so it stays
    assert poetry.to_model_script(tokenizer, "舉頭望明月举书") == "舉頭望明月舉书"
    assert poetry.to_model_script(tokenizer, QUIET_NIGHT_SIMPLIFIED) == QUIET_NIGHT


@pytest.mark.parametrize("form", ["free", "auto", "5x4"])
def test_simplified_input_reconstructs_as_the_traditional(form):
    model = generate.load_model(PRETRAINED)
    constraint = generate.constraint_for(model.tokenizer, form)
    traditional, simplified = generate.reconstruct(model, [QUIET_NIGHT, QUIET_NIGHT_SIMPLIFIED], constraint=constraint)
    assert simplified == traditional


def test_a_simplified_acrostic_pins_the_traditional_characters():
    model = generate.load_model(PRETRAINED)
    poem = generate.sample(model, 1, constraint=Verse(model.tokenizer, "5x4", acrostic="举头望乡"), seed=0)[0]
    assert [line[0] for line in split_lines(poem)] == list("舉頭望鄉")


def test_script_simplified_writes_the_same_poems_in_simplified_characters(capsys):
    to_simplified = opencc.OpenCC("t2s").convert
    argv = ["sample", str(PRETRAINED), "-n", "4", "--form", "5x4", "--seed", "0"]
    main(argv)
    native = capsys.readouterr().out.splitlines()
    main(argv + ["--script", "simplified"])
    simplified = capsys.readouterr().out.splitlines()
    assert any(to_simplified(poem) != poem for poem in native)  # the model writes traditional characters
    assert simplified == [to_simplified(poem) for poem in native]
    assert all(to_simplified(poem) == poem for poem in simplified)
    with pytest.raises(TextVAEError, match="script must be simplified or traditional .*, not 'kanji'"):
        generate.sample(generate.load_model(PRETRAINED), 1, script="kanji")

# --- reproducibility ---------------------------------------------------------------------------------------


def test_seeded_sampling_is_identical_in_two_parallel_processes():
    command = [sys.executable, "-m", "textvae", "sample", str(PRETRAINED), "-n", "3", "--seed", "7"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    (out_a, err_a), (out_b, err_b) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], err_a + err_b
    assert len(out_a.splitlines()) == 3 and out_a == out_b
