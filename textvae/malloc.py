"""Keep freed large blocks in the heap instead of returning them to the OS (glibc only).

A training step allocates (N, V) logits and gradient buffers of tens of MB. glibc serves blocks that large
with mmap and unmaps them on free, so every step faults the same memory back in, page by page: on 2 cores of
an AVX2 AMD EPYC that was about half of a step. With mmap disabled and a large trim threshold the blocks stay
in the heap and are reused (1.7x tokens/s for the full-softmax poem model on those 2 AVX2 cores, nothing else
changed; 1.6-1.9x on 2 cores of an AVX512-BF16 AMD EPYC).
`TEXTVAE_MALLOC=system` in the environment leaves glibc's defaults (the speed benchmark's reference uses
it); non-glibc systems are left alone.
"""

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap top before giving it back


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when glibc took them."""
    if os.environ.get("TEXTVAE_MALLOC") == "system":
        return False
    libc = _libc()
    if libc is None:
        return False
    # mallopt returns 1 on success, 0 on failure
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
