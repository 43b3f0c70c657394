"""Prepared datasets: deterministic splits, Arrow storage with HF `datasets`, atomic writes.

A prepared dataset is a folder `data/<name>/` holding `dataset/` (a `DatasetDict.save_to_disk` with the
splits train / validation / test), `tokenizer.model` and `manifest.json` (counts, source, options).
"""

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict, load_from_disk

from textvae.atomic import atomic_directory, check_can_write, remove_leftovers
from textvae.errors import TextVAEError
from textvae.locking import writer_lock
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, load_tokenizer

SPLITS = ("train", "validation", "test")
MARKER = ".textvae-dataset"  # written into every prepared dataset: only such folders are replaced
_LEGACY_LAYOUT = {"dataset", "tokenizer.model", "manifest.json"}  # datasets prepared before the marker
datasets.disable_progress_bars()  # our own bars say what is happening; its per-shard bars are noise


def split_of(text: str) -> str:
    """About 98 / 1 / 1 by a stable hash of the text, so a text always lands in the same split."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 100
    return "validation" if bucket == 0 else "test" if bucket == 1 else "train"


def split_records(records: list[dict]) -> dict[str, list[dict]]:
    splits = {name: [] for name in SPLITS}
    for record in records:
        splits[split_of(record["text"])].append(record)
    return splits


def build(records: list[dict], kind: str, vocab_size: int) -> tuple[DatasetDict, Tokenizer]:
    """Split, train the tokenizer on the training split, and attach token ids to every record."""
    if not records:
        raise TextVAEError("the corpus is empty after filtering: nothing to prepare.")
    splits = split_records(records)
    if not splits["train"]:
        raise TextVAEError("every text hashed into validation/test: give the corpus more texts.")
    tokenizer = Tokenizer.train([r["text"] for r in splits["train"]], kind=kind, vocab_size=vocab_size)
    return tokenize_splits(splits, tokenizer), tokenizer


def tokenize_splits(splits: dict[str, list[dict]], tokenizer) -> DatasetDict:
    """The splits' records with their token ids attached (an `ids` column), as a DatasetDict."""
    columns = [*next(rows[0] for rows in splits.values() if rows), "ids"]
    parts = {}
    for name, rows in splits.items():
        ids = tokenizer.encode_batch([r["text"] for r in rows])
        parts[name] = Dataset.from_list([dict(r, ids=i) for r, i in zip(rows, ids)]) if rows else \
            Dataset.from_dict({key: [] for key in columns})
    return DatasetDict(parts)


def check_name(name: str) -> None:
    """A dataset name is one folder name: not empty, not . or .., no path separator."""
    if not name or name.strip() != name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise TextVAEError(f"--name {name!r} is not a folder name: give a plain name such as 'poems' "
                           "(no slashes, not empty, not . or ..)")


def is_dataset(folder: Path) -> bool:
    """True for a folder `textvae prepare` wrote: it holds the marker, or (older datasets) exactly the files
    prepare writes and nothing else."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    return folder.is_dir() and {p.name for p in folder.iterdir()} == _LEGACY_LAYOUT


def is_inside(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies under it (after resolving links and ..)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_output(out_dir: Path, inputs: list[Path], overwrite: bool = False) -> None:
    """Refuse, before any work, an output folder whose replacement would lose something the user owns:
    one that holds an input, or an existing folder that is not a textvae dataset (unless `overwrite`)."""
    out_dir = Path(out_dir)
    for path in inputs:
        if is_inside(path, out_dir):
            raise TextVAEError(f"the input {path} lies inside the output folder {out_dir}, which prepare replaces "
                               "whole: choose another --out or --name")
    if out_dir.exists() and not out_dir.is_dir():
        raise TextVAEError(f"the output {out_dir} is a file, not a folder: choose another --out or --name")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_dataset(out_dir) and not overwrite:
        raise TextVAEError(f"{out_dir} exists and is not a dataset textvae wrote: prepare would replace it and "
                           "everything in it. Choose another --out or --name, or pass --overwrite to replace it")
    check_can_write(out_dir.parent, "--out")


def save(dataset: DatasetDict, tokenizer: Tokenizer, manifest: dict, out_dir: Path) -> None:
    """Write dataset/, tokenizer.model and manifest.json; the folder appears whole or not at all, and one process
    at a time writes it."""
    with writer_lock(out_dir, "choose another folder"):
        remove_leftovers(out_dir)  # what a prepare killed mid-write left beside it
        with atomic_directory(out_dir) as tmp:
            # one shard per split: datasets writes no file at all for an empty split with the default sharding
            dataset.save_to_disk(str(tmp / "dataset"), num_shards={name: 1 for name in dataset})
            tokenizer.save(tmp / "tokenizer.model")
            (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
            (tmp / MARKER).write_text("a dataset written by `textvae prepare`: prepare may replace this folder\n")


def load(data_dir: str | Path) -> tuple[DatasetDict, Tokenizer]:
    """Open a prepared dataset folder (`textvae prepare` output)."""
    data_dir = Path(data_dir)
    if not (data_dir / "dataset").is_dir() or not (data_dir / "tokenizer.model").is_file():
        raise TextVAEError(f"{data_dir} is not a prepared dataset (it needs dataset/ and tokenizer.model): "
                           "run `textvae prepare poems` (or `prepare text`) first.")
    try:
        dataset = load_from_disk(str(data_dir / "dataset"))
    except Exception as e:  # datasets raises several types for a damaged folder
        raise TextVAEError(f"{data_dir}/dataset cannot be read ({e}); run `textvae prepare` again.") from e
    tokenizer = load_tokenizer(data_dir / "tokenizer.model")
    check_ids_fit(dataset, tokenizer, data_dir)
    return dataset, tokenizer


def check_ids_fit(dataset: DatasetDict, tokenizer: Tokenizer, data_dir: Path) -> None:
    """Refuse a dataset whose token ids lie outside its tokenizer's vocabulary (its tokenizer.model replaced by
    another's), which would otherwise surface as an IndexError in the first embedding lookup. One Arrow pass:
    milliseconds for the poems' 10M tokens (pyarrow comes with datasets)."""
    # an empty split is skipped: its column was written without a type, which list_flatten refuses
    largest = max((pc.max(pc.list_flatten(split.data.column("ids"))).as_py() for split in dataset.values()
                   if len(split)), default=-1)
    if largest >= tokenizer.vocab_size:
        raise TextVAEError(f"{data_dir}: its token ids do not fit its tokenizer.model (largest id {largest:,}, "
                           f"vocabulary of {tokenizer.vocab_size:,}): the tokenizer was replaced after the dataset "
                           "was prepared. Run `textvae prepare` again to rebuild the folder")


def count_table(records: list[dict], rows: str, columns: str) -> dict[str, dict[str, int]]:
    """Counts of records by two fields, e.g. dynasty × form."""
    counts = Counter((r[rows], r[columns]) for r in records)
    return {row: {col: counts[row, col] for col in sorted({c for _, c in counts})}
            for row in sorted({r for r, _ in counts})}


def pad_batch(sequences: list[list[int]], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ids (B, T) as BOS + text + EOS padded on the right, and mask (B, T).

    A text longer than max_len - 2 tokens is cut (its EOS kept) so the model never sees more than max_len.
    """
    if max_len is not None:
        sequences = [s[: max_len - 2] for s in sequences]
    width = max(len(s) for s in sequences) + 2
    ids = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq) + 2] = torch.tensor([BOS_ID, *seq, EOS_ID])
    return ids, ids != PAD_ID


class Batches:
    """Deterministic training batches: batch `step` is a pure function of (seed, step), so an exact
    resume needs only the step. Each epoch is a seeded shuffle; within windows of 50 batches examples are
    sorted by length (less padding), and the batch order is shuffled again. With several processes each
    global batch of `batch_size × world_size` examples is dealt out round-robin, one share per rank.
    """

    def __init__(self, sequences: list[list[int]], batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, max_len: int | None = None):
        self.sequences, self.seed, self.max_len = sequences, seed, max_len
        self.rank, self.world_size = rank, world_size
        self.global_size = batch_size * world_size
        self.lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        if len(sequences) < self.global_size:
            raise TextVAEError(f"the training split has {len(sequences)} examples, fewer than one batch "
                               f"({self.global_size}): lower batch_size or prepare more data")
        self._epoch, self._plan = None, None

    def __len__(self) -> int:
        return len(self.sequences) // self.global_size

    def _epoch_plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.sequences))
        window = self.global_size * 50
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.global_size] for i in range(0, len(chunk) - self.global_size + 1, self.global_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def indices(self, step: int) -> np.ndarray:
        """This rank's example indices for a step."""
        epoch, index = divmod(step, len(self))
        if epoch != self._epoch:
            self._epoch, self._plan = epoch, self._epoch_plan(epoch)
        return self._plan[index][self.rank::self.world_size]

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_batch([self.sequences[i] for i in self.indices(step)], self.max_len)


def warn_if_cut(sequences: list[list[int]], max_len: int, what: str) -> int:
    """Warn with the count of token sequences that pad_batch will cut to fit max_len (BOS + text + EOS)."""
    cut = sum(len(s) > max_len - 2 for s in sequences)
    if cut:
        warnings.warn(f"{cut:,} of {len(sequences):,} {what} ({cut / len(sequences):.1%}) are longer than max_len "
                      f"{max_len} tokens (BOS + text + EOS) and are cut to fit; a model with a larger --max-len "
                      "keeps them whole")
    return cut


def seeded_subset(count: int, n: int, seed: int) -> list[int]:
    """The sorted indices of a seeded n of `count` items; all of them where n >= count."""
    if count <= n:
        return list(range(count))
    return sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].tolist())


def token_ids(split: Dataset) -> list[list[int]]:
    """The `ids` column as Python lists, read column-wise through Arrow (much faster than row access)."""
    return split.select_columns(["ids"]).to_dict()["ids"]
