"""The one precision setting of training, evaluation and generation: `precision` = auto | fp32 | bf16.

bf16: matrix products and recurrences run in bfloat16, while losses, log-softmax/softmax statistics and
accumulations stay fp32. auto: bf16 where the hardware has native bf16 (a CUDA GPU that supports it, or a
CPU with the avx512_bf16 or amx_bf16 flags), else fp32. Training and evaluation get bf16 through autocast
(`autocast_for`); generation decodes with a bf16 copy of the decoder instead (generate.decode), since
autocast would re-cast every weight at every step.
"""

import functools
from contextlib import nullcontext
from pathlib import Path

import torch

from textvae.errors import TextVAEError

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PRECISION_HELP = ("auto | fp32 | bf16: bf16 runs matrix products and recurrences in bfloat16, with fp32 losses "
                  "and softmax statistics; auto picks bf16 where the hardware has it natively, else fp32")


def check_precision(precision: str, name: str = "precision") -> None:
    """Raise a one-line TextVAEError unless `precision` is one of PRECISIONS; `name` says whose field it is."""
    if precision not in PRECISIONS:
        raise TextVAEError(f"{name} must be one of {', '.join(PRECISIONS)}, not {precision!r}")


@functools.cache  # autocast_for runs every training step: read /proc/cpuinfo once
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell, so no native bf16
        return frozenset()
    return frozenset(next((line for line in text.splitlines() if line.startswith("flags")), "").split())


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 dot products (AVX512-BF16 or AMX), where a bf16 matmul beats fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The concrete choice, fp32 or bf16, that `precision` means on `device`."""
    check_precision(precision)
    if precision != "auto":
        return precision
    device = torch.device(device)
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_has_bf16()
    return "bf16" if native else "fp32"


def autocast_for(precision: str, device: torch.device | str):
    """bf16 autocast on `device` when `precision` resolves to bf16 there, else a context that does nothing."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
