"""Atomic writes: what a writer killed mid-write leaves behind, and `remove_leftovers` cleaning it up.

A kill is a forked child that leaves with os._exit (no cleanup runs, as under SIGKILL), so the leftovers
carry the names the real code makes rather than names guessed by the test.
"""

import os

import pytest
import torch

from textvae import atomic, data
from textvae.atomic import atomic_directory, remove_leftovers, write_text
from textvae.train import TrainConfig, train
from textvae.vae import VAEConfig


def killed_in_child(work) -> None:
    """Run work() in a forked child that dies where work calls os._exit, skipping every cleanup."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def die_on_call(number: int, real):
    """A stand-in for `real` that exits the process on its `number`-th call (1-based)."""
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            os._exit(0)
        return real(*args, **kwargs)
    return call


def save(target, text: str) -> None:
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text(text)


def kill_during_write(target) -> None:
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("half")
        os._exit(0)


def kill_between_renames(target) -> None:
    atomic.os.replace = die_on_call(2, os.replace)  # the child's module only: the parent never sees it
    save(target, "new")


def kill_before_rename(path) -> None:
    atomic.os.replace = die_on_call(1, os.replace)
    write_text(path, "new")


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_leftovers_of_killed_writes_are_removed(tmp_path):
    save(tmp_path / "last", "good")
    for _ in range(2):
        killed_in_child(lambda: kill_during_write(tmp_path / "last"))
    killed_in_child(lambda: kill_during_write(tmp_path / "best"))
    killed_in_child(lambda: kill_before_rename(tmp_path / "metrics.jsonl"))
    assert len(names(tmp_path)) == 5, "each kill should have left one temporary entry"
    remove_leftovers(tmp_path / "last", tmp_path / "best", tmp_path / "metrics.jsonl")
    assert names(tmp_path) == ["last"]
    assert (tmp_path / "last" / "weights").read_text() == "good"


def test_a_swap_cut_between_its_renames_is_recovered(tmp_path):
    save(tmp_path / "last", "previous")
    killed_in_child(lambda: kill_between_renames(tmp_path / "last"))
    assert not (tmp_path / "last").exists(), "the child should have died with the old copy moved aside"
    remove_leftovers(tmp_path / "last")
    assert names(tmp_path) == ["last"]
    assert (tmp_path / "last" / "weights").read_text() == "previous"


@pytest.mark.parametrize("name, is_dir", [
    ("notes.txt", False),
    (".last-tmp-notes.txt", False),  # a file, and not a mkdtemp suffix
    (".last-tmp-notes", True),  # a folder, but not eight mkdtemp characters
    (".last-tmp-ABCDEFGH", True),  # mkdtemp never uses capitals
    ("last-tmp-abcd1234", True),  # not hidden
    (".other-tmp-abcd1234", True),  # beside another target
    (".last-tmp-abcd1234", False),  # the right name, the wrong kind
    (".last-old-backup", True),  # an old copy carries a process id
    (".metrics.jsonl.tmp-abc", False),
    (".metrics.jsonl.tmp-123", True),
])
def test_entries_that_are_not_ours_are_left_alone(tmp_path, name, is_dir):
    save(tmp_path / "last", "good")
    if is_dir:
        (tmp_path / name).mkdir()
        (tmp_path / name / "inside").write_text("user data")
    else:
        (tmp_path / name).write_text("user data")
    remove_leftovers(tmp_path / "last", tmp_path / "metrics.jsonl")
    assert names(tmp_path) == sorted(["last", name])
    assert (tmp_path / name / "inside" if is_dir else tmp_path / name).read_text() == "user data"


def test_a_link_with_a_leftover_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("user data")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last-tmp-abcd1234").symlink_to(outside, target_is_directory=True)
    remove_leftovers(run / "last")
    assert (run / ".last-tmp-abcd1234").is_symlink() and (outside / "keep").read_text() == "user data"


def test_a_folder_still_being_written_is_kept(tmp_path):
    with atomic_directory(tmp_path / "last") as tmp:
        (tmp / "weights").write_text("new")
        remove_leftovers(tmp_path / "last")
        assert (tmp / "weights").exists()
    assert names(tmp_path) == ["last"]


def test_a_missing_folder_is_nothing_to_clean(tmp_path):
    remove_leftovers(tmp_path / "absent" / "last")
    assert not (tmp_path / "absent").exists()


def test_train_cleans_its_run_dir_before_resuming(tmp_path):
    g = torch.Generator().manual_seed(0)
    texts = sorted({"".join("abcdefgh"[i] for i in torch.randint(0, 8, (6,), generator=g)) for _ in range(200)})
    dataset, tokenizer = data.build([dict(text=t) for t in texts], kind="char", vocab_size=300)
    data.save(dataset, tokenizer, {}, tmp_path / "data")
    model = VAEConfig(embed_dim=8, encoder_hidden=8, decoder_hidden=16, latent_dim=2, max_len=16)
    run = tmp_path / "run"
    c = dict(data_dir=str(tmp_path / "data"), run_dir=str(run), batch_size=8, eval_every=2, eval_examples=8)
    train(model, TrainConfig(**c, max_steps=2))
    killed_in_child(lambda: kill_during_write(run / "best"))
    killed_in_child(lambda: kill_before_rename(run / "metrics.jsonl"))
    killed_in_child(lambda: kill_between_renames(run / "last"))
    (run / "notes.txt").write_text("user data")
    train(model, TrainConfig(**c, max_steps=4), resume=True)
    assert names(run) == ["best", "last", "metrics.jsonl", "notes.txt", "run_config.json"]
    assert torch.load(run / "last" / "trainer_state.pt", weights_only=True)["step"] == 4


def test_write_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "results.md"
    atomic.write_section(path, "ptb", "first table")  # a new file: the block alone
    assert path.read_text() == "<!-- begin ptb -->\nfirst table\n<!-- end ptb -->\n"
    path.write_text("# Results\n\nby hand\n\n" + path.read_text() + "\nafter it\n")
    atomic.write_section(path, "poems", "poem table\n")  # another block: appended, the rest untouched
    atomic.write_section(path, "ptb", "second table")  # its own block: replaced in place
    assert path.read_text() == ("# Results\n\nby hand\n\n<!-- begin ptb -->\nsecond table\n<!-- end ptb -->\n"
                                "\nafter it\n\n<!-- begin poems -->\npoem table\n<!-- end poems -->\n")
