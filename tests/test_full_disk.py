"""A full disk: each writing command, cut off at several points of what it writes, exits 1 with one line that
says the disk is full, and leaves the previous version byte-identical and loadable, with no temporary entry.

Two ways to run out of space, and each test runs under both (the `disk` fixture):
- tmpfs: where this process may mount one (root, as in a container), a small tmpfs in a temporary folder,
  filled to leave k bytes free (whole 4 KiB pages): the kernel's own ENOSPC. Skipped, saying why, elsewhere.
- file size limit: everywhere, RLIMIT_FSIZE in the child that runs the command, so that a write past n bytes of
  any one file fails with EFBIG from the kernel, at exactly that byte.
The budgets are shares of what the command must write at once (SHARES), so every one of them stops it. Each
command runs as `textvae.cli.main` in a forked child with stderr on a pipe: a fresh interpreter would spend
seconds importing torch each time. `test_the_command_line_itself_exits_with_one_line` runs `python -m textvae`
once, the interpreter's exit included.
"""

import ctypes
import gc
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from textvae import data, evaluate
from textvae.cli import main
from textvae.train import TrainConfig, train
from textvae.vae import TextVAE, VAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
PAGE = 4096  # tmpfs counts its space in pages
SHARES = (0.0, 0.3, 0.6, 0.9)  # cut points, as shares of what a command must write at once
TINY = dict(embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=4, max_len=40)
TEMPORARY = re.compile(r"\..+(-tmp-[a-z0-9_]{8}|\.tmp-\d+|-old-\d+)")  # what the atomic writers name their copies
BAR = re.compile(r".*\d+%\|.*\|")  # a tqdm progress bar: "training:  50%|█████     | 5/10 [...]"
FILLER = "filler"
CHILD_SECONDS = 120  # a forked child that hangs is killed after this

# --- the harness: a command run in a child, a disk that fills ------------------------------------------------


def in_child(work, fsize: int | None = None) -> tuple[int, str]:
    """(exit status, stderr) of work() run in a forked child, under a file size limit of `fsize` bytes where given.
    work returns an exit status; an exception is printed as the interpreter would, and exits 1."""
    read, write = os.pipe()
    gc.freeze()  # the child's collection below then walks its own objects only, not a copy of all of pytest's
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read)
            os.dup2(write, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
            signal.alarm(CHILD_SECONDS)
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as Python sets it: EFBIG, not death
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
            status = work()
        except BaseException:
            traceback.print_exc()
        finally:
            gc.collect()  # the finalizers an interpreter's exit would run: files still open flush now
            sys.stderr.flush()
            os._exit(status)
    gc.unfreeze()
    os.close(write)
    with os.fdopen(read, "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), stderr


def cli_status(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def fill(root: Path, free: int) -> None:
    """Leave `free` bytes (a whole number of pages) free on the filesystem of `root`."""
    (root / FILLER).write_bytes(bytes(free_bytes(root) - free))
    assert free_bytes(root) == free


class Disk:
    """A folder where a test puts the previous version, then runs a command with a budget of bytes: free space
    on a tmpfs, or a file size limit."""

    def __init__(self, kind: str, root: Path):
        self.kind, self.root = kind, root

    def budget(self, share: float, sizes: list[int]) -> int:
        """`share` of what a write of files of these sizes needs at once: all of them on a tmpfs (in pages), the
        largest under a per-file limit."""
        if self.kind == "tmpfs":
            return int(share * sum(-(-size // PAGE) for size in sizes)) * PAGE
        return int(share * max(sizes))

    def run(self, argv: list[str], budget: int) -> tuple[int, str]:
        """`textvae ARGV` in a child that may write `budget` bytes."""
        if self.kind == "tmpfs":
            fill(self.root, budget)
            return in_child(lambda: cli_status(argv))
        return in_child(lambda: cli_status(argv), fsize=budget)


def mount_tmpfs(folder: Path, size: int) -> str | None:
    """Mount a tmpfs of `size` bytes at `folder`; the reason it cannot be, or None."""
    if not sys.platform.startswith("linux"):
        return "tmpfs is Linux's"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", os.fsencode(folder), b"tmpfs", 0, f"size={size}".encode()) != 0:
        return f"this process may not mount a tmpfs ({os.strerror(ctypes.get_errno())})"
    return None


def unmount(folder: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(folder), 0) != 0:
        libc.umount2(os.fsencode(folder), 2)  # MNT_DETACH: still busy, let it go when free


@pytest.fixture(params=["tmpfs", "file size limit"])
def disk(request, tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "file size limit":
        yield Disk(request.param, root)
        return
    reason = mount_tmpfs(root, 4 << 20)
    if reason:
        pytest.skip(reason)
    try:
        yield Disk(request.param, root)
    finally:
        unmount(root)

# --- the harness, tested both ways ---------------------------------------------------------------------------


def write_bytes_status(path: Path, n: int) -> int:
    path.write_bytes(bytes(n))
    return 0


def test_a_file_size_limit_stops_a_write_at_its_byte_and_nothing_without_it(tmp_path):
    status, stderr = in_child(lambda: write_bytes_status(tmp_path / "a", 5000), fsize=3000)
    assert status == 1 and "[Errno 27] File too large" in stderr
    assert (tmp_path / "a").stat().st_size == 3000  # the exact cut point
    assert in_child(lambda: write_bytes_status(tmp_path / "b", 5000)) == (0, "")
    assert (tmp_path / "b").stat().st_size == 5000


def test_a_filled_tmpfs_takes_its_free_pages_and_not_a_byte_more(tmp_path):
    (tmp_path / "disk").mkdir()
    reason = mount_tmpfs(tmp_path / "disk", 1 << 20)
    if reason:
        pytest.skip(reason)
    try:
        disk = tmp_path / "disk"
        assert in_child(lambda: write_bytes_status(disk / "roomy", 3 * PAGE)) == (0, "")  # not filled: room
        fill(disk, 2 * PAGE)
        assert in_child(lambda: write_bytes_status(disk / "fits", 2 * PAGE)) == (0, "")
        (disk / "fits").unlink()
        status, stderr = in_child(lambda: write_bytes_status(disk / "too big", 2 * PAGE + 1))
        assert status == 1 and "[Errno 28] No space left on device" in stderr
    finally:
        unmount(tmp_path / "disk")

# --- what each command finds: the previous versions ----------------------------------------------------------


def corpus(seed: int, n: int) -> list[str]:
    """n distinct pseudo-sentences over 12 characters."""
    g = torch.Generator().manual_seed(seed)
    chars = "春夏秋冬山水風月花鳥雲雨"
    texts = set()
    while len(texts) < n:
        length = int(torch.randint(4, 12, (1,), generator=g))
        texts.add("".join(chars[i] for i in torch.randint(0, 12, (length,), generator=g)))
    return sorted(texts)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A dataset (enough validation texts for fit-prior), a model with a fitted prior, a run of 5 steps, a report,
    and a corpus to prepare anew."""
    root = tmp_path_factory.mktemp("made")
    dataset, tokenizer = data.build([dict(text=t) for t in corpus(0, 2000)], kind="char", vocab_size=300)
    data.save(dataset, tokenizer, {}, root / "data")
    (root / "corpus.txt").write_text("\n".join(corpus(1, 800)) + "\n")
    model = TextVAE(VAEConfig(vocab_size=tokenizer.vocab_size, **TINY), tokenizer)
    evaluate.fit_prior(model, dataset, "gmm", components=(1,), max_points=100)
    model.default_prior = "gmm"
    model.save_pretrained(root / "model")
    train(VAEConfig.from_dict(TINY), TrainConfig(data_dir=str(root / "data"), run_dir=str(root / "run"), max_steps=5,
                                                 batch_size=8, eval_every=5, log_every=1, warmup_steps=1, device="cpu"))
    (root / "eval.json").write_text(json.dumps({"report": "the previous one"}) + "\n")
    return root


WRITERS = ("train", "prepare", "fit-prior", "export", "evaluate")
TARGETS = {"train": "run", "prepare": "data", "fit-prior": "model", "export": "exported", "evaluate": "eval.json"}


def place_previous(writer: str, made: Path, disk: Path) -> tuple[Path, list[str]]:
    """Copy the previous version the writer's command finds onto the disk (export finds none); returns the
    target and the command, whose new output differs from the previous version."""
    target = disk / TARGETS[writer]
    if writer in ("train", "prepare", "fit-prior"):
        shutil.copytree(made / target.name, target, symlinks=True)
    elif writer == "evaluate":
        shutil.copy2(made / "eval.json", target)
    argv = {"train": ["train", "--resume", "--run-dir", str(target), "--max-steps", "10"],
            "prepare": ["prepare", "text", str(made / "corpus.txt"), "--out", str(disk), "--name", target.name,
                        "--tokenizer", "char", "--vocab-size", "300"],
            "fit-prior": ["fit-prior", str(target), "--data", str(made / "data"), "--max-points", "100",
                          "--components", "2"],
            "export": ["export", str(made / "model"), str(target)],
            "evaluate": ["evaluate", str(made / "model"), "--data", str(made / "data"), "--out", str(target), "-n",
                         "2", "--iw-samples", "2"]}[writer]
    return target, argv


def written_at_once(writer: str, target: Path, before: dict) -> list[int]:
    """The sizes of the files that the writer's largest single write brings in: the new checkpoint last/ (train),
    the files a fit adds to the model's new folder (it hard-links the others), the whole new folder or file."""
    if writer == "evaluate":
        return [target.stat().st_size]
    folder = target / "last" if writer == "train" else target
    files = [p for p in folder.rglob("*") if p.is_file()]
    if writer == "fit-prior":
        files = [p for p in files if before.get(str(p.relative_to(target.parent))) != p.read_bytes()]
    return [p.stat().st_size for p in files]


@pytest.fixture(scope="module")
def sizes(made, tmp_path_factory):
    """Per writer, the sizes of the files it must write at once, from a run with room to spare (which also shows
    that the harness, not armed, lets each command succeed); the budgets are shares of these."""
    found = {}
    for writer in WRITERS:
        room = tmp_path_factory.mktemp(f"room-{writer}")
        target, argv = place_previous(writer, made, room)
        before = snapshot(room)
        status, stderr = in_child(lambda: cli_status(argv))
        assert status == 0 and not error_lines(stderr), stderr
        found[writer] = written_at_once(writer, target, before)
    return found

# --- the checks ----------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict:
    """Every file under `root` by path, with its bytes, but the filler and the lock files."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != FILLER and not p.name.endswith(".lock")}


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not progress bars (a bar redraws itself on one line with carriage returns)."""
    return [line for line in stderr.split("\n")
            if line.strip() and not all(BAR.match(part) or not part.strip() for part in line.split("\r"))]


def check_still_loads(writer: str, target: Path) -> None:
    if writer == "train":
        for folder in ("last", "best"):
            TextVAE.from_pretrained(target / folder)
        json.loads((target / "run_config.json").read_text())
        for line in (target / "metrics.jsonl").read_text().splitlines():
            json.loads(line)  # no torn record
    elif writer == "prepare":
        data.load(target)
    elif writer == "fit-prior":
        TextVAE.from_pretrained(target)
    elif writer == "evaluate":
        json.loads(target.read_text())
    else:
        assert not target.exists()


@pytest.mark.parametrize("share", SHARES)
@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_leaves_the_previous_version_and_says_so_in_one_line(writer, share, disk, made, sizes):
    target, argv = place_previous(writer, made, disk.root)
    before = snapshot(disk.root)
    status, stderr = disk.run(argv, disk.budget(share, sizes[writer]))
    lines = error_lines(stderr)
    assert status == 1 and len(lines) == 1 and lines[0].startswith("error: the disk is full"), stderr
    after = snapshot(disk.root)
    if writer == "train":  # what a resumed run wrote before the write that failed stays, as on any stop:
        assert after.pop("run/metrics.jsonl").startswith(before.pop("run/metrics.jsonl"))  # its records,
        for name in ("run/run_config.json", *[n for n in {*before, *after} if n.startswith("run/best/")]):
            after.pop(name, None), before.pop(name, None)  # its settings, and best/ where it improved first
    assert after == before
    assert not [p for p in disk.root.rglob("*") if TEMPORARY.fullmatch(p.name)]
    check_still_loads(writer, target)


def test_the_command_line_itself_exits_with_one_line(made, sizes, tmp_path):
    """`python -m textvae`, stopped in a checkpoint write with its progress bar and metrics log open: what the
    interpreter prints as it exits counts too."""
    target, argv = place_previous("train", made, tmp_path)
    before = snapshot(target / "last")
    limit = Disk("file size limit", tmp_path).budget(0.6, sizes["train"])

    def limited():  # Python ignores SIGXFSZ from its start: the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    done = subprocess.run([sys.executable, "-m", "textvae", *argv], preexec_fn=limited, capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=CHILD_SECONDS)
    assert done.returncode == 1 and error_lines(done.stderr) == [
        f"error: the disk is full or a file size limit was reached (File too large) writing {target / 'last'}: free "
        "some space or raise the limit (ulimit -f) and run again; the previous version is unchanged"], done.stderr
    assert snapshot(target / "last") == before
