"""One writer per folder (textvae.locking): a second process is refused with the holder's PID, a killed
holder never blocks, and each writing command stops before any work while another process holds its target."""

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_text import prepare_corpus, train_model

from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.locking import lock_path, writer_lock

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]

# a child process that takes and releases writer locks as told on stdin, answering each line with "ok"
HOLDER = """
import contextlib, sys
from textvae.locking import writer_lock
held = {}
for line in sys.stdin:
    verb, path = line.rstrip("\\n").split(" ", 1)
    if verb == "lock":
        held[path] = contextlib.ExitStack()
        held[path].enter_context(writer_lock(path))
    else:
        held.pop(path).close()
    print("ok", flush=True)
"""


class Holder:
    """Another process that holds writer locks while the test asks it to."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.pid = self.process.pid

    def tell(self, verb: str, path: Path) -> None:
        self.process.stdin.write(f"{verb} {path}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "ok\n", "the holder process failed"

    @contextlib.contextmanager
    def holding(self, path: Path):
        self.tell("lock", path)
        try:
            yield
        finally:
            self.tell("release", path)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def holder():
    started = Holder()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def shared_holder():
    started = Holder()
    yield started
    started.stop()


def is_locked(target: Path) -> bool:
    """Whether some open file holds the lock (a second open file of this process counts as another)."""
    with open(lock_path(target), "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # closing f lets go


def test_a_second_process_is_refused_until_the_first_lets_go(holder, tmp_path):
    target = tmp_path / "run"
    with holder.holding(target):
        assert lock_path(target) == tmp_path / ".run.lock"  # beside the target, never inside it
        with pytest.raises(TextVAEError) as refused:
            with writer_lock(target, "choose another --run-dir"):
                pytest.fail("two writers held one lock")
        message = str(refused.value)
        assert "\n" not in message and str(target) in message and f"PID {holder.pid}" in message
        assert message.endswith("wait for it to finish, or choose another --run-dir")
        assert not target.exists()
    with writer_lock(target):
        assert lock_path(target).read_text() == f"{os.getpid()}\n"
    assert lock_path(target).exists() and not is_locked(target)  # kept on release, and free


def test_a_killed_holder_never_blocks(holder, tmp_path):
    target = tmp_path / "data" / "x"  # the parent is made for the lock file
    holder.tell("lock", target)
    assert is_locked(target)
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait()
    with writer_lock(target):
        assert is_locked(target)


def test_a_process_may_take_its_own_lock_again(tmp_path):
    target = tmp_path / "model"
    with writer_lock(target):
        with writer_lock(tmp_path / "." / "model"):  # as the library does under a command that holds it
            pass
        assert is_locked(target)  # the inner release left the outer one holding
    assert not is_locked(target)


def test_a_filesystem_without_locks_writes_unguarded_with_a_warning(tmp_path, monkeypatch):
    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.warns(UserWarning, match="cannot lock .*No locks available"):
        with writer_lock(tmp_path / "run"):
            written = True
    assert written

# --- each writing command, through the CLI ---------------------------------------------------------------


def corpus_lines(n: int = 400) -> list[str]:
    words = "spring river moon wind flower bird cloud rain hill boat".split()
    return [" ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 5)) + f" {i}" for i in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_corpus(tmp_path_factory.mktemp("data"), corpus_lines())


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return train_model(data_dir, tmp_path_factory.mktemp("runs"))


def copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# per command: (the target it writes, made from the fixtures; its arguments; the first piece of work it does)
COMMANDS = {
    "train": (lambda tmp, data, model: copy(model.parent, tmp / "run"),
              lambda target, data, model: ["train", "--resume", "--run-dir", str(target), "--max-steps", "8"],
              "textvae.data.load"),
    "prepare text": (lambda tmp, data, model: copy(data, tmp / "out" / "tiny"),
                     lambda target, data, model: ["prepare", "text", str(data.parent / "corpus.txt"), "--out",
                                                  str(target.parent), "--name", "tiny", "--tokenizer", "char",
                                                  "--vocab-size", "300"],
                     "textvae.corpus.parse_text_files"),
    "fit-prior": (lambda tmp, data, model: copy(model, tmp / "model"),
                  lambda target, data, model: ["fit-prior", str(target), "--data", str(data), "--max-points", "100"],
                  "textvae.evaluate.load"),
    "fit-attributes": (lambda tmp, data, model: copy(model, tmp / "model"),
                       lambda target, data, model: ["fit-attributes", str(target), "--data", str(data)],
                       "textvae.evaluate.load"),
    "export": (lambda tmp, data, model: tmp / "exported",
               lambda target, data, model: ["export", str(model), str(target)],
               "textvae.generate.load_model"),
    "evaluate --out": (lambda tmp, data, model: tmp / "eval.json",
                       lambda target, data, model: ["evaluate", str(model), "--data", str(data), "--out", str(target)],
                       "textvae.evaluate.load"),
    # MODEL/eval.json: the model folder's lock, as fit-prior and fit-attributes swap that folder whole
    "evaluate": (lambda tmp, data, model: copy(model, tmp / "model"),
                 lambda target, data, model: ["evaluate", str(target), "--data", str(data)],
                 "textvae.evaluate.load"),
}


def state(target: Path) -> dict:
    """The bytes and modification time of the target and of everything in and beside it, but its lock file."""
    return {str(p): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in target.parent.rglob("*") if p != lock_path(target)}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_writer_is_refused_before_any_work(command, shared_holder, data_dir, model_dir, tmp_path, capsys,
                                                monkeypatch):
    make_target, make_argv, first_work = COMMANDS[command]
    target = make_target(tmp_path, data_dir, model_dir)
    if command == "evaluate --out":
        target.write_text("the previous report\n")
    before = state(target)

    def work(*args, **kwargs):
        raise AssertionError(f"{command} began its work while another process held {target}")
    monkeypatch.setattr(first_work, work)
    with shared_holder.holding(target):
        with pytest.raises(SystemExit) as exit_info:
            main(make_argv(target, data_dir, model_dir))
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert str(target) in lines[0] and f"PID {shared_holder.pid}" in lines[0]
    assert state(target) == before


def test_the_lock_files_are_ignored_by_git():
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("needs git and this repository")
    locks = [str(lock_path(ROOT / target).relative_to(ROOT)) for target in
             ("data/pretrained", "data/faithful", "data/poems", "runs/poem", "eval-poem.json", "data/pretrained/x")]
    shipped = ["data/pretrained/config.json", "data/faithful/model.safetensors"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *locks, *shipped], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == locks  # the shipped models' files stay tracked
