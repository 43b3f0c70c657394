"""Train several runs side by side on one device inside a fixed wall-clock budget.

For GPU time that comes in slots of minutes, not hours, the step count of each run is fitted to the time: all runs first
train together for --calibrate seconds (the cosine schedule is irrelevant there), the script reads each run's
steps per second under that shared load, stops them, and starts them afresh with --max-steps sized to end inside
the budget. Every run then has a full warm-up and cosine decay. At the end each run's last/ weights, config and
metrics are packed into one archive cut into 15 MiB parts (`cat runs.tar.part* | tar -x` joins them), small
enough for tools that copy files back from a remote machine with a size limit.

    python scripts/timed_runs.py --budget 540 --candidates faithful-slots-b1024 --out runs/timed-out \
        -- --init-from data/faithful --lr 3e-3            # on a CUDA machine (docs/training.md)
    python scripts/timed_runs.py --budget 150 --calibrate 40 --device cpu --out /tmp/t -- --decoder-hidden 32
    python scripts/timed_runs.py --budget 250 --calibrate 24 --candidates faithful-d128-b1024 --out runs/timed-out \
        -- --init-from runs/stage1/faithful-d128-b1024/last --lr 3e-3    # train a finished run on

The runs are the `faithful` candidates (docs/faithful.md) on top of the preset poem-faithful (a 256-unit encoder,
a 512-unit decoder, free bits at 200 nats): D = 128 without slots at batches of 512, 1,024 and 2,048 poems, each
with its own learning rate (they made the second version), and the preset's own model (D = 256 through 16 slots,
the third version) at GPU batch sizes; faithful-slots-b1024 trained the third version's fourth CPU epoch into the
fourth version. The first version's candidates were D = 64 with free bits at 120, 200 and 300 nats (git show
cc799ae).
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# D = 128 without slots at three batch sizes (a GPU step costs about the same at each, so larger batches see more
# epochs), and the preset's slotted D = 256 at the two best of them
CANDIDATES = {
    "faithful-d128": ["--latent-dim", "128", "--latent-slots", "0", "--batch-size", "512", "--lr", "4e-3"],
    "faithful-d128-b1024": ["--latent-dim", "128", "--latent-slots", "0", "--batch-size", "1024", "--lr", "5e-3"],
    "faithful-d128-b2048": ["--latent-dim", "128", "--latent-slots", "0", "--batch-size", "2048", "--lr", "6e-3"],
    "faithful-slots-b512": ["--batch-size", "512", "--lr", "4e-3"],
    "faithful-slots-b1024": ["--batch-size", "1024", "--lr", "5e-3"],
}
COMMON = ["--preset", "poem-faithful", "--log-every", "10"]  # each candidate gives all it changes
EVALS_PER_RUN = 5
PART_BYTES = 15 * 2**20


def launch(name: str, run_root: Path, max_steps: int, eval_every: int, args, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "textvae", "train", *COMMON, *CANDIDATES[name], "--data-dir", args.data_dir,
               "--run-dir", str(run_root / name), "--max-steps", str(max_steps), "--eval-every", str(eval_every),
               "--device", args.device, *args.extra]
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    run_root.mkdir(parents=True, exist_ok=True)
    with open(run_root / f"{name}.log", "a") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def last_step(run_dir: Path) -> int:
    """The last logged training step of a run (0 before its first log line)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def stop(processes: dict) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        process.wait()


def calibrate(args, run_root: Path, log) -> dict[str, float]:
    """Steps per second of each candidate while all of them train at once, timed from its first logged step
    after half the window, so that start-up (imports, data, CUDA) never counts."""
    processes = {name: launch(name, run_root / "calibration", 10**7, 10**7, args, log) for name in args.candidates}
    started = time.monotonic()
    first = {}
    while time.monotonic() - started < args.calibrate:
        time.sleep(1)
        if any(p.poll() is not None for p in processes.values()):
            stop(processes)
            raise SystemExit(f"a calibration run stopped early: see {run_root / 'calibration'}/*.log")
        if time.monotonic() - started < args.calibrate / 2:
            continue
        for name in set(args.candidates) - set(first):  # each run's log is read until it is timed, not after
            step = last_step(run_root / "calibration" / name)
            if step > 0:
                first[name] = (time.monotonic(), step)
    rates = {name: (last_step(run_root / "calibration" / name) - step) / (time.monotonic() - tick)
             for name, (tick, step) in first.items()}
    stop(processes)
    if set(rates) != set(args.candidates) or min(rates.values()) <= 0:
        raise SystemExit(f"--calibrate {args.calibrate:g} s was too short to time every run after its start-up "
                         f"(timed: {sorted(n for n, r in rates.items() if r > 0)}): give a longer one")
    return rates


def pack(run_root: Path, names: list[str], out: Path) -> None:
    """Each run's last/ (without the optimizer state), config and metrics, in 15 MiB parts of one archive."""
    archive = run_root / "runs.tar"
    with tarfile.open(archive, "w") as tar:
        for name in names:
            run = run_root / name
            for path in [run / "run_config.json", run / "metrics.jsonl", run_root / f"{name}.log",
                         *sorted((run / "last").glob("*"))]:
                if path.is_file() and path.name != "trainer_state.pt":
                    tar.add(path, arcname=str(path.relative_to(run_root)))
    data = archive.read_bytes()
    for index, start in enumerate(range(0, len(data), PART_BYTES)):
        (out / f"runs.tar.part{index}").write_bytes(data[start:start + PART_BYTES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, required=True, help="seconds from start to packed results")
    parser.add_argument("--calibrate", type=float, default=60, help="seconds of the shared calibration run")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES),
                        default=["faithful-slots-b512", "faithful-slots-b1024"],
                        help="which runs to train (default: the slotted ones)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-dir", default="data/poems")
    parser.add_argument("--out", type=Path, required=True, help="folder that receives the archive parts and log")
    parser.add_argument("--work", type=Path, default=Path("runs/timed"), help="folder for the runs themselves")
    parser.add_argument("extra", nargs="*", help="more `textvae train` options for every run (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "timed_runs.log", "a") as log:
        rates = calibrate(args, args.work, log)
        startup, pack_time = 30, 20  # seconds: imports, data and CUDA start; evaluation and packing at the end
        train_time = args.budget - (time.monotonic() - started) - startup - pack_time
        plan = {name: max(EVALS_PER_RUN, int(rate * train_time * 0.85) // EVALS_PER_RUN * EVALS_PER_RUN)
                for name, rate in rates.items()}
        log.write(json.dumps(dict(rates=rates, train_seconds=train_time, max_steps=plan)) + "\n")
        log.flush()
        print(json.dumps(dict(rates=rates, max_steps=plan)), flush=True)
        processes = {name: launch(name, args.work, steps, steps // EVALS_PER_RUN, args, log)
                     for name, steps in plan.items()}
        deadline = started + args.budget - pack_time
        while time.monotonic() < deadline and any(p.poll() is None for p in processes.values()):
            time.sleep(2)
        stop(processes)
        for name, process in processes.items():
            line = dict(run=name, returncode=process.returncode, last_step=last_step(args.work / name))
            log.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    pack(args.work, args.candidates, args.out)


if __name__ == "__main__":
    main()
