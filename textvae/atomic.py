"""Atomic folder writes: build under a temporary name beside the target, then swap it in by rename.

A crash or SIGKILL at any moment leaves either the previous folder or the new one, never a mix:
the swap is two renames (target -> .NAME-old-PID, temporary -> target), and `recover` puts the old
folder back if a process died between them. A killed writer leaves its temporary folder (.NAME-tmp-XXXXXXXX)
or file (.NAME.tmp-PID) behind; `remove_leftovers` deletes those, matching only the names made here.
"""

import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from textvae.errors import TextVAEError


_TMP_SUFFIX = r"[a-z0-9_]{8}"  # what tempfile.mkdtemp appends to its prefix
_LIVE: set[Path] = set()  # this process's temporary folders still being written: never leftovers


def _matching(target: Path, pattern: str, is_dir: bool) -> list[Path]:
    """Entries beside `target` whose whole name is `pattern`, of the given kind; symbolic links never match."""
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if re.fullmatch(pattern, p.name) and not p.is_symlink()
                  and (p.is_dir() if is_dir else p.is_file()))


def _old_copies(target: Path) -> list[Path]:
    return _matching(target, re.escape(f".{target.name}-old-") + r"\d+", is_dir=True)


def recover(target: str | Path) -> None:
    """Undo a swap that was cut between its two renames; drop leftovers of a finished one."""
    target = Path(target)
    old = _old_copies(target)
    if old and not target.exists():
        os.replace(old[-1], target)
        old = old[:-1]
    for leftover in old:
        shutil.rmtree(leftover, ignore_errors=True)


def remove_leftovers(*targets: str | Path) -> None:
    """Clean up after writers killed mid-write: `recover` each target, then delete the temporary folders
    and files that `atomic_directory` and `write_text` left beside it. Call it when no other process is
    writing these targets; this process's own folders still being written are kept."""
    for target in map(Path, targets):
        recover(target)
        for folder in _matching(target, re.escape(f".{target.name}-tmp-") + _TMP_SUFFIX, is_dir=True):
            if folder.resolve() not in _LIVE:
                shutil.rmtree(folder, ignore_errors=True)
        for file in _matching(target, re.escape(f".{target.name}.tmp-") + r"\d+", is_dir=False):
            file.unlink(missing_ok=True)


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a fresh temporary folder; on success it replaces `target` whole, on error it is deleted."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-tmp-", dir=target.parent))
    except OSError as e:
        raise TextVAEError(f"cannot write to {target.parent}: {e}. Choose a writable folder.") from e
    live = tmp.resolve()
    _LIVE.add(live)
    try:
        yield tmp
        set_default_modes(tmp)
        recover(target)
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _LIVE.discard(live)


def check_can_write(folder: str | Path, what: str) -> None:
    """A one-line error, before any work, when this process cannot create files in `folder` (or, where it
    does not exist yet, in the nearest folder above it that does). Nothing is created."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise TextVAEError(f"cannot write to {what} {folder}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise TextVAEError(f"cannot write to {what} {folder}: {e.strerror or e}. Choose a writable folder") from e


def _umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return umask


def set_default_modes(folder: Path) -> None:
    """The modes mkdir and open would give under the umask: mkdtemp makes 0700, some writers 0600 files."""
    umask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_bytes(path: str | Path, content: bytes) -> None:
    """Write a file under a temporary name beside it, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """write_bytes of the text in UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def keep_previous(path: Path) -> Path | None:
    """Move an existing report aside as NAME.<its time>.json, never over another file; returns where."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    kept, n = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}")
    os.rename(path, kept)
    return kept


def write_section(path: str | Path, name: str, text: str) -> None:
    """Put `text` between the markers <!-- begin NAME --> and <!-- end NAME --> of a Markdown file (appended,
    with its markers, where it has none yet), leaving the rest of the file as it was; written by rename."""
    path = Path(path)
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    write_text(path, new)
