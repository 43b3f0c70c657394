"""Two writers, one target: per writing command, start a real `textvae` process (A) on a tiny target, wait until
it holds the target's lock (textvae.locking), start a second one (B) on the same target, and check that B is
refused while A finishes as if it had been alone.

    python scripts/two_writers.py                                 # 20 trials of each of 5 commands (~10 min)
    python scripts/two_writers.py --trials 2 --out /tmp/two_writers.json

- setup: a generated corpus prepared by `textvae prepare text` (char tokenizer) and a tiny Gaussian VAE trained on
  it, in a temporary folder; fp32 on the CPU, one torch thread per process. Export copies a larger model (7.7M
  weights, one step trained), whose load and save take ~150 ms: the tiny one's take ~10 ms, less than B's arrival.
- commands: train (a new run dir), prepare (a new dataset folder), fit-prior (a fresh copy of the model folder),
  export (a new folder), evaluate --out (a new report file). Each is first run alone: the solo reference.
- a trial: B starts first, imports textvae and waits on its stdin; A starts as `python -m textvae ...`; the moment
  A's PID is in the lock file, B is let go into the CLI's `main` with the same arguments. (Started only then, B
  would spend ~2 s importing while a tiny A finishes, and meet no lock at all.)
- refused: B exits with status 1 and exactly one stderr line, `error: ...`, naming the target and A's PID.
  identical: A exits 0 and its output equals the solo run's: every file's bytes, except JSON compared without
  timing keys (tokens_per_s, train_seconds, seconds) and the run dir's own path, metrics.jsonl likewise per
  record, and trainer_state.pt by its tensors' bits without train_seconds. Each trial's JSON record also says
  whether A was still running when B was let go (a B not refused while A ran would be a failed lock).
Prints a per-command table, writes JSON (--out) and exits 1 unless every trial was refused and identical.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from textvae.atomic import write_text
from textvae.locking import lock_path

IGNORED_KEYS = ("tokens_per_s", "train_seconds", "seconds", "run_dir")  # wall-clock figures, and the run's own path
POLL_SECONDS = 0.001
MODEL = ["--embed-dim", "32", "--encoder-hidden", "32", "--decoder-hidden", "64", "--latent-dim", "8",
         "--max-len", "64", "--posterior", "gaussian", "--output-layer", "full", "--device", "cpu", "--precision",
         "fp32", "--batch-size", "32", "--warmup-steps", "5", "--kl-warmup-steps", "20", "--log-every", "5"]
# B: the CLI's own entry point, its imports done before the go
WAITING_MAIN = "import sys; from textvae.cli import main; print('ready', flush=True); sys.stdin.readline(); main()"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models gain nothing from threads; 2 processes share 2 cores


def textvae(*argv: str, log: Path) -> None:
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "textvae", *argv], env=child_env(), stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"`textvae {' '.join(argv)}` failed (exit {done.returncode}); see {log}")

# -----------------------------------------------------------------------------
# the tiny corpus, model and targets


def write_corpus(path: Path, lines: int) -> None:
    """Short sentences from a small grammar (35,000 of them): a char vocabulary of ~30."""
    rng = random.Random(0)
    words = dict(subject="the cat|a dog|my friend|the old man|a bird|the child|her sister|the farmer|our teacher",
                 verb="sees|likes|follows|paints|finds|hears|carries|watches|draws",
                 adjective="|red |quiet |tall |small |green |broken |golden ",
                 thing="moon|river|door|apple|mountain|boat|garden|song|lamp",
                 tail="| at night| in spring| every day| by the sea| again| slowly")
    choices = {key: value.split("|") for key, value in words.items()}
    path.write_text("".join(f"{rng.choice(choices['subject'])} {rng.choice(choices['verb'])} the "
                            f"{rng.choice(choices['adjective'])}{rng.choice(choices['thing'])}"
                            f"{rng.choice(choices['tail'])}\n" for _ in range(lines)))


def setup(workdir: Path, lines: int) -> dict:
    """The corpus, its prepared dataset and a trained model that the commands read."""
    write_corpus(workdir / "corpus.txt", lines)
    textvae("prepare", "text", str(workdir / "corpus.txt"), "--out", str(workdir), "--name", "tiny", "--tokenizer",
            "char", "--vocab-size", "300", log=workdir / "setup-prepare.log")
    textvae("train", "--data-dir", str(workdir / "tiny"), "--run-dir", str(workdir / "model"), *MODEL,
            "--max-steps", "20", "--eval-every", "10", log=workdir / "setup-train.log")
    # export's whole work is a load and a save, about 10 ms for the tiny model: B would come after A's end
    textvae("train", "--data-dir", str(workdir / "tiny"), "--run-dir", str(workdir / "large"), *MODEL,
            "--decoder-hidden", "1536", "--max-steps", "1", "--eval-every", "1", "--eval-examples", "32",
            log=workdir / "setup-train-large.log")
    return dict(corpus=workdir / "corpus.txt", data=workdir / "tiny", model=workdir / "model" / "best",
                large_model=workdir / "large" / "best")


def train_argv(target: Path, base: dict) -> list[str]:
    return ["train", "--data-dir", str(base["data"]), "--run-dir", str(target), *MODEL, "--max-steps", "30",
            "--eval-every", "10"]


def prepare_argv(target: Path, base: dict) -> list[str]:
    return ["prepare", "text", str(base["corpus"]), "--out", str(target.parent), "--name", target.name,
            "--tokenizer", "char", "--vocab-size", "300"]


def fit_prior_argv(target: Path, base: dict) -> list[str]:
    return ["fit-prior", str(target), "--data", str(base["data"]), "--max-points", "1000"]


def export_argv(target: Path, base: dict) -> list[str]:
    return ["export", str(base["large_model"]), str(target)]


def evaluate_argv(target: Path, base: dict) -> list[str]:
    return ["evaluate", str(base["model"]), "--data", str(base["data"]), "--out", str(target), "--iw-samples", "50",
            "-n", "20"]


def fresh_model(folder: Path, base: dict) -> Path:
    shutil.copytree(base["model"], folder)
    return folder


# per command: how to make a fresh target in a folder of its own, and A's (and B's) arguments
COMMANDS = {
    "train": (lambda folder, base: folder / "run", train_argv),
    "prepare": (lambda folder, base: folder / "tiny", prepare_argv),
    "fit-prior": (lambda folder, base: fresh_model(folder / "model", base), fit_prior_argv),
    "export": (lambda folder, base: folder / "exported", export_argv),
    "evaluate --out": (lambda folder, base: folder / "eval.json", evaluate_argv),
}

# -----------------------------------------------------------------------------
# comparing outputs


def bits(t: torch.Tensor) -> bytes:
    """The raw bytes: torch.equal alone would call 0.0 and -0.0 equal, and NaN unequal to itself."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def comparable(value):
    """JSON without the ignored keys; tensors as (dtype, shape, raw bytes), so that == compares bits."""
    if isinstance(value, torch.Tensor):
        return str(value.dtype), tuple(value.shape), bits(value)
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in IGNORED_KEYS}
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    return value


def file_content(path: Path):
    if path.name == "trainer_state.pt":
        return comparable(torch.load(path, map_location="cpu", weights_only=True))
    if path.name == "metrics.jsonl":
        return [comparable(json.loads(line)) for line in path.read_text().splitlines()]
    if path.suffix == ".json":
        return comparable(json.loads(path.read_text()))
    return path.read_bytes()


def output(target: Path) -> dict:
    """What a command wrote at `target` (a file, or a folder's files by relative path), timing aside."""
    if target.is_file():
        return {target.name: file_content(target)}
    return {str(p.relative_to(target)): file_content(p) for p in sorted(target.rglob("*")) if p.is_file()}

# -----------------------------------------------------------------------------
# one trial


def wait_until_locked(a: subprocess.Popen, target: Path, timeout: float) -> bool:
    """True once A's PID is in the target's lock file; False if A ended (or the time ran out) first."""
    lock, deadline = lock_path(target), time.perf_counter() + timeout
    while a.poll() is None and time.perf_counter() < deadline:
        try:
            if lock.read_text().strip() == str(a.pid):
                return True
        except FileNotFoundError:
            pass
        time.sleep(POLL_SECONDS)
    return False


def start_waiting_b(argv: list[str]) -> subprocess.Popen:
    b = subprocess.Popen([sys.executable, "-c", WAITING_MAIN, *argv], env=child_env(), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if b.stdout.readline() != "ready\n":
        raise SystemExit(f"the second writer did not start: {b.communicate()[1][-2000:]}")
    return b


def is_refusal(b: subprocess.Popen, stderr: str, target: Path, a_pid: int) -> bool:
    lines = stderr.splitlines()
    return (b.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0]
            and f"PID {a_pid}" in lines[0])


def trial(name: str, folder: Path, base: dict, reference: dict, timeout: float) -> dict:
    make_target, make_argv = COMMANDS[name]
    folder.mkdir(parents=True)
    target = make_target(folder, base)
    argv = make_argv(target, base)
    started = time.perf_counter()
    b = start_waiting_b(argv)
    with open(folder / "a.log", "w") as log:
        a = subprocess.Popen([sys.executable, "-m", "textvae", *argv], env=child_env(), stdout=log,
                             stderr=subprocess.STDOUT)
    locked = wait_until_locked(a, target, timeout)
    b.stdin.write("go\n")
    b.stdin.flush()
    a_running = a.poll() is None
    _, b_stderr = b.communicate(timeout=timeout)
    a.wait(timeout=timeout)
    return dict(a_pid=a.pid, a_exit=a.returncode, b_exit=b.returncode, locked_seen=locked, a_running_at_go=a_running,
                refused=is_refusal(b, b_stderr, target, a.pid), b_stderr=b_stderr.strip()[-500:],
                identical=a.returncode == 0 and output(target) == reference,
                seconds=round(time.perf_counter() - started, 2))


def run_command(name: str, workdir: Path, base: dict, trials: int, timeout: float) -> dict:
    """The solo reference, then the trials; a summary and every trial's record."""
    make_target, make_argv = COMMANDS[name]
    folder = workdir / name.split()[0] / "solo"
    folder.mkdir(parents=True)
    target = make_target(folder, base)
    started = time.perf_counter()
    textvae(*make_argv(target, base), log=folder / "a.log")
    solo_seconds = round(time.perf_counter() - started, 2)
    reference = output(target)
    records = []
    for i in range(trials):
        records.append(trial(name, workdir / name.split()[0] / f"trial-{i:03d}", base, reference, timeout))
        r = records[-1]
        progress(f"{name} trial {i + 1}/{trials}: B {'refused' if r['refused'] else 'NOT refused'} (exit "
                 f"{r['b_exit']}), A exit {r['a_exit']}, {'identical' if r['identical'] else 'DIFFERENT'} "
                 f"({r['seconds']} s){'' if r['a_running_at_go'] else '; A had ended before B was let go'}")
    summary = dict(trials=trials, refused=sum(r["refused"] for r in records),
                   identical=sum(r["identical"] for r in records), solo_seconds=solo_seconds,
                   trial_seconds=round(sum(r["seconds"] for r in records) / max(trials, 1), 2))
    return dict(summary=summary, trials=records)

# -----------------------------------------------------------------------------
# report


def print_table(results: dict) -> None:
    print(f"\n{'command':<16}{'trials':>8}{'refused':>9}{'identical':>11}{'solo s':>8}{'trial s':>9}")
    for name, result in results.items():
        s = result["summary"]
        print(f"{name:<16}{s['trials']:>8}{s['refused']:>9}{s['identical']:>11}{s['solo_seconds']:>8}"
              f"{s['trial_seconds']:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="trials per command (default 20)")
    parser.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=list(COMMANDS),
                        help="which commands (default all)")
    parser.add_argument("--lines", type=int, default=4000, help="generated corpus lines (default 4000)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one process may take (default 600)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/two_writers.json"),
                        help="JSON results (default docs/results/two_writers.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (targets, child logs)")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="textvae-two-writers-"))
    try:
        run(args, workdir)
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: Path) -> None:
    started = time.perf_counter()
    progress(f"preparing a {args.lines}-line corpus and training a tiny model in {workdir}")
    base = setup(workdir, args.lines)
    results = {}
    for name in args.commands:
        progress(f"{name}: a solo run, then {args.trials} trials of two writers")
        results[name] = run_command(name, workdir, base, args.trials, args.timeout)
    print_table(results)
    passed = all(r["summary"]["refused"] == r["summary"]["identical"] == r["summary"]["trials"]
                 for r in results.values())
    wall = round(time.perf_counter() - started, 1)
    print(f"result: {'PASS: every second writer refused, every first one as if alone' if passed else 'FAIL'} "
          f"({wall} s in all)")
    write_text(args.out, json.dumps(dict(settings=vars(args) | dict(out=str(args.out)), wall_s=wall, passed=passed,
                                         results=results), indent=2, default=str) + "\n")
    progress(f"wrote {args.out}")
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
