"""A full disk, recognised in whatever a writer raises, and the one line that says so.

Python's own writes and pyarrow's (datasets) raise OSError ENOSPC (EDQUOT over a quota); safetensors' Rust
writer raises a SafetensorError whose message ends "(os error 28)"; torch.save into a Python file object raises
the OSError or a RuntimeError caused by it (given a path, torch reports only "unexpected pos", so textvae always
hands it a file object). A file size limit (`ulimit -f`, RLIMIT_FSIZE) fails a write the same way with EFBIG:
the tests use it as a full disk that needs no mount.
"""

import errno
import os
import re

from textvae.errors import TextVAEError

# what each error is called on the one line, and what to do about it
_WORDING = {
    errno.ENOSPC: ("the disk is full", "free some space and run again"),
    errno.EDQUOT: ("the disk is full", "free some space and run again"),
    errno.EFBIG: ("the disk is full or a file size limit was reached",
                  "free some space or raise the limit (ulimit -f) and run again"),
}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust's std::io::Error ends an OS error's message


def full_disk_errno(error: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EFBIG where `error`, or an exception it was raised from or while handling, is one."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = error.errno if isinstance(error, OSError) else None
        if not code and (match := _RUST_OS_ERROR.search(str(error))):
            code = int(match.group(1))
        if code in _WORDING:
            return code
        error = error.__cause__ or error.__context__
    return None


def describe(code: int, where: str | os.PathLike | None, outcome: str = "") -> str:
    """The line for a full disk met writing `where`, with what it left (`outcome`) where that is known."""
    what, advice = _WORDING[code]
    place = f" writing {where}" if where else ""
    return f"{what} ({os.strerror(code)}){place}: {advice}" + (f"; {outcome}" if outcome else "")


class DiskFull(TextVAEError):
    """A write of `where` ran out of space; raised by the atomic writers, which leave the previous version (or,
    where there was none, nothing) and say so."""

    def __init__(self, code: int, where, existed: bool):
        outcome = "the previous version is unchanged" if existed else "nothing is left half-written"
        super().__init__(describe(code, where, outcome))
