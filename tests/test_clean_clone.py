"""A new user's first commands, run as they would run them: in a clean clone of this repository with the
package installed into a virtual environment there, one command at a time, each a fresh `textvae` process.

The clone holds what is committed, plus the working tree's uncommitted changes (committed in the clone), so
the test checks the tree under test. The virtual environment sees this interpreter's site-packages folders as
plain path entries (a .pth file), so the installed dependencies are reused, only textvae itself is installed,
and this interpreter's own editable textvae stays out of sight (the .pth files of those folders do not run).
Marked `corpus`: `prepare poems` downloads the chinese-poetry package with npm (85 MB, cached in
~/.cache/textvae). About 90 s on 2 cores.
"""

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_HOUR = [  # each must exit 0, in this order, from the clone's root
    "textvae --version",
    "textvae prepare poems",
    "textvae train --preset poem --max-steps 20",
    "textvae sample poem -n 3",
    "textvae evaluate runs/poem/best --max-examples 20",
    "textvae evaluate poem --max-examples 20",
]
pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(not (ROOT / ".git").exists() or not shutil.which("git"),
                                 reason="needs git and this repository's history to clone")]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def clean_clone(into: Path) -> Path:
    """A clone of HEAD with the working tree's changes to tracked files and its new unignored files committed."""
    clone = into / "textvae"
    git("clone", "--quiet", str(ROOT), str(clone), cwd=into)
    changed = git("ls-files", "--modified", "--others", "--exclude-standard", cwd=ROOT).split("\n")
    for name in filter(None, changed):
        target = clone / name
        if (ROOT / name).exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        else:
            target.unlink(missing_ok=True)
    git("add", "-A", cwd=clone)
    if git("status", "--porcelain", cwd=clone).strip():
        git("-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "--quiet", "-m", "working tree",
            cwd=clone)
    return clone


def install(clone: Path) -> dict:
    """The clone installed in its own .venv (as the README does); the environment with its bin/ first."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                         capture_output=True, text=True).stdout.strip()
    Path(own, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(clone)], check=True,
                   capture_output=True)
    return {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}


def run(command: str | list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """One command (a string splits on spaces), which must exit 0."""
    args = command.split() if isinstance(command, str) else command
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def test_a_new_user_s_first_commands_work_in_a_clean_clone_and_leave_it_clean(tmp_path):
    clone = clean_clone(tmp_path)
    env = install(clone)
    found = run(["python", "-c", "import textvae.shipped; print(textvae.shipped.REPOSITORY)"], tmp_path, env).stdout
    assert Path(found.strip()) == clone.resolve()  # the clone's textvae, not this interpreter's
    outputs = {command: run(command, clone, env).stdout for command in FIRST_HOUR}
    assert outputs["textvae --version"].startswith("textvae ")
    assert len(outputs["textvae sample poem -n 3"].splitlines()) == 3
    assert "wrote eval-poem.json" in outputs["textvae evaluate poem --max-examples 20"]
    assert (clone / "runs" / "poem" / "best" / "eval.json").is_file() and (clone / "eval-poem.json").is_file()
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""  # the shipped eval.json untouched

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert len(run("textvae sample -n 2", elsewhere, env).stdout.splitlines()) == 2  # the default model, by name
    run("textvae sample faithful -n 1", elsewhere, env)
