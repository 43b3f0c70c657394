"""Chaos test of exact resume: SIGKILL `textvae train` again and again, many times inside a checkpoint write,
restart it each time, and check that the finished run is bit-identical to one that was never interrupted.

    python scripts/chaos.py                                  # 24 kills, at least 8 inside checkpoint writes (~5 min)
    python scripts/chaos.py --kills 30 --checkpoint-kills 12 --seed 1 --out /tmp/chaos.json

- data: a generated corpus of short English sentences, prepared by `textvae prepare text` (char tokenizer)
  in a temporary folder; a tiny Gaussian VAE with the full softmax, fp32 on the CPU, one thread per process.
- reference: one uninterrupted `textvae train`. Polling its run dir also times the start-up (spawn to the
  first checkpoint write), the interval between checkpoints and the length of a write.
- chaos: the same command in another run dir, killed at seeded-random moments. A "startup" kill (one in
  eight) lands in the start-up, before run_config.json is rewritten; a "random" kill a random part of an
  interval after the jth checkpoint that process writes (placed by the run's progress, not the clock, as a
  loaded machine can halve the speed), j drawn so that the kills spread over the whole run and it does not
  end before the last one. A "checkpoint" kill
  polls the run dir and kills the moment the k-th new .last-tmp-* / .best-tmp-* folder of that process
  appears (k = 1..3); one in four waits a random part of a write's duration (measured in the reference)
  first, to reach the files and the swap. A kill counts as inside a checkpoint write when the dead process
  left such a folder (after an exchange swap, it holds the old checkpoint), or the .last-old-* / .best-old-*
  copy a two-rename swap (where the filesystem cannot exchange two names) moves aside, behind. After each kill the
  run restarts with --resume once a checkpoint exists, fresh before that; the first kill always lands in
  the fresh run's first write (best/ at the first validation), so a fresh restart is always taken.
- check: last/ and best/ model.safetensors, trainer_state.pt (timing aside) and metrics.jsonl (tokens_per_s
  and train_seconds aside) equal the reference's, and the run dir holds no temporary entries.
Prints progress and a summary, writes JSON (--out) and exits 1 on any mismatch.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from textvae.atomic import write_text

TIMING_FIELDS = ("tokens_per_s", "train_seconds")  # wall-clock figures: differ between any two runs
WRITE_PREFIXES = (".last-tmp-", ".best-tmp-")  # the folders a checkpoint write builds before its swap
SWAP_PREFIXES = (".last-old-", ".best-old-")  # the old copy a swap moves aside between its two renames
STARTUP_SHARE = 1 / 8  # of the kills, aimed at the start-up (imports, data, clean-up, checkpoint load)
POLL_SECONDS = 0.0002
EVAL_EVERY = 5  # steps between validations, hence checkpoints


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes at most (trainer + this poller) on 2 cores

# -----------------------------------------------------------------------------
# data and commands


def write_corpus(path: Path, lines: int) -> None:
    """Short sentences from a small grammar: a char vocabulary of ~30 and some structure to learn."""
    rng = random.Random(0)
    words = dict(subject="the cat|a dog|my friend|the old man|a bird|the child|her sister|the farmer|our teacher",
                 verb="sees|likes|follows|paints|finds|hears|carries|watches|draws",
                 adjective="|red |quiet |tall |small |green |broken |golden ",
                 thing="moon|river|door|apple|mountain|boat|garden|song|lamp",
                 tail="| at night| in spring| every day| by the sea| again| slowly")
    choices = {key: value.split("|") for key, value in words.items()}
    text = [f"{rng.choice(choices['subject'])} {rng.choice(choices['verb'])} the {rng.choice(choices['adjective'])}"
            f"{rng.choice(choices['thing'])}{rng.choice(choices['tail'])}" for _ in range(lines)]
    path.write_text("\n".join(text) + "\n")


def prepare(workdir: Path, lines: int) -> Path:
    write_corpus(workdir / "corpus.txt", lines)
    subprocess.run([sys.executable, "-m", "textvae", "prepare", "text", str(workdir / "corpus.txt"), "--out",
                    str(workdir), "--name", "tiny", "--tokenizer", "char", "--vocab-size", "300"],
                   check=True, env=child_env(), stdout=subprocess.DEVNULL)
    return workdir / "tiny"


def train_command(data_dir: Path, run_dir: Path, max_steps: int, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "textvae", "train", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
               "--embed-dim", "32", "--encoder-hidden", "32", "--decoder-hidden", "64", "--latent-dim", "8",
               "--posterior", "gaussian", "--output-layer", "full", "--max-steps", str(max_steps),
               "--eval-every", str(EVAL_EVERY), "--log-every", "5", "--batch-size", "32", "--eval-examples", "64",
               "--warmup-steps", "20", "--kl-warmup-steps", "100", "--device", "cpu", "--precision", "fp32"]
    return command + ["--resume"] if resume else command


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # the child keeps its own handle
        return subprocess.Popen(command, env=child_env(), stdout=f, stderr=subprocess.STDOUT)

# -----------------------------------------------------------------------------
# watching a run dir


def entries(run_dir: Path, prefixes: tuple[str, ...]) -> set[str]:
    try:
        return {name for name in os.listdir(run_dir) if name.startswith(prefixes)}
    except FileNotFoundError:
        return set()


def identity(path: Path) -> tuple | None:
    """Changes when the file is replaced (write_text renames a new file over it) or rewritten."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def has_checkpoint(run_dir: Path) -> bool:
    """last/ exists, or a swap cut between its renames left its old copy (train() puts it back)."""
    return (run_dir / "last").is_dir() or bool(entries(run_dir, (".last-old-",)))


def done_step(run_dir: Path) -> int:
    """The last validated step in metrics.jsonl: about where the run's last checkpoint is."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    steps = [record["step"] for record in map(json.loads, filter(None, lines)) if record["split"] == "validation"]
    return max(steps, default=0)


def run_reference(command: list[str], run_dir: Path, log: Path) -> dict:
    """Run to the end, timing it by the checkpoint-write folders polling sees: the start-up (spawn to the
    first write), the interval between checkpoints, and how long a write's folder lives (medians)."""
    started, lifetimes = time.perf_counter(), {}
    proc = start(command, log)
    while proc.poll() is None:
        now = time.perf_counter()
        for name in entries(run_dir, WRITE_PREFIXES):
            lifetimes.setdefault(name, [now, now])[1] = now
        time.sleep(POLL_SECONDS)
    starts = sorted(begin for name, (begin, _) in lifetimes.items() if name.startswith(".last-tmp-"))
    if proc.returncode != 0 or len(starts) < 2:
        raise SystemExit(f"the reference run failed (exit {proc.returncode}, {len(starts)} checkpoints seen); "
                         f"see {log}")
    return dict(wall_s=round(time.perf_counter() - started, 2), startup_s=round(starts[0] - started, 2),
                interval_s=round(statistics.median(b - a for a, b in zip(starts, starts[1:])), 3),
                write_ms=round(1000 * statistics.median(end - begin for begin, end in lifetimes.values()), 2))

# -----------------------------------------------------------------------------
# killing


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL now; True if that is what ended it (it may have finished just before)."""
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        return kill(proc)


def wait_for_writes(proc: subprocess.Popen, run_dir: Path, n: int, prefixes: tuple[str, ...]) -> bool:
    """Poll until this process has begun n new writes named with `prefixes`; False if it ended first."""
    seen, count = entries(run_dir, prefixes), 0
    while proc.poll() is None:
        new = entries(run_dir, prefixes) - seen
        count, seen = count + len(new), seen | new
        if count >= n:
            return True
        time.sleep(POLL_SECONDS)
    return False


def pick_mode(rng: random.Random, history: list[dict], args) -> str:
    """The first kill lands in the fresh run's first write, so that a fresh restart is always taken. Then
    checkpoint kills until --checkpoint-kills landed inside writes, and a STARTUP_SHARE of --kills in the
    start-up, each spread at random among the --kills; random kills in the steps for the rest."""
    if not history:
        return "first"
    kills = [r for r in history if r["killed"]]
    left = args.kills - len(kills)
    needed = dict(checkpoint=args.checkpoint_kills - sum(r["in_write"] for r in kills),
                  startup=round(STARTUP_SHARE * args.kills) - sum(r["mode"] == "startup" for r in kills))
    for mode in ("checkpoint", "startup"):
        if needed[mode] > 0 and (needed[mode] >= left or rng.random() < needed[mode] / max(left, 1)):
            return mode
    return "random"


def kill_in_write(rng: random.Random, proc, run_dir: Path, reference: dict, intervals_left: int,
                  first: bool) -> tuple:
    """The moment the nth checkpoint-write folder of this process appears (n = 1..3; for the first kill 1,
    best/'s first write, before last/ exists); one time in four (never the first) a random part of a
    write's duration later, to reach its files and its swap."""
    nth = 1 if first else rng.randint(1, max(1, min(3, intervals_left - 1)))
    later = not first and rng.random() < 0.25
    delay = rng.uniform(0, 1.2 * reference["write_ms"] / 1000) if later else 0.0
    if not wait_for_writes(proc, run_dir, nth, WRITE_PREFIXES):
        return False, f"write #{nth} (never came)"
    time.sleep(delay)
    return kill(proc), f"write #{nth}" + (f" + {1000 * delay:.1f} ms" if later else "")


def kill_in_startup(proc: subprocess.Popen, run_dir: Path, delay: float) -> bool:
    """Kill `delay` seconds after spawn, or sooner: when run_config.json is rewritten, the start-up is over."""
    before, deadline = identity(run_dir / "run_config.json"), time.perf_counter() + delay
    while proc.poll() is None and time.perf_counter() < deadline and identity(run_dir / "run_config.json") == before:
        time.sleep(POLL_SECONDS)
    return kill(proc) if proc.returncode is None else False


def kill_at_random(rng: random.Random, proc, run_dir: Path, reference: dict, intervals_left: int,
                   kills_left: int) -> tuple:
    """A random part of a checkpoint interval after the jth checkpoint of this process, j drawn so that the
    kills spread over the whole run without finishing it."""
    j = rng.randint(1, max(1, min(2 * intervals_left // (kills_left + 1), intervals_left - 2)))
    delay = rng.uniform(0, reference["interval_s"])
    if not wait_for_writes(proc, run_dir, j, (".last-tmp-",)):
        return False, f"checkpoint #{j} (never came)"
    return kill_after(proc, delay), f"checkpoint #{j} + {delay:.2f} s"


def attempt(rng: random.Random, mode: str, command: list[str], run_dir: Path, reference: dict,
            intervals_left: int, kills_left: int, log: Path) -> dict:
    """One start of the chaos run, killed (or not) as the mode says."""
    before = entries(run_dir, WRITE_PREFIXES + SWAP_PREFIXES)
    proc = start(command, log)
    if mode in ("first", "checkpoint"):
        killed, aim = kill_in_write(rng, proc, run_dir, reference, intervals_left, first=mode == "first")
    elif mode == "startup":
        delay = rng.uniform(0, reference["startup_s"])
        killed, aim = kill_in_startup(proc, run_dir, delay), f"start-up + {delay:.2f} s at most"
    elif mode == "random":
        killed, aim = kill_at_random(rng, proc, run_dir, reference, intervals_left, kills_left)
    else:
        limit = 10 * reference["wall_s"] + 60
        killed, aim = kill_after(proc, limit), "none"
        if killed:
            raise SystemExit(f"the last start did not finish in {limit:.0f} s; see {log}")
    left = sorted(entries(run_dir, WRITE_PREFIXES + SWAP_PREFIXES) - before) if killed else []
    cut = [name for name in left if "-old-" in name and not (run_dir / name[1:].split("-old-")[0]).exists()]
    return dict(mode=mode, aim=aim, killed=killed, returncode=proc.returncode, in_write=bool(left), left=left,
                cut_swap=bool(cut), to_step=done_step(run_dir))


def chaos(args, command, run_dir: Path, reference: dict, workdir: Path) -> list[dict]:
    """Kill and restart until at least --kills kills, --checkpoint-kills of them inside writes, and the end."""
    rng, history, kills, in_writes = random.Random(args.seed), [], 0, 0
    while True:
        resume = has_checkpoint(run_dir)
        step = done_step(run_dir) if resume else 0
        wanted = kills < args.kills or in_writes < args.checkpoint_kills
        mode = pick_mode(rng, history, args) if wanted else "finish"
        if mode == "checkpoint" and kills >= args.kills + 3 * args.checkpoint_kills:
            raise SystemExit(f"only {in_writes} of {kills} kills landed inside checkpoint writes; giving up")
        log = workdir / f"attempt-{len(history):03d}.log"
        record = attempt(rng, mode, command(resume), run_dir, reference, (args.max_steps - step) // EVAL_EVERY,
                         max(args.kills - kills, 1), log)
        history.append(dict(record, start="resume" if resume else "fresh", from_step=step))
        kills, in_writes = kills + record["killed"], in_writes + record["in_write"]
        report_attempt(history[-1], kills, in_writes)
        if not record["killed"]:
            if record["returncode"] != 0:
                raise SystemExit(f"the chaos run failed (exit {record['returncode']}): {log.read_text()[-2000:]}")
            if wanted:
                raise SystemExit(f"the run finished after only {kills} kills: use more --max-steps")
            return history


def report_attempt(record: dict, kills: int, in_writes: int) -> None:
    if record["killed"]:
        left = ", ".join(record["left"])
        where = f"inside a checkpoint write, left {left}" if record["in_write"] else "outside writes"
        progress(f"kill {kills:2d} ({in_writes} in writes): {record['start']} from step {record['from_step']}, "
                 f"{record['mode']} kill at {record['aim']} (validated step {record['to_step']}): {where}")
    else:
        progress(f"finished: {record['start']} from step {record['from_step']}, exit {record['returncode']}")

# -----------------------------------------------------------------------------
# comparing


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes: torch.equal alone would call 0.0 and -0.0 equal, and NaN unequal to itself."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def same(a, b) -> bool:
    """Exact equality of nested dicts / lists of tensors and plain values (tensors: dtype, shape, bits)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(bits(a), bits(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def step_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines if line]


def trainer_state(run_dir: Path) -> dict:
    state = torch.load(run_dir / "last" / "trainer_state.pt", map_location="cpu", weights_only=True)
    state.pop("train_seconds", None)
    return state


def compare(reference: Path, run: Path) -> dict:
    """Each check: (passed, detail)."""
    checks = {}
    for name in ("last", "best"):
        a, b = load_file(reference / name / "model.safetensors"), load_file(run / name / "model.safetensors")
        checks[f"{name}/model.safetensors"] = (same(a, b), f"{len(a)} tensors")
    a, b = trainer_state(reference), trainer_state(run)
    checks["trainer_state.pt"] = (same(a, b), f"step {b['step']} (reference {a['step']}), optimizer state")
    a, b = step_records(reference), step_records(run)
    checks["metrics.jsonl"] = (a == b, f"{len(b)} records (reference {len(a)}), timings aside")
    expected = {name for name in os.listdir(reference) if not name.startswith(".")}
    extra = sorted(set(os.listdir(run)) - expected)  # temporary folders and files above all
    checks["leftovers in run dir"] = (not extra, ", ".join(extra) or "none")
    return checks

# -----------------------------------------------------------------------------
# report


def summary(history: list[dict], checks: dict) -> dict:
    kills = [r for r in history if r["killed"]]
    in_writes = [r for r in kills if r["in_write"]]
    return dict(kills=len(kills), kills_in_checkpoint_writes=len(in_writes),
                targeted_kills_in_writes=sum(r["mode"] in ("first", "checkpoint") for r in in_writes),
                kills_in_startup=sum(r["mode"] == "startup" for r in kills),
                kills_in_startup_or_steps=len(kills) - len(in_writes),
                swaps_cut_between_renames=sum(r["cut_swap"] for r in kills),
                restarts_with_resume=sum(r["start"] == "resume" for r in history[1:]),
                fresh_restarts=sum(r["start"] == "fresh" for r in history[1:]),
                exact=all(passed for passed, _ in checks.values()))


def print_summary(args, reference: dict, counts: dict, checks: dict) -> None:
    print(f"\nchaos summary (seed {args.seed}, {args.max_steps} steps, a checkpoint every {EVAL_EVERY}; reference "
          f"run {reference['wall_s']} s)")
    in_writes = (f"{counts['kills_in_checkpoint_writes']} ({counts['targeted_kills_in_writes']} targeted; "
                 f"{counts['swaps_cut_between_renames']} cut a swap between its renames)")
    rows = [("kills total", counts["kills"]), ("  inside checkpoint writes", in_writes),
            ("  at other moments", f"{counts['kills_in_startup_or_steps']} ({counts['kills_in_startup']} aimed at "
                                    "the start-up)"),
            ("restarts with --resume", counts["restarts_with_resume"]),
            ("fresh restarts (no checkpoint yet)", counts["fresh_restarts"])]
    rows += [(name, f"{'ok' if passed else 'MISMATCH'}: {detail}") for name, (passed, detail) in checks.items()]
    rows.append(("result", "EXACT" if counts["exact"] else "MISMATCH"))
    for name, value in rows:
        print(f"  {name:<36} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=24, help="kills at least (default 24)")
    parser.add_argument("--checkpoint-kills", type=int, default=8,
                        help="kills inside checkpoint writes at least, counted among --kills (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments (default 0)")
    parser.add_argument("--max-steps", type=int, default=250, help="training steps (default 250)")
    parser.add_argument("--lines", type=int, default=4000, help="generated corpus lines (default 4000)")
    parser.add_argument("--out", type=Path, default=Path("docs/chaos.json"),
                        help="JSON results (default docs/chaos.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (runs, child logs)")
    args = parser.parse_args()
    if args.kills < 1 or not 0 <= args.checkpoint_kills <= args.kills:
        parser.error("need --kills >= 1 and 0 <= --checkpoint-kills <= --kills")
    if args.max_steps < 2 * EVAL_EVERY * args.kills:
        parser.error(f"--max-steps below {2 * EVAL_EVERY * args.kills} leaves too few checkpoints for "
                     f"{args.kills} kills")
    workdir = Path(tempfile.mkdtemp(prefix="textvae-chaos-"))
    try:
        run(args, workdir)
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: Path) -> None:
    progress(f"preparing a {args.lines}-line corpus in {workdir}")
    data_dir = prepare(workdir, args.lines)
    progress("reference: one uninterrupted run")
    reference = run_reference(train_command(data_dir, workdir / "reference", args.max_steps, False),
                              workdir / "reference", workdir / "reference.log")
    progress(f"reference done in {reference['wall_s']} s: start-up {reference['startup_s']} s, a checkpoint "
             f"every {reference['interval_s']} s, a checkpoint write {reference['write_ms']} ms")
    run_dir = workdir / "chaos"
    history = chaos(args, lambda resume: train_command(data_dir, run_dir, args.max_steps, resume), run_dir,
                    reference, workdir)
    checks = compare(workdir / "reference", run_dir)
    counts = summary(history, checks)
    print_summary(args, reference, counts, checks)
    result = dict(settings=vars(args) | dict(out=str(args.out)), reference=reference, counts=counts,
                  checks={name: dict(passed=passed, detail=detail) for name, (passed, detail) in checks.items()},
                  attempts=history)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    progress(f"wrote {args.out}")
    if not counts["exact"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
