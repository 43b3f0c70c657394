"""Atomic writes: what a writer killed mid-write leaves behind and `remove_leftovers` cleaning it up; the swap (one
exchange of two names, or two renames where the system cannot); a folder updated as a linked copy, which a reader
sees whole at every step of add_prior; a write cut short by a file size limit (tests/test_full_disk.py runs the
commands on a full disk).

A kill is a forked child that leaves with os._exit (no cleanup runs, as under SIGKILL), so the leftovers
carry the names the real code makes rather than names guessed by the test.
"""

import ctypes
import errno
import json
import os
import resource
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch

from textvae import atomic, checkpoint, data
from textvae.atomic import append_whole, atomic_directory, remove_leftovers, updated_directory, write_text
from textvae.diskfull import DiskFull
from textvae.errors import TextVAEError
from textvae.priors.gmm import GaussianMixturePrior
from textvae.tokenizer import Tokenizer
from textvae.train import TrainConfig, train
from textvae.vae import TextVAE, VAEConfig


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
    atomic.exchange = lambda a, b: False  # the two-rename swap, as where the system cannot exchange two names
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

# --- the swap: one exchange of two names, or two renames where the system cannot ----------------------------


def needs_exchange() -> None:
    if atomic._renameat2() is None:
        pytest.skip("this system has no renameat2")


def folder_with(path, text: str) -> int:
    path.mkdir()
    (path / "weights").write_text(text)
    return path.stat().st_ino


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    needs_exchange()
    a, b = folder_with(tmp_path / "a", "A"), folder_with(tmp_path / "b", "B")
    assert atomic.exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "weights").read_text() == "B" and (tmp_path / "b" / "weights").read_text() == "A"
    assert ((tmp_path / "a").stat().st_ino, (tmp_path / "b").stat().st_ino) == (b, a)
    with pytest.raises(FileNotFoundError):
        atomic.exchange(tmp_path / "a", tmp_path / "absent")  # both names must exist


@pytest.mark.parametrize("code, refused", [(errno.EINVAL, True), (errno.ENOSYS, True), (errno.EACCES, False)])
def test_a_system_that_cannot_exchange_says_so_and_other_errors_are_raised(tmp_path, monkeypatch, code, refused):
    def renameat2(*args):
        ctypes.set_errno(code)
        return -1
    monkeypatch.setattr(atomic, "_renameat2", lambda: renameat2)
    if refused:
        assert atomic.exchange(tmp_path / "a", tmp_path / "b") is False
    else:
        with pytest.raises(PermissionError):
            atomic.exchange(tmp_path / "a", tmp_path / "b")


def test_a_swap_over_an_existing_folder_is_one_exchange(tmp_path, monkeypatch):
    needs_exchange()
    save(tmp_path / "last", "previous")
    with monkeypatch.context() as m:
        m.setattr(os, "replace", lambda *args: pytest.fail("a rename would leave the name empty for a moment"))
        save(tmp_path / "last", "new")
    assert names(tmp_path) == ["last"] and (tmp_path / "last" / "weights").read_text() == "new"


def test_without_the_exchange_the_swap_is_two_renames(tmp_path, monkeypatch):
    save(tmp_path / "last", "previous")
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    renamed = []
    monkeypatch.setattr(os, "replace", lambda a, b, real=os.replace: renamed.append(Path(b).name) or real(a, b))
    save(tmp_path / "last", "new")
    assert renamed == [f".last-old-{os.getpid()}", "last"]
    assert names(tmp_path) == ["last"] and (tmp_path / "last" / "weights").read_text() == "new"


def test_a_two_rename_swap_that_fails_half_way_puts_the_old_folder_back(tmp_path, monkeypatch):
    save(tmp_path / "last", "previous")
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    calls = []

    def replace(a, b, real=os.replace):
        calls.append(b)
        if len(calls) == 2:  # the new folder's rename into place
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(a, b)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(DiskFull, match="the previous version is unchanged"):
        save(tmp_path / "last", "new")
    assert names(tmp_path) == ["last"] and (tmp_path / "last" / "weights").read_text() == "previous"


def test_a_kill_after_the_exchange_leaves_the_old_folder_as_a_leftover(tmp_path):
    needs_exchange()
    save(tmp_path / "last", "previous")

    def kill_after_exchange():
        atomic.shutil.rmtree = die_on_call(1, shutil.rmtree)  # the deletion of the old folder
        save(tmp_path / "last", "new")
    killed_in_child(kill_after_exchange)
    assert len(names(tmp_path)) == 2 and (tmp_path / "last" / "weights").read_text() == "new"
    remove_leftovers(tmp_path / "last")
    assert names(tmp_path) == ["last"] and (tmp_path / "last" / "weights").read_text() == "new"

# --- updating a folder: a linked copy, changed, swapped in ---------------------------------------------------


@pytest.fixture
def live(tmp_path):
    """A folder of a kept file (mode 0640), a file to drop, one to replace, a subfolder and a link."""
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    for name, text in [("keep", "weights"), ("drop", "stale"), ("replace", "old"), ("sub/inner", "deep")]:
        (folder / name).write_text(text)
    (folder / "keep").chmod(0o640)
    (folder / "link").symlink_to("keep")
    folder.chmod(0o750)
    return folder


def inode(path) -> int:
    return path.lstat().st_ino


def test_an_updated_folder_links_what_it_keeps_and_writes_the_rest(live):
    kept = {name: inode(live / name) for name in ("keep", "sub/inner")}
    with updated_directory(live, leave_out={"drop", "replace"}) as tmp:
        assert not (tmp / "drop").exists() and not (tmp / "replace").exists()
        (tmp / "replace").write_text("new")
        (tmp / "added").write_text("added")
    assert sorted(p.name for p in live.parent.iterdir()) == ["model"]
    assert sorted(p.name for p in live.iterdir()) == ["added", "keep", "link", "replace", "sub"]
    assert {name: inode(live / name) for name in kept} == kept  # the same files: no byte copied
    assert (live / "replace").read_text() == "new" and os.readlink(live / "link") == "keep"
    umask = os.umask(0)
    os.umask(umask)
    modes = {name: (live / name).stat().st_mode & 0o777 for name in ("", "keep", "added")}
    assert modes == {"": 0o750, "keep": 0o640, "added": 0o666 & ~umask}


def test_a_failed_update_leaves_the_folder_as_it_was(live):
    before = {p: (p.read_bytes() if p.is_file() else None) for p in live.rglob("*")}
    with pytest.raises(RuntimeError):
        with updated_directory(live, leave_out={"replace"}) as tmp:
            (tmp / "replace").write_text("half")
            raise RuntimeError("killed mid-write")
    assert {p: (p.read_bytes() if p.is_file() else None) for p in live.rglob("*")} == before
    assert sorted(p.name for p in live.parent.iterdir()) == ["model"]

# --- readers: a read that straddles a swap is read again -----------------------------------------------------


def reads(results, swap_at=()):
    """A reader returning (or raising) `results` in turn, swapping the folder `target` during the calls in
    `swap_at`; its calls are counted in `.calls`."""
    def read():
        read.calls += 1
        if read.calls in swap_at:
            save(read.target, f"version {read.calls}")
        result = results[read.calls - 1]
        if isinstance(result, Exception):
            raise result
        return result
    read.calls = 0
    return read


def test_a_read_that_straddles_a_swap_is_read_again(tmp_path):
    save(tmp_path / "m", "first")
    read = reads([TextVAEError("checksum mismatch"), "whole"], swap_at={1})
    read.target = tmp_path / "m"
    assert atomic.read_consistently(tmp_path / "m", read) == "whole" and read.calls == 2
    read = reads(["torn", "whole"], swap_at={1})  # no error seen: the change alone says the read mixed versions
    read.target = tmp_path / "m"
    assert atomic.read_consistently(tmp_path / "m", read) == "whole" and read.calls == 2


def test_an_error_in_a_folder_nobody_swapped_stands(tmp_path):
    save(tmp_path / "m", "first")
    read = reads([TextVAEError("corrupt"), "never"])
    with pytest.raises(TextVAEError, match="corrupt"):
        atomic.read_consistently(tmp_path / "m", read)
    assert read.calls == 1


def test_a_folder_that_changes_at_every_read_is_refused(tmp_path):
    save(tmp_path / "m", "first")
    read = reads(["torn"] * 3, swap_at={1, 2, 3})
    read.target = tmp_path / "m"
    with pytest.raises(TextVAEError, match="changed each time it was read"):
        atomic.read_consistently(tmp_path / "m", read)
    assert read.calls == 3

# --- a model folder updated while it is read ----------------------------------------------------------------


def child_status(work) -> int:
    """work()'s exit status in a forked child: 0 where it returns, 1 where it raises (the traceback on fd 2)."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            work()
            status = 0
        except BaseException:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# the audit events of the operations that change a folder, and of the ctypes call that exchanges two names
CHANGES = {"open", "os.rename", "os.link", "os.symlink", "os.remove", "os.rmdir", "os.mkdir", "os.chmod",
           "os.truncate", "shutil.rmtree", "ctypes.call_function"}


def before_each_change(observe) -> None:
    """Call observe() before every filesystem operation this process makes from now on, so that it sees each
    state the operations leave. An audit hook cannot be removed: call it in a child."""
    busy = []

    def hook(event, args):
        if event in CHANGES and not busy:
            busy.append(True)  # observe's own reads are not observed
            try:
                observe()
            finally:
                busy.clear()
    sys.addaudithook(hook)


@pytest.fixture
def tiny_model(tmp_path):
    """A tiny model saved with a gmm prior (version 0); prior(version) is another whose files tell its version."""
    tokenizer = Tokenizer.train(["the cat sat on the mat", "a dog ran in the park"] * 4, kind="char", vocab_size=300)
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=tokenizer.vocab_size, embed_dim=8, encoder_hidden=8, decoder_hidden=16,
                              latent_dim=2, max_len=16), tokenizer)
    model.priors, model.default_prior = {"gmm": prior(0)}, "gmm"
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model", model.config.to_dict()


def prior(version: int) -> GaussianMixturePrior:
    """A one-component mixture whose mean (in the tensors file) and info (in the JSON file) both hold `version`."""
    return GaussianMixturePrior(torch.ones(1), torch.full((1, 2), float(version)), torch.eye(2)[None],
                                {"version": version})


def version_seen(folder) -> int | None:
    """The version a reader finds in the folder now, checked against config.json's checksums; None: no folder."""
    if not folder.exists():
        return None
    config = checkpoint.read_config(folder / "config.json")
    checkpoint.verify_files(folder, config.checksums)
    return json.loads((folder / "prior-gmm.json").read_text())["version"]


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_add_prior_leaves_one_whole_version_at_every_step(tiny_model, swap):
    folder, fields = tiny_model

    def update_watched():
        if swap == "two renames":
            atomic.exchange = lambda a, b: False
        seen = []
        before_each_change(lambda: seen.append(version_seen(folder)))
        checkpoint.add_prior(folder, prior(1), "gmm", fields, "gmm")
        seen.append(version_seen(folder))
        steps = [version for n, version in enumerate(seen) if n == 0 or version != seen[n - 1]]
        assert steps == ([0, 1] if swap == "exchange" else [0, None, 1]), steps  # a gap only between two renames
        assert len(seen) > 10, "too few operations observed"
    assert child_status(update_watched) == 0
    assert version_seen(folder) == 1


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_a_model_loaded_while_its_prior_is_refitted_is_one_whole_version(tiny_model, swap, monkeypatch):
    folder, fields = tiny_model
    if swap == "two renames":
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    done, loaded, errors = threading.Event(), [], []

    def read_in_a_loop():
        while not done.is_set():
            try:
                gmm = TextVAE.from_pretrained(folder).priors["gmm"]
                loaded.append((gmm.info["version"], gmm.state()["means"][0, 0].item()))
            except Exception as e:
                errors.append(e)
    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        for version in range(1, 21):
            checkpoint.add_prior(folder, prior(version), "gmm", fields, "gmm")
            finished = len(loaded) + len(errors)
            while len(loaded) + len(errors) == finished and reader.is_alive():  # the load under way ends
                time.sleep(0.001)  # before the next swap: it straddles one swap at most, as a fit-prior's would
    finally:
        done.set()
        reader.join()
    assert not errors and len(loaded) > 5 and all(version == mean for version, mean in loaded)

# --- a write that runs out of space ----------------------------------------------------------------------------


def under_file_size_limit(limit: int, work) -> None:
    """work() in a child whose writes past `limit` bytes of a file fail with EFBIG, as on a full disk."""
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        work()
    assert child_status(limited) == 0


def test_a_file_write_cut_short_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "report.json", "old")

    def write_too_much():
        with pytest.raises(DiskFull, match=f"writing {tmp_path / 'report.json'}: .*the previous version is unchanged"):
            write_text(tmp_path / "report.json", "x" * 2000)
    under_file_size_limit(1000, write_too_much)
    assert names(tmp_path) == ["report.json"] and (tmp_path / "report.json").read_text() == "old"


def test_an_append_cut_short_leaves_whole_records(tmp_path):
    log_path = tmp_path / "metrics.jsonl"

    def append_until_cut():
        with open(log_path, "wb", buffering=0) as log:
            append_whole(log, b"x" * 99 + b"\n")
            append_whole(log, b"y" * 99 + b"\n")
            with pytest.raises(OSError, match="File too large") as error:
                append_whole(log, b"z" * 99 + b"\n")  # 50 of its bytes fit under the limit
            assert error.value.filename == str(log_path)
    under_file_size_limit(250, append_until_cut)
    assert log_path.read_bytes() == b"x" * 99 + b"\n" + b"y" * 99 + b"\n"
