"""Atomic folder writes: build under a temporary name beside the target, then swap it in by rename.

A crash or SIGKILL at any moment leaves either the previous folder or the new one, never a mix:
the swap is two renames (target -> .NAME-old-*, temporary -> target), and `recover` puts the old
folder back if a process died between them.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from textvae.errors import TextVAEError


def _old_copies(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}-old-*"))


def recover(target: str | Path) -> None:
    """Undo a swap that was cut between its two renames; drop leftovers of a finished one."""
    target = Path(target)
    old = _old_copies(target)
    if old and not target.exists():
        os.replace(old[-1], target)
        old = old[:-1]
    for leftover in old:
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a fresh temporary folder; on success it replaces `target` whole, on error it is deleted."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-tmp-", dir=target.parent))
    except OSError as e:
        raise TextVAEError(f"cannot write to {target.parent}: {e}. Choose a writable folder.") from e
    try:
        yield tmp
        recover(target)
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a file under a temporary name beside it, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
