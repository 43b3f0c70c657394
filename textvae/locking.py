"""One writer per folder: an advisory lock that a second textvae process writing the same target runs into.

`writer_lock(target)` holds `flock(LOCK_EX | LOCK_NB)` on `.NAME.lock` beside the target (in its parent, never
inside a folder that may be swapped whole), with the holder's PID written in it. A second process is refused
with a TextVAEError naming the target and that PID. The OS drops a flock lock with the process that held it,
so the lock of a killed writer never blocks. The lock file is not deleted on release (it keeps the last holder's
PID): a process that had opened it just before would then lock the deleted file while a third created and locked
a new one, two writers again. The lock is advisory: it stops textvae processes, not other programs. Where the
filesystem cannot lock (or the lock file cannot be created), the write goes on unguarded, with a warning:
refusing would make textvae unusable there, while a second writer is rare.
"""

import fcntl
import os
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

from textvae.errors import TextVAEError

_HELD: set[Path] = set()  # lock files this process holds: a command locks before its work, the library again
PID_WAIT_SECONDS = 0.5  # how long a refused process waits for the PID in a lock file just made


def lock_path(target: str | Path) -> Path:
    """Where the lock of `target` lies: `.NAME.lock` in its parent, by the parent's real path, so that two
    spellings of one folder (`runs/x`, `./runs/../runs/x`, `.` inside it) share one lock."""
    target = Path(os.path.abspath(target))  # lexically: `.` and `..` name their folders
    return target.parent.resolve() / f".{target.name}.lock"


def _holder(fd: int) -> str:
    """The PID written in the lock file; the first holder of a new lock file may not have written it yet."""
    deadline = time.monotonic() + PID_WAIT_SECONDS
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text or time.monotonic() > deadline:
            return f"PID {text}" if text.isdigit() else "PID unknown"
        time.sleep(0.01)


def _unguarded(target: Path, error: OSError) -> None:
    warnings.warn(f"cannot lock {target} ({error.strerror or error}): a second textvae process writing it at the "
                  "same time would not be stopped")


def _take(lock: Path, target: Path, instead: str | None) -> int | None:
    """The open, locked lock file holding this PID; None where locking is impossible here."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        _unguarded(target, e)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise TextVAEError(f"{target} is being written by another textvae process ({holder}): wait for it to "
                           f"finish{f', or {instead}' if instead else ''}") from None
    except OSError as e:  # e.g. ENOLCK or EOPNOTSUPP on a network filesystem without locks
        os.close(fd)
        _unguarded(target, e)
        return None
    with suppress(OSError):  # on a full disk the lock holds without its PID: a refused process says "PID unknown"
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextmanager
def writer_lock(target: str | Path, instead: str | None = None):
    """Hold the lock of `target` (a folder or a file) for the body; refuse with a TextVAEError while another
    process holds it. `instead` is the other way out the refusal offers, e.g. "choose another --run-dir".
    Taking a lock this process already holds is a no-op: a process is one writer."""
    target = Path(target)
    lock = lock_path(target)
    fd = None if lock in _HELD else _take(lock, target, instead)
    if fd is None:  # held already, or unguarded
        yield
        return
    _HELD.add(lock)
    try:
        yield
    finally:
        _HELD.discard(lock)
        os.close(fd)  # releases the lock; the PID stays, for a process refused just before to read
