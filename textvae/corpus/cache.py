"""The download cache of corpus sources: a file is downloaded into a staging folder beside its cached name,
checked, then renamed into place, so the cache never holds a partial or unchecked download."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from textvae.errors import TextVAEError


def default_cache_dir() -> Path:
    """$TEXTVAE_CACHE, else $XDG_CACHE_HOME/textvae, else ~/.cache/textvae."""
    if "TEXTVAE_CACHE" in os.environ:
        return Path(os.environ["TEXTVAE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "textvae"


def cached_download(name: str, download: Callable[[Path], Path], check: Callable[[Path], None],
                    cache_dir: Path | None = None) -> Path:
    """The cached file `name`, first fetched by `download(staging_folder) -> path` and passed by `check`
    (which raises on a bad file) if the cache lacks it."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_dir / name
    if not cached.exists():
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
        except OSError as e:
            raise TextVAEError(f"cannot write the corpus cache {cache_dir}: {e}. Set TEXTVAE_CACHE "
                               "or pass --cache-dir to a writable folder.") from e
        try:
            downloaded = download(staging)
            check(downloaded)
            os.replace(downloaded, cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cached
