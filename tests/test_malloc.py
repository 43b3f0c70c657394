import subprocess
import sys

import pytest

from textvae import malloc

# A step-like round (three 32 MiB temporaries, then freed) repeated sixteen times in a fresh process, so
# that the malloc settings of this one do not matter: page faults of the last eight rounds, once the heap
# has settled (aligned allocations took up to six rounds to find reusable space, in 20 runs measured).
FAULTS = """
import resource, sys, torch
from textvae.malloc import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "tuned" else False
for round in range(16):
    if round == 8:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.ones(8 * 1024 * 1024), torch.ones(8 * 1024 * 1024)
    c = a + b
    del a, b, c
print(int(took), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, env: dict | None = None) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, env=env)
    took, count = out.stdout.split()
    return bool(int(took)), int(count)


@pytest.mark.skipif(malloc._libc() is None, reason="not glibc: the settings do not apply")
def test_freed_blocks_are_reused_instead_of_faulted_back_in():
    took, tuned = faults("tuned")
    _, default = faults("default")
    assert took
    pages = 8 * 3 * 32 * 1024 * 1024 // 4096  # eight rounds of 96 MiB
    assert default > 0.9 * pages  # glibc unmaps the blocks, and every round faults them in again
    assert tuned < 0.1 * pages  # the heap keeps them: no new pages


def test_system_setting_in_the_environment_opts_out(monkeypatch):
    monkeypatch.setenv("TEXTVAE_MALLOC", "system")
    assert malloc.keep_freed_memory() is False
