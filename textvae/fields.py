"""Config fields: a field's help text lives in its metadata, and every config checks its values here.

`setting(default, "help")` declares a field of a frozen config dataclass; the CLI builds each flag's help
from that metadata (`help_of`). The `check_*` functions are what each config's `__post_init__` calls, so
the CLI, the Python API and config files all get the same one-line errors: the value must have the right
type, be finite, and lie within a range that fits a machine (an upper bound on every size and count).
A kind of encoder, posterior, decoder or output layer names the frozen dataclass of its own knobs in a class
attribute `settings` (`NoSettings` where it has none); `knobs` lists them.
"""

import dataclasses
import math
import re

from textvae.errors import TextVAEError

SEED_LIMIT = 2**32  # seeds are folded into 64-bit arithmetic (train.seed_step): keep them to 32 bits
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def setting(default, help: str):
    """A dataclass field whose help text the CLI reads: one place for the default and the words."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a kind that has no knobs of its own."""


def knobs(settings_cls) -> tuple[str, ...]:
    """The names of the knobs a settings dataclass holds."""
    return tuple(f.name for f in dataclasses.fields(settings_cls))


def help_of(cls) -> dict[str, str]:
    """{field name: help text} of a config dataclass."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _fail(config, name: str, value, requirement: str):
    raise TextVAEError(f"{type(config).__name__}.{name} must be {requirement}, not {value!r}")


def check_int(config, name: str, low: int, high: int) -> None:
    """An integer field in [low, high]."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(config, name, value, f"an integer from {low:,} to {high:,}")


def check_float(config, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    """A finite number in [low, high], or with low_open / high_open that end left out."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(config, name, value, "a finite number")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        _fail(config, name, value, f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")


def check_choice(config, name: str, choices) -> None:
    value = getattr(config, name)
    if value not in choices:
        _fail(config, name, value, f"one of {', '.join(map(str, choices))}")


def check_device(config, name: str = "device") -> None:
    """auto, cpu, cuda or cuda:N; whether CUDA is present is checked where the device is opened."""
    value = getattr(config, name)
    if not isinstance(value, str) or not _DEVICE.match(value):
        _fail(config, name, value, "auto, cpu, cuda or cuda:N")
