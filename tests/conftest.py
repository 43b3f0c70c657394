"""Shared fixtures: tiny chinese-poetry sources written in the upstream JSON layout."""

import json
import tarfile

import pytest
import torch

# Where the poem files and the 平仄 strains files sit: the npm package (and its extracted folder) vs a
# clone of the GitHub repository.
LAYOUTS = {"npm": ("package/dist/quantangshi", "package/dist/strains/json"),
           "github": ("全唐诗", "strains/json")}


def _write(path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content, ensure_ascii=False, indent=4), encoding="utf-8")


@pytest.fixture
def make_source(tmp_path):
    """make_source(files, strains=None, kind="folder", name="src") -> the source path.

    `files` and `strains` map a name such as "poet.tang.0.json" (or "error/poet.tang.0.json") to its
    content: JSON-able records, or a str/bytes written as is. `kind` is "tarball" (what `npm pack`
    downloads), "folder" (that tarball extracted) or "github" (a clone of the repository).
    """
    def make(files, strains=None, kind="folder", name="src"):
        root = tmp_path / name
        poem_dir, strains_dir = LAYOUTS["github" if kind == "github" else "npm"]
        for file, content in files.items():
            _write(root / poem_dir / file, content)
        for file, content in (strains or {}).items():
            _write(root / strains_dir / file, content)
        if kind != "tarball":
            return root
        tarball = tmp_path / f"{name}.tgz"
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(root / "package", arcname="package")
        return tarball
    return make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on 2 shared cores threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
