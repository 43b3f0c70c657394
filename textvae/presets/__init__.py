"""Training recipes by name: one JSON file each in this folder, in run_config.json's shape plus a one-line
description ({"description": ..., "model": {...}, "train": {...}}). `textvae train --preset NAME` starts
from one, flags and a --config file override it, and bare `textvae train` uses DEFAULT.
"""

from pathlib import Path
from typing import NamedTuple

from textvae.checkpoint import read_run_config

DEFAULT = "poem"
FOLDER = Path(__file__).resolve().parent


class Preset(NamedTuple):
    model: dict  # flat VAEConfig fields
    train: dict  # TrainConfig fields
    description: str


def _read(path: Path) -> Preset:
    config = read_run_config(path, extra=("description",))
    return Preset(config["model"], config["train"], config["description"])


PRESETS = {path.stem: _read(path) for path in sorted(FOLDER.glob("*.json"), key=lambda path: path.stem)}

__all__ = ["DEFAULT", "PRESETS", "Preset"]
