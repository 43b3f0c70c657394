"""The smooth-latent study: training options that shape the space between poems, each a fine-tune of data/faithful,
scored on what a user does with z: reconstruction char-BLEU (the first 300 test poems, posterior mode, greedy) and
`scripts/editing_report.py` (100 seeded pairs of test poems, 7 points each, judged by data/pretrained; variations).

    python scripts/smooth_study.py                                  # every variant not yet measured
    python scripts/smooth_study.py --only crossing --threads 2      # one variant
    python scripts/smooth_study.py --steps 20 --results /tmp/smooth --pairs 5 --runs /tmp/runs  # a smoke test

A variant trains into RUNS/<name> (a finished run is not trained again) and its figures are written to
docs/results/smooth/<name>.json with the commands that made them; a variant whose file exists is skipped (delete it
to redo it). The table goes into docs/smooth-latent.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from textvae.atomic import write_section, write_text

START = "data/faithful"
# name -> training flags on top of the fine-tune below; "start" is data/faithful itself, untrained further
VARIANTS = {
    "start": None,
    "plain": [],  # the same fine-tune without any shaping option: what the extra steps alone do
    "substitute": ["--corrupt-substitute", "0.1"],
    "crossing": ["--crossing-weight", "1.0"],
    # the crossing run trained on for as many steps again, at half the peak learning rate
    "crossing-twice": ["--crossing-weight", "1.0", "--init-from", "RUNS/crossing/last", "--lr", "5e-4"],
}
FINE_TUNE = ["--preset", "poem-faithful", "--init-from", START, "--lr", "1e-3", "--warmup-steps", "50",
             "--eval-every", "300"]
LABELS = {"start": "data/faithful as shipped", "plain": "fine-tuned, no shaping",
          "substitute": "denoising: 10 % of the encoder's characters substituted",
          "crossing": "line-crossing loss (weight 1)",
          "crossing-twice": "line-crossing loss, trained on from the row above (peak lr 5e-4)"}


def run(cmd: list[str], threads: int) -> None:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def trained(run_dir: Path, steps: int) -> bool:
    metrics = run_dir / "metrics.jsonl"
    if not (run_dir / "last" / "model.safetensors").is_file() or not metrics.is_file():
        return False
    return any(json.loads(line).get("step") == steps for line in metrics.read_text().splitlines())


def measure(name: str, args) -> dict:
    commands = []
    model_dir = START
    if VARIANTS[name] is not None:
        run_dir = args.runs / name
        flags = [flag.replace("RUNS", str(args.runs)) for flag in VARIANTS[name]]  # later flags win
        train = ["textvae", "train", *FINE_TUNE, "--max-steps", str(args.steps), "--run-dir", str(run_dir),
                 *flags]
        if not trained(run_dir, args.steps):
            run(train, args.threads)
        commands.append(" ".join(train))
        model_dir = str(run_dir / "last")
    with tempfile.TemporaryDirectory() as tmp:
        evaluate = ["textvae", "evaluate", model_dir, "--iw-samples", "0", "-n", "0", "--max-examples",
                    str(args.examples), "--form", "free", "--seed", "0", "--precision", "fp32", "--out",
                    f"{tmp}/eval.json"]
        editing = [sys.executable, "scripts/editing_report.py", model_dir, "--path", "linear", "--judge", args.judge,
                   "--pairs", str(args.pairs), "--poems", str(args.pairs), "--precision", "fp32", "--out",
                   f"{tmp}/editing.json"]
        for cmd in (evaluate, editing):
            run(cmd, args.threads)
        text = json.loads(Path(f"{tmp}/eval.json").read_text())["text"]
        report = json.loads(Path(f"{tmp}/editing.json").read_text())
    commands += [" ".join(evaluate[:-2]), " ".join(["python", *editing[1:-2]])]
    interpolation = {k: v for k, v in report["interpolation"].items() if k != "paths"}
    return dict(variant=name, label=LABELS[name], flags=VARIANTS[name], steps=args.steps, commands=commands,
                bleu=text["reconstruction_bleu"], interpolation=interpolation, variation=report["variation"],
                paths=[r["points"] for r in report["interpolation"]["paths"][:10]])


def table(cells: list[dict]) -> str:
    rows = ["| variant | BLEU (300) | largest move / ends | gradual paths (same form) | distinct | middle / ends "
            "judge nats | vary kept / copies |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        i, v = c["interpolation"], c["variation"]
        same = f" ({i['same_form_gradual_paths']:.0%} of {i['same_form_pairs']})" if "same_form_pairs" in i else ""
        rows.append(f"| {c['label']} | {c['bleu']:.1f} | {i['largest_share']:.0%} | {i['gradual_paths']:.0%}{same} | "
                    f"{i['distinct']:.2f} | {i.get('middle_over_ends', float('nan')):.3f} | "
                    f"{v['kept_in_place']:.1%} / {v['copies']:.0%} |")
    return "\n".join(rows)


def section(cells: list[dict]) -> str:
    steps = sorted({c["steps"] for c in cells if c["flags"] is not None})
    return f"""## Smooth latent: training that shapes the space between poems

Produced by `python scripts/smooth_study.py` ({len(cells)} cells; each cell's commands, figures and its first ten
paths as text are in `docs/results/smooth/`). Every variant but the first fine-tunes data/faithful for
{' / '.join(map(str, steps))} steps at batch 128 on one CPU thread (`{' '.join(FINE_TUNE)}`, fp32, free bits 200) with
the option named. BLEU is reconstruction char-BLEU on the first 300 test poems (posterior mode, greedy, form kept,
fp32). The path columns are `scripts/editing_report.py` on 100 seeded pairs of test poems, 7 points each on the
straight line, judged by data/pretrained: the largest single move as a share of the ends' distance (mean over
paths), the share of paths whose largest move is at most 35 % of it (and among the 28 pairs whose poems share a
form), the distinct points of 7, and the judge's nats per character of the middle points over the ends'.
Variations are 5 of each of 100 test poems at spread 0.5.

{table(cells)}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="these variants only")
    parser.add_argument("--steps", type=int, default=900, help="fine-tuning steps at batch 128 (default 900)")
    parser.add_argument("--pairs", type=int, default=100, help="interpolated pairs and varied poems (default 100)")
    parser.add_argument("--examples", type=int, default=300, help="test poems reconstructed for BLEU (default 300)")
    parser.add_argument("--judge", default="data/pretrained", help="the model that reads the paths: one no variant "
                        "trained with (default data/pretrained)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=Path("runs/smooth"))
    parser.add_argument("--results", type=Path, default=Path("docs/results/smooth"))
    parser.add_argument("--doc", type=Path, default=Path("docs/smooth-latent.md"))
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for name in args.only or VARIANTS:
        cell = args.results / f"{name}.json"
        if not cell.is_file():
            write_text(cell, json.dumps(measure(name, args), ensure_ascii=False, indent=1) + "\n")
            print(f"wrote {cell}", flush=True)
    cells = [json.loads((args.results / f"{name}.json").read_text()) for name in VARIANTS
             if (args.results / f"{name}.json").is_file()]
    print(table(cells))
    if args.results == Path("docs/results/smooth"):
        write_section(args.doc, "smooth", section(cells))


if __name__ == "__main__":
    main()
