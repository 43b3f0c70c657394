"""`textvae prepare`: deterministic splits, the dataset folder it writes, and every bad-input path.

Hermetic except `test_prepare_real_corpus` (marked `corpus`), which downloads chinese-poetry@2.0.1 with npm.
"""

import hashlib
import itertools
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from textvae import data
from textvae.cli import main
from textvae.corpus import npm
from textvae.poetry import FORMS, join_lines, split_lines

COLUMNS = {"text", "lines", "form", "dynasty", "author", "title", "id", "ids"}
POOL = "天地日月星辰山川江河湖海雨雪春夏秋冬花草木石竹松梅菊西南北青白金玉"  # the same in traditional and simplified


def poem(lines, id, author="佚名", title="無題"):
    """An upstream record: one couplet per paragraph."""
    paragraphs = [f"{a}，{b}。" for a, b in zip(lines[::2], lines[1::2])]
    return dict(author=author, paragraphs=paragraphs, title=title, id=id)


def synthetic_poems(quota=None, seed=0):
    """Random regular-form poems (as lists of lines), chosen so each split gets its quota."""
    quota = quota or {"train": 24, "validation": 3, "test": 3}
    rng, picked = random.Random(seed), {name: [] for name in data.SPLITS}
    while any(len(picked[name]) < n for name, n in quota.items()):
        width, height = rng.choice([(5, 4), (7, 4), (5, 8), (7, 8)])
        lines = ["".join(rng.choice(POOL) for _ in range(width)) for _ in range(height)]
        split = data.split_of(join_lines(lines))
        if len(picked[split]) < quota.get(split, 0):
            picked[split].append(lines)
    return [lines for name in quota for lines in picked[name]]


# One poem in validation and one in test, so that no split of a tiny dataset is empty.
FILLER = [poem(lines, f"filler{i}") for i, lines in enumerate(synthetic_poems({"validation": 1, "test": 1}, seed=3))]


def english_lines(quota):
    """Distinct English sentences, chosen so each split gets its quota."""
    picked = {name: [] for name in data.SPLITS}
    for i in itertools.count():
        text = f"Sentence number {i} is about the {('cat', 'dog', 'owl')[i % 3]} and its  friends."
        split = data.split_of(text)
        if len(picked[split]) < quota.get(split, 0):
            picked[split].append(text)
        if all(len(picked[name]) == n for name, n in quota.items()):
            return [text for name in quota for text in picked[name]]


def reference_split(text):
    """A second, straightforward reading of the rule: blake2b-64 of the UTF-8 text, modulo 100."""
    bucket = int(hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest(), 16) % 100
    return {0: "validation", 1: "test"}.get(bucket, "train")


def fails(argv, capsys):
    """Run the CLI expecting a clean failure; return what it printed on stderr."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code not in (0, None)
    err = capsys.readouterr().err  # progress bars may come first
    assert "Traceback" not in err and "\nerror: " in "\n" + err.replace("\r", "\n")
    return err


def assert_nothing_written(out, name="x"):
    """No dataset folder, and no temporary folder left beside it (the lock file of textvae.locking may be)."""
    assert not (out / name).exists()
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [f".{name}.lock"])


def fake_npm(bin_dir, body):
    """Make `bin_dir/npm` a Python script running `body`, with `dest` the --pack-destination folder."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "npm"
    script.write_text(f"#!{sys.executable}\nimport shutil, sys\nfrom pathlib import Path\n"
                      "dest = Path(sys.argv[sys.argv.index('--pack-destination') + 1])\n" + body + "\n")
    script.chmod(0o755)
    return bin_dir


def table_printed(out_text):
    """The dynasty × form table `prepare poems` prints: {dynasty: {form: n}}, and the totals."""
    lines = out_text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[-1:] == ["total"])
    forms = lines[header].split()[:-1]
    table, totals = {}, {}
    for line in lines[header + 1:]:
        if line.startswith("kept "):
            break
        row, *numbers = line.split()
        numbers = [int(n.replace(",", "")) for n in numbers]
        table[row], totals[row] = dict(zip(forms, numbers[:-1])), numbers[-1]
    return table, totals


def dynasty_form_counts(dataset):
    counts = Counter((row["dynasty"], row["form"]) for split in dataset.values() for row in split)
    forms = sorted({f for _, f in counts})
    return {d: {f: counts[d, f] for f in forms} for d in sorted({d for d, _ in counts})}


# --- splits -------------------------------------------------------------------------------------------

SAMPLES = ["秦川雄帝宅，函谷壯皇居。", "", "hello world", "😀", "a\x00b"] + [f"sample {i}" for i in range(400)]


def test_split_of_matches_a_reference_and_is_stable():
    expected = [reference_split(t) for t in SAMPLES]
    assert set(expected) == set(data.SPLITS)  # the samples exercise all three splits
    assert [data.split_of(t) for t in SAMPLES] == expected
    assert [data.split_of(t) for t in SAMPLES] == expected  # again, same answers


def test_split_of_is_the_same_in_a_fresh_process():
    code = ("import json, sys; from textvae.data import split_of; "
            "print(json.dumps([split_of(t) for t in json.load(sys.stdin)]))")
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(SAMPLES), capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(result.stdout) == [reference_split(t) for t in SAMPLES]


def test_split_proportions():
    n = 20_000
    counts = Counter(data.split_of(f"synthetic text number {i}") for i in range(n))
    for split, p in {"train": 0.98, "validation": 0.01, "test": 0.01}.items():
        assert abs(counts[split] - n * p) < 5 * math.sqrt(n * p * (1 - p)), counts


# --- prepare poems ------------------------------------------------------------------------------------

def poem_files(poems):
    records = [poem(lines, f"p{i}") for i, lines in enumerate(poems)]
    half = len(records) // 2
    irregular = poem(["白日依山盡兮", "黃河入海流兮"], "irregular")
    duplicate = dict(records[0], id="duplicate")
    return {"poet.tang.0.json": records[:half] + [irregular], "poet.song.0.json": records[half:] + [duplicate]}


@pytest.mark.parametrize("kind", ["folder", "tarball", "github"])
def test_prepare_poems_end_to_end(make_source, tmp_path, monkeypatch, capsys, kind):
    poems = synthetic_poems()
    source = make_source(poem_files(poems), kind=kind)
    if kind == "tarball":  # stand in for the published tarball, whose integrity is checked
        monkeypatch.setattr(npm, "INTEGRITY", npm.integrity_of(source))
    out = tmp_path / "out"
    main(["prepare", "poems", "--source", str(source), "--out", str(out), "--name", "x"])
    printed = capsys.readouterr().out

    assert sorted(p.name for p in out.iterdir()) == [".x.lock", "x"]  # the lock stays (textvae.locking)
    assert sorted(p.name for p in (out / "x").iterdir()) == [".textvae-dataset", "dataset", "manifest.json", "tokenizer.model"]
    dataset, tok = data.load(out / "x")
    assert set(dataset) == set(data.SPLITS)
    texts = {}
    for split, rows in dataset.items():
        assert COLUMNS <= set(rows.column_names)
        texts[split] = rows["text"]
        assert len(rows) == {"train": 24, "validation": 3, "test": 3}[split]
        assert all(data.split_of(t) == split for t in rows["text"])
        for row in rows:
            assert tok.decode(row["ids"]) == row["text"]
            assert row["ids"] == tok.encode(row["text"])
            assert row["lines"] == split_lines(row["text"])
            assert row["dynasty"] == ("tang" if int(row["id"][1:]) < len(poems) // 2 else "song")
    all_texts = [t for split in texts.values() for t in split]
    assert sorted(all_texts) == sorted(join_lines(lines) for lines in poems)
    assert len(set(all_texts)) == len(all_texts)  # no text in two splits

    counts = dynasty_form_counts(dataset)
    table, totals = table_printed(printed)
    assert table == counts
    assert totals == {d: sum(row.values()) for d, row in counts.items()}

    manifest = json.loads((out / "x" / "manifest.json").read_text())
    assert manifest["counts"] == counts
    assert manifest["kept"] == len(poems)
    assert manifest["splits"] == {split: len(rows) for split, rows in dataset.items()}
    assert manifest["vocab_size"] == tok.vocab_size
    assert manifest["simplified"] is False
    assert {reason: n for reason, n in manifest["dropped"].items() if n} == {"irregular form": 1, "duplicate text": 1}


def test_prepare_with_empty_splits_loads(make_source, tmp_path):
    poems = synthetic_poems({"train": 2, "validation": 0, "test": 0}, seed=1)
    source = make_source({"poet.tang.0.json": [poem(lines, f"p{i}") for i, lines in enumerate(poems)]})
    main(["prepare", "poems", "--source", str(source), "--out", str(tmp_path), "--name", "x"])
    dataset, _ = data.load(tmp_path / "x")
    assert [len(dataset[split]) for split in data.SPLITS] == [2, 0, 0]
    assert all(COLUMNS <= set(dataset[split].column_names) for split in data.SPLITS)


def test_prepare_poems_simplified(make_source, tmp_path, capsys):
    files = {"poet.tang.0.json": [poem(["秦川雄帝宅", "函谷壯皇居", "花裏千尋起", "離宮百雉餘"], "trad", "太宗皇帝", "帝京篇"),
                                  poem(["白日依山盡", "黃河入海流", "欲窮千里目", "更上一層樓"], "b", "王之渙", "登鸛雀樓")],
             "poet.tang.1.json": [poem(["秦川雄帝宅", "函谷壮皇居", "花裡千尋起", "離宮百雉餘"], "variant")] + FILLER}
    main(["prepare", "poems", "--source", str(make_source(files)), "--out", str(tmp_path), "--name", "x",
          "--simplified"])
    dataset, tok = data.load(tmp_path / "x")
    rows = {row["id"]: row for split in dataset.values() for row in split}
    assert set(rows) == {"trad", "b", "filler0", "filler1"}
    assert not any(char in row["text"] for row in rows.values() for char in "壯裏裡尋離宮餘")
    assert rows["trad"]["text"] == "秦川雄帝宅，函谷壮皇居。花里千寻起，离宫百雉余。"
    assert rows["b"]["text"] == "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
    assert (rows["b"]["author"], rows["b"]["title"]) == ("王之涣", "登鹳雀楼")
    assert all(tok.decode(row["ids"]) == row["text"] for row in rows.values())
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["simplified"] is True and manifest["dropped"]["duplicate text"] == 1


def test_prepare_replaces_an_old_dataset(make_source, tmp_path):
    out = tmp_path / "out"
    first = make_source({"poet.tang.0.json": [poem(["白日依山盡", "黃河入海流", "欲窮千里目", "更上一層樓"], "a")]
                                             + FILLER}, name="first")
    second = make_source({"poet.tang.0.json": [poem(["朝辭白帝彩雲間", "千里江陵一日還", "兩岸猿聲啼不住",
                                                     "輕舟已過萬重山"], "b")] + FILLER}, name="second")
    for source in (first, second):
        main(["prepare", "poems", "--source", str(source), "--out", str(out), "--name", "x"])
    assert sorted(p.name for p in out.iterdir()) == [".x.lock", "x"]
    dataset, _ = data.load(out / "x")
    assert sorted(row["id"] for split in dataset.values() for row in split) == ["b", "filler0", "filler1"]


def test_download_once_then_reuse_the_cache(make_source, tmp_path, monkeypatch):
    tarball = make_source(poem_files(synthetic_poems({"train": 4}, seed=2)), kind="tarball")
    monkeypatch.setattr(npm, "INTEGRITY", npm.integrity_of(tarball))
    log = tmp_path / "npm.log"
    bin_dir = fake_npm(tmp_path / "bin", f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                                         f"shutil.copy({str(tarball)!r}, dest / 'chinese-poetry-2.0.1.tgz')")
    monkeypatch.setenv("PATH", str(bin_dir))
    cache, out = tmp_path / "cache", tmp_path / "out"
    for name in ("a", "b"):
        main(["prepare", "poems", "--cache-dir", str(cache), "--out", str(out), "--name", name])
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("pack chinese-poetry@2.0.1 --pack-destination ")
    assert [p.name for p in cache.iterdir()] == ["chinese-poetry-2.0.1.tgz"]
    assert sorted(p.name for p in out.iterdir()) == [".a.lock", ".b.lock", "a", "b"]
    manifest = json.loads((out / "b" / "manifest.json").read_text())
    assert manifest["source"] == str(cache / "chinese-poetry-2.0.1.tgz") and manifest["kept"] == 4


# --- prepare text -------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokenizer", ["unigram", "char"])
def test_prepare_text(tmp_path, capsys, tokenizer):
    lines = english_lines({"train": 30, "validation": 2, "test": 2})
    file = tmp_path / "english.txt"
    file.write_text("\n".join(lines + ["", lines[0]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    main(["prepare", "text", str(file), "--out", str(out), "--name", "en", "--tokenizer", tokenizer])
    printed = capsys.readouterr().out
    assert "kept 34 from 1 files" in printed and "total" not in printed
    dataset, tok = data.load(out / "en")
    rows = [row for split in dataset.values() for row in split]
    assert sorted(row["text"] for row in rows) == sorted(lines)
    assert all(tok.decode(row["ids"]) == row["text"] for row in rows)
    assert all(data.split_of(row["text"]) == split for split, part in dataset.items() for row in part)
    manifest = json.loads((out / "en" / "manifest.json").read_text())
    assert manifest["corpus"] == "text" and manifest["kept"] == 34
    assert manifest["dropped"] == {"empty line": 1, "duplicate text": 1}
    assert sorted(p.name for p in out.iterdir()) == [".en.lock", "en"]


# --- bad input: a clear message, and nothing written --------------------------------------------------

def test_npm_missing(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("TEXTVAE_CACHE", str(tmp_path / "cache"))
    err = fails(["prepare", "poems", "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert "npm was not found" in err and "--source" in err
    assert_nothing_written(tmp_path / "out")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_npm_download_fails(tmp_path, monkeypatch, capsys):
    bin_dir = fake_npm(tmp_path / "bin", "print('npm error network ETIMEDOUT', file=sys.stderr)\nsys.exit(1)")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("TEXTVAE_CACHE", str(tmp_path / "cache"))
    err = fails(["prepare", "poems", "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert "npm pack chinese-poetry@2.0.1" in err and "failed" in err and "ETIMEDOUT" in err
    assert_nothing_written(tmp_path / "out")
    assert list((tmp_path / "cache").iterdir()) == []


def test_npm_download_with_wrong_integrity(tmp_path, monkeypatch, capsys):
    bin_dir = fake_npm(tmp_path / "bin", "(dest / 'chinese-poetry-2.0.1.tgz').write_bytes(b'bogus')")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("TEXTVAE_CACHE", str(tmp_path / "cache"))
    err = fails(["prepare", "poems", "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert "not the published chinese-poetry@2.0.1 tarball" in err and "integrity" in err
    assert_nothing_written(tmp_path / "out")
    assert list((tmp_path / "cache").iterdir()) == []  # the bad download is not cached


def test_corrupt_cached_tarball(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "chinese-poetry-2.0.1.tgz").write_bytes(b"\x1f\x8b truncated")
    monkeypatch.setenv("PATH", str(fake_npm(tmp_path / "bin", "sys.exit('npm must not be called')")))
    monkeypatch.setenv("TEXTVAE_CACHE", str(cache))
    err = fails(["prepare", "poems", "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert "not the published" in err and "Delete it" in err
    assert_nothing_written(tmp_path / "out")


def test_source_tarball_with_wrong_content(make_source, tmp_path, capsys):
    tarball = make_source(poem_files(synthetic_poems({"train": 4})), kind="tarball")
    err = fails(["prepare", "poems", "--source", str(tarball), "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert "not the published" in err and str(tarball) in err
    assert_nothing_written(tmp_path / "out")


def test_unwritable_cache(tmp_path, capsys):
    (tmp_path / "file").write_text("a regular file")
    err = fails(["prepare", "poems", "--cache-dir", str(tmp_path / "file" / "cache"),
                 "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert "cannot write the corpus cache" in err
    assert_nothing_written(tmp_path / "out")


GOOD = poem(["白日依山盡", "黃河入海流", "欲窮千里目", "更上一層樓"], "good")


@pytest.mark.parametrize("files, strains, words", [
    ({"poet.tang.0.json": '[{"author": "李白", "paragraphs": ["床前'}, None, ["poet.tang.0.json", "not valid JSON"]),
    ({"poet.tang.0.json": [GOOD]}, {"poet.tang.0.json": "[{"}, ["strains", "not valid JSON"]),
    ({"poet.tang.0.json": {"author": "李白", "paragraphs": ["床前明月光"]}}, None, ["not a list of poem objects"]),
    ({"poet.tang.0.json": [GOOD, {"author": "李白", "title": "靜夜思", "id": "x"}]}, None,
     ["'paragraphs'", "poet.tang.0.json"]),
    ({"poet.tang.0.json": [poem(["白日依山盡兮", "黃河入海流兮"], "six")]}, None,
     ["nothing left to prepare: 1 poem read, none kept: irregular form (1)"]),
    ({"notes.json": [GOOD]}, None, ["no poem files"]),
])
def test_bad_source_content(make_source, tmp_path, capsys, files, strains, words):
    source = make_source(files, strains)
    err = fails(["prepare", "poems", "--source", str(source), "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert all(word in err for word in words), err
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("vocab_size", ["100", "0"])
def test_vocab_size_too_small(make_source, tmp_path, capsys, vocab_size):
    source = make_source({"poet.tang.0.json": [GOOD]})
    err = fails(["prepare", "poems", "--source", str(source), "--out", str(tmp_path / "out"), "--name", "x",
                 "--vocab-size", vocab_size], capsys)
    assert "--vocab-size must be from 262" in err
    assert_nothing_written(tmp_path / "out")


def test_failure_leaves_an_old_dataset_alone(make_source, tmp_path, capsys):
    out = tmp_path / "out"
    main(["prepare", "poems", "--source", str(make_source({"poet.tang.0.json": [GOOD] + FILLER}, name="good")),
          "--out", str(out), "--name", "x"])
    before = (out / "x" / "manifest.json").read_text()
    bad = make_source({"poet.tang.0.json": "not json"}, name="bad")
    fails(["prepare", "poems", "--source", str(bad), "--out", str(out), "--name", "x"], capsys)
    assert sorted(p.name for p in out.iterdir()) == [".x.lock", "x"]
    assert (out / "x" / "manifest.json").read_text() == before
    dataset, _ = data.load(out / "x")
    assert sorted(row["id"] for split in dataset.values() for row in split) == ["filler0", "filler1", "good"]


def test_missing_source(tmp_path, capsys):
    err = fails(["prepare", "poems", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                 "--name", "x"], capsys)
    assert "does not exist" in err and "nowhere" in err
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("out", ["file", "file/sub"])
def test_unwritable_output(make_source, tmp_path, capsys, out):
    (tmp_path / "file").write_text("a regular file")
    source = make_source({"poet.tang.0.json": [GOOD]})
    err = fails(["prepare", "poems", "--source", str(source), "--out", str(tmp_path / out), "--name", "x"], capsys)
    assert "cannot write" in err and str(tmp_path / "file") in err
    assert (tmp_path / "file").read_text() == "a regular file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "src"]


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("café\n".encode("latin-1"), "not UTF-8"),
    (b"\n  \n\n", "input.txt: nothing left to prepare: 3 lines read, none kept: empty line (3)"),
])
def test_bad_text_file(tmp_path, capsys, content, words):
    file = tmp_path / "input.txt"
    if content is not None:
        file.write_bytes(content)
    err = fails(["prepare", "text", str(file), "--out", str(tmp_path / "out"), "--name", "x"], capsys)
    assert words in err
    assert_nothing_written(tmp_path / "out")


# --- the real corpus ----------------------------------------------------------------------------------

FIRST_TANG_POEM = "秦川雄帝宅，函谷壯皇居。綺殿千尋起，離宮百雉餘。連甍遙接漢，飛觀迥凌虛。雲日隱層闕，風煙出綺疎。"


@pytest.mark.corpus
def test_prepare_real_corpus(tmp_path, capsys):
    """The published npm package, downloaded into (or reused from) the default cache."""
    main(["prepare", "poems", "--out", str(tmp_path), "--name", "poems"])
    printed = capsys.readouterr().out
    dataset, tok = data.load(tmp_path / "poems")
    manifest = json.loads((tmp_path / "poems" / "manifest.json").read_text())

    columns = {split: dataset[split].select_columns(["text", "dynasty", "form"]).to_dict() for split in data.SPLITS}
    by_dynasty = Counter(d for c in columns.values() for d in c["dynasty"])
    assert 35_000 <= by_dynasty["tang"] <= 40_000
    assert 185_000 <= by_dynasty["song"] <= 200_000
    total = sum(by_dynasty.values())
    sizes = {split: len(c["text"]) for split, c in columns.items()}
    assert abs(sizes["validation"] / total - 0.01) < 0.002 and abs(sizes["test"] / total - 0.01) < 0.002

    texts = [t for c in columns.values() for t in c["text"]]
    assert len(set(texts)) == len(texts)
    assert FIRST_TANG_POEM in columns["train"]["text"] + columns["validation"]["text"] + columns["test"]["text"]
    assert join_lines(split_lines(FIRST_TANG_POEM)) == FIRST_TANG_POEM

    counts = Counter((d, f) for c in columns.values() for d, f in zip(c["dynasty"], c["form"]))
    assert manifest["counts"] == {d: {f: counts[d, f] for f in sorted(FORMS)} for d in ("song", "tang")}
    assert manifest["kept"] == total and manifest["splits"] == sizes
    assert table_printed(printed)[0] == manifest["counts"]
    sample = dataset["validation"].select(range(200))
    assert all(tok.decode(row["ids"]) == row["text"] for row in sample)
