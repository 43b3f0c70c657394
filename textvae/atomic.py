"""Atomic writes: build under a temporary name beside the target, then swap it in.

A crash or SIGKILL at any moment leaves either the previous folder or the new one, never a mix, and so does a
full disk (textvae.diskfull): the failed copy is deleted and the error names the target. On Linux the swap is
one renameat2(RENAME_EXCHANGE) of the two names, after which the old folder (now at the temporary name) is
deleted. Elsewhere, and on filesystems that refuse the exchange, it is two renames (target -> .NAME-old-PID,
temporary -> target), and `recover` puts the old folder back if a process died between them. A killed writer
leaves its temporary folder (.NAME-tmp-XXXXXXXX) or file (.NAME.tmp-PID) behind; `remove_leftovers` deletes
those, matching only the names made here. Readers that open a folder's files one by one can still straddle a
swap: `read_consistently` reads again where the folder changed meanwhile.
"""

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from textvae.diskfull import DiskFull, full_disk_errno
from textvae.errors import TextVAEError


_TMP_SUFFIX = r"[a-z0-9_]{8}"  # what tempfile.mkdtemp appends to its prefix
_LIVE: set[Path] = set()  # this process's temporary folders still being written: never leftovers
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from Linux's fcntl.h and fs.h
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # a kernel or filesystem without it


def _matching(target: Path, pattern: str, is_dir: bool) -> list[Path]:
    """Entries beside `target` whose whole name is `pattern`, of the given kind; symbolic links never match."""
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if re.fullmatch(pattern, p.name) and not p.is_symlink()
                  and (p.is_dir() if is_dir else p.is_file()))


def _old_copies(target: Path) -> list[Path]:
    return _matching(target, re.escape(f".{target.name}-old-") + r"\d+", is_dir=True)


def recover(target: str | Path) -> None:
    """Undo a two-rename swap that was cut between its renames; drop leftovers of a finished one."""
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


@functools.cache
def _renameat2():
    """libc's renameat2 (glibc 2.28+), or None where this system has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap the names of two existing entries of one filesystem in one atomic step, so that each name always
    holds a whole entry; False where the system or the filesystem cannot (the caller swaps another way)."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _swap_in(tmp: Path, target: Path) -> None:
    """Put the finished folder `tmp` at `target`, deleting the folder it replaces."""
    recover(target)
    if not target.exists():
        os.replace(tmp, target)  # one rename: atomic already
    elif exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # the old folder, now at the temporary name
    else:
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)  # at once: `recover` would, but only when the next writer starts
            raise
        shutil.rmtree(old, ignore_errors=True)


def _raise_if_full(error: BaseException, target: Path, existed: bool) -> None:
    """Name the target (not the temporary copy) and what is left, where a full disk stopped the write."""
    code = full_disk_errno(error)
    if code is not None:
        raise DiskFull(code, target, existed) from error


@contextmanager
def _temporary_beside(target: Path):
    """A fresh temporary folder beside `target`, deleted on any error."""
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-tmp-", dir=target.parent))
    except OSError as e:
        _raise_if_full(e, target, existed)
        raise TextVAEError(f"cannot write to {target.parent}: {e}. Choose a writable folder.") from e
    live = tmp.resolve()
    _LIVE.add(live)
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_full(e, target, existed)
        raise
    finally:
        _LIVE.discard(live)


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a fresh temporary folder; on success it replaces `target` whole, on error it is deleted."""
    target = Path(target)
    with _temporary_beside(target) as tmp:
        yield tmp
        set_default_modes(tmp)
        _swap_in(tmp, target)


@contextmanager
def updated_directory(target: str | Path, leave_out=()):
    """Yield a copy of the existing folder `target` beside it, less its top-level entries named in `leave_out`,
    to change there; on success it replaces `target` whole, on error it is deleted. Files are hard-linked where
    the filesystem allows (else copied), so the copy costs no space for files it keeps: replace a file, never
    write into one in place, as that would change the live folder's file too."""
    target = Path(target)
    target = target.resolve() if target.is_symlink() else target  # a link keeps pointing at the new folder
    with _temporary_beside(target) as tmp:
        _link_tree(target, tmp, set(leave_out))
        carried = _identities(tmp)
        yield tmp
        shutil.copystat(target, tmp)  # the folder's own mode, given once it is written (it may be read-only)
        set_default_modes(tmp, keep=carried)
        _swap_in(tmp, target)


def _link_tree(source: Path, copy: Path, leave_out: set[str]) -> None:
    """Fill the empty folder `copy` with `source`'s entries: files linked or copied, links as links, folders
    recursively with their own modes."""
    for entry in os.scandir(source):
        if entry.name in leave_out:
            continue
        to = copy / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), to)
        elif entry.is_dir():
            to.mkdir()
            _link_tree(Path(entry.path), to, set())
            shutil.copystat(entry.path, to)
        else:
            try:
                os.link(entry.path, to)
            except OSError:  # a filesystem without hard links, or a file another user owns
                shutil.copy2(entry.path, to)


def _identities(folder: Path) -> frozenset[tuple[int, int]]:
    return frozenset((s.st_dev, s.st_ino) for s in (p.lstat() for p in [folder, *folder.rglob("*")]))


def read_consistently(folder: str | Path, read, attempts: int = 3):
    """`read()`, which opens files of `folder` one by one, again where a writer swapped the folder meanwhile:
    a read that straddles a swap may pair one version's config.json with the other's files, fail their
    checksums, or find a file gone. An error stands only where the folder stayed the same throughout."""
    for attempt in range(1, attempts + 1):
        before = _folder_version(folder)
        try:
            result = read()
        except (TextVAEError, OSError):
            if attempt == attempts or _folder_version(folder) == before:
                raise
        else:
            if _folder_version(folder) == before:
                return result
        time.sleep(0.01 * attempt)  # a two-rename swap leaves the name empty for a moment
    raise TextVAEError(f"{folder} changed each time it was read: another process keeps writing it; try again "
                       "when it is done")


def _folder_version(folder: str | Path) -> tuple | None:
    """Changes whenever the folder is swapped (a new inode, and a rename sets its ctime) or edited in place."""
    try:
        stat = os.stat(folder)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_ctime_ns, stat.st_mtime_ns


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


def set_default_modes(folder: Path, keep: frozenset[tuple[int, int]] = frozenset()) -> None:
    """The modes mkdir and open would give under the umask: mkdtemp makes 0700, some writers 0600 files. Entries
    in `keep` (device, inode) keep theirs: files linked from a live folder share their mode with it."""
    umask = _umask()
    for path in [folder, *folder.rglob("*")]:
        stat = path.lstat()
        if not path.is_symlink() and (stat.st_dev, stat.st_ino) not in keep:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_file(path: Path, content: bytes, keep: bool) -> Path | None:
    """`content` written under a temporary name beside `path`, then renamed over it (an existing file moved aside
    first by `keep_previous` where `keep`; returns where). On any error the temporary file is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    existed = path.exists()
    try:
        tmp.write_bytes(content)
        kept = keep_previous(path) if keep else None  # only once the new file is whole: a failed write moves nothing
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        _raise_if_full(e, path, existed)
        raise
    return kept


def write_bytes(path: str | Path, content: bytes) -> None:
    """Write a file under a temporary name beside it, then rename: readers see the old or the new file."""
    _write_file(Path(path), content, keep=False)


def write_text(path: str | Path, text: str) -> None:
    """write_bytes of the text in UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def write_keeping_previous(path: str | Path, text: str) -> Path | None:
    """write_text, an existing file moved aside as NAME.<its time>.json (`keep_previous`); returns where it went."""
    return _write_file(Path(path), text.encode("utf-8"), keep=True)


def append_whole(log, line: bytes) -> None:
    """Append `line` to `log`, a file opened unbuffered in binary, whole or not at all: a write that a full disk
    cuts short is undone, so the log never ends in a torn record."""
    end = log.seek(0, os.SEEK_END)
    rest = memoryview(line)
    try:
        while rest:
            rest = rest[log.write(rest):]
    except OSError as e:
        log.truncate(end)
        raise OSError(e.errno, e.strerror, log.name) from e


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
