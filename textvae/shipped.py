"""The models that ship with textvae, by short name: `poem` (the default, data/pretrained) and `faithful`
(data/faithful), and the prepared poem corpus beside them (data/poems, once `textvae prepare poems` ran).

They live in the data/ folder of the repository the package is installed from (`pip install -e .` in a
clone), so a name resolves through the package's own location and works from any folder, in the CLI, the
studio and `TextVAE.from_pretrained`. A folder of that name in the current folder wins (a user's own `poem/`).
"""

from pathlib import Path

from textvae.errors import TextVAEError

REPOSITORY = Path(__file__).resolve().parent.parent  # the clone the package is installed from
SHIPPED = {"poem": "pretrained", "faithful": "faithful"}  # short name -> folder under data/
DEFAULT = "poem"


def shipped_dirs() -> dict[str, Path]:
    return {name: REPOSITORY / "data" / folder for name, folder in SHIPPED.items()}


def resolve(model: str | Path) -> Path:
    """A model folder's path: `model` itself, or for a short name that no folder here has, the shipped model."""
    path = Path(model)
    if str(model) not in SHIPPED or path.exists():
        return path
    folder = shipped_dirs()[str(model)]
    if not folder.is_dir():
        raise TextVAEError(f"the shipped model {model!r} is not installed: it lives in data/{SHIPPED[str(model)]} "
                           f"of a textvae clone, and this textvae runs from {REPOSITORY}. Install it with "
                           "`pip install -e .` in a clone, or give a model folder's path")
    return folder


def shipped_name(directory: str | Path) -> str | None:
    """The short name of a shipped model's folder, however it is reached; None for any other folder."""
    try:
        found = Path(directory).resolve()
    except OSError:
        return None
    return next((name for name, folder in shipped_dirs().items() if folder.resolve() == found), None)


def default_dataset(given: Path) -> Path:
    """The prepared poem corpus: `given` where it is one, else the repository's data/poems where that is."""
    repository_copy = REPOSITORY / "data" / "poems"
    if (given / "dataset").is_dir() or not (repository_copy / "dataset").is_dir():
        return given
    return repository_copy


__all__ = ["DEFAULT", "REPOSITORY", "SHIPPED", "default_dataset", "resolve", "shipped_dirs", "shipped_name"]
