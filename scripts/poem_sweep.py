"""The equal-wall-time sweep that picks the flagship poem model's recipe (docs/sweeps.md): each variant of the
`poem` preset trains for the same wall-clock budget, then `textvae evaluate` scores it.

    python scripts/poem_sweep.py --data data/poems                    # 7 variants x 6 min (~1 h on one core)
    python scripts/poem_sweep.py --data data/poems --minutes 0.5 --only base lines --out /tmp/sweep

Equal wall time: a variant first trains 30 steps to measure its seconds per step (validation excluded,
from the trainer's own `train_seconds`), then trains max_steps = budget / (seconds per step) steps, so the
cosine schedule ends when the budget does. Every run uses the same threads (--threads), data, seed and
batch size. Scores: the validation −ELBO, KL and active units from the run's last validation (on
--eval-examples validation poems), and, from `textvae evaluate` on the validation split, the mutual
information and the rhyme and tonal-pattern rates of unsteered 7x4 prior samples (--form 7x4 only fixes
the shape: the rhymes and tones are the model's own). A variant whose result is in the results file is
not run again; the table is rewritten from the results file each time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from textvae.atomic import write_text

LINES = ("--segment-marks", "，。")
VARIANTS = {  # name: (what it varies, `textvae train` flags on top of --preset poem)
    "base": ("the poem preset: GRU-256 decoder, D 32, BN γ 0.6, adaptive softmax", ()),
    "lines": ("+ line index and position in the line fed to the decoder", LINES),
    "lines-512": ("+ lines, decoder GRU-512", (*LINES, "--decoder-hidden", "512")),
    "lines-2layer": ("+ lines, 2-layer GRU-256 decoder", (*LINES, "--decoder-layers", "2")),
    "lines-d64": ("+ lines, D 64", (*LINES, "--latent-dim", "64")),
    "lines-gamma0.8": ("+ lines, γ 0.8", (*LINES, "--gamma", "0.8")),
    "lines-full": ("+ lines, full softmax", (*LINES, "--output-layer", "full")),
}
CALIBRATION_STEPS = 30


def run_command(cmd: list[str], log: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log, "a") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:4])}... failed (exit {result.returncode}); see {log}")


def train(args, flags: tuple, run_dir: Path, steps: int, log: Path) -> list[dict]:
    shutil.rmtree(run_dir, ignore_errors=True)  # the sweep's own folder: a cut run starts again
    eval_every = max(1, steps // 4)
    run_command([sys.executable, "-m", "textvae", "train", "--preset", "poem", "--data-dir", str(args.data),
                 "--run-dir", str(run_dir), "--max-steps", str(steps), "--eval-every", str(eval_every),
                 "--eval-examples", str(args.eval_examples), "--seed", str(args.seed), *flags], log, args.threads)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def seconds_per_step(args, flags: tuple, work: Path, log: Path) -> float:
    records = train(args, flags, work / "calibration", CALIBRATION_STEPS, log)
    last = [r for r in records if r["split"] == "validation"][-1]
    return last["train_seconds"] / last["step"]


def score(args, run_dir: Path, log: Path) -> dict:
    report = run_dir / "eval.json"
    run_command([sys.executable, "-m", "textvae", "evaluate", str(run_dir / "last"), "--data", str(args.data),
                 "--split", "validation", "--max-examples", str(args.eval_examples), "--iw-samples", "0",
                 "-n", str(args.samples), "--form", "7x4", "--seed", str(args.seed), "--out",
                 str(report), "--json"], log, args.threads)
    return json.loads(report.read_text())


def run_variant(name: str, args, work: Path) -> dict:
    note, flags = VARIANTS[name]
    log = work / f"{name}.log"
    per_step = seconds_per_step(args, flags, work, log)
    steps = max(CALIBRATION_STEPS, int(args.minutes * 60 / per_step))
    records = train(args, flags, work / name, steps, log)
    last = [r for r in records if r["split"] == "validation"][-1]
    report = score(args, work / name, log)
    text = report["text"]["samples"]
    return dict(name=name, note=note, flags=list(flags), steps=steps, seconds_per_step=round(per_step, 4),
                train_seconds=last["train_seconds"], elbo=last["elbo"], rec=last["rec"], kl=last["kl"],
                active_units=last["active_units"], mi=report["latent"]["mi"], rhyme=text.get("rhyme"),
                tonal=text.get("tonal"), threads=args.threads, minutes=args.minutes)


def table(results: list[dict]) -> str:
    rows = ["| variant | what it varies | steps | val −ELBO | KL | AU | MI | rhyme (7x4, unsteered) | "
            "tonal pattern |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: r["elbo"], reverse=True):
        rate = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
        rows.append(f"| {r['name']} | {r['note']} | {r['steps']:,} | {-r['elbo']:.2f} | {r['kl']:.2f} | "
                    f"{r['active_units']} | {r['mi']:.2f} | {rate(r['rhyme'])} | {rate(r['tonal'])} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/poems"))
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (the same for every variant)")
    parser.add_argument("--eval-examples", type=int, default=500, help="validation poems scored")
    parser.add_argument("--samples", type=int, default=500, help="prior samples for the rhyme and tonal rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--out", type=Path, default=Path("docs/sweep"), help="results.jsonl and table.md")
    parser.add_argument("--work", type=Path, default=Path("runs/poem-sweep"), help="the runs' folders")
    args = parser.parse_args()
    if not (args.data / "dataset").is_dir():
        sys.exit(f"error: {args.data} is not a prepared dataset: run `textvae prepare poems` first")
    if not 0 < args.minutes <= 600 or not 1 <= args.threads <= os.cpu_count():
        sys.exit("error: --minutes must be in (0, 600] and --threads from 1 to the number of CPUs")
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    results = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.exists() else []
    done = {r["name"] for r in results}
    todo = [name for name in (args.only or VARIANTS) if name not in done]
    for name in tqdm(todo, desc="sweep", unit="variant"):
        results.append(run_variant(name, args, args.work))
        write_text(results_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        write_text(args.out / "table.md", table(results))
        tqdm.write(f"{name}: val -ELBO {-results[-1]['elbo']:.2f}, KL {results[-1]['kl']:.2f}, "
                   f"rhyme {results[-1]['rhyme']}, tonal {results[-1]['tonal']}")
    print(table(results))


if __name__ == "__main__":
    main()
