"""The rate-distortion study: poem models trained at one budget from ~5 to ~200 nats of KL, and the
ways of setting the rate compared at one target. Each run is scored by `textvae evaluate` under both priors
after `textvae fit-prior`, and the table and the plot go into docs/rate-study.md.

    python scripts/rate_study.py                    # the whole queue (hours: resumable)
    python scripts/rate_study.py --only target-80 free-bits-l-80 --steps 30 --iw-samples 2 --samples 20 \\
        --max-examples 20 --prior-points 2000 --results /tmp/rate --runs /tmp/rate-runs   # a smoke test

A queue, as scripts/collapse_study.py's: runs go --workers at a time with --threads each; a finished run's
figures are committed as docs/results/rate-runs/<run>.json with the commit and the commands that made it, and
are never run again; a run cut short resumes from its last checkpoint in runs/rate/<run>/.
"""

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from collapse_study import Setting, call, cell, command, git_commit, slug
from tqdm import tqdm

from textvae.atomic import write_section, write_text

PRESET, LATENT_DIM, STEPS, EVAL_EVERY = "poem-v2", 64, 1800, 300  # one epoch of the poem corpus a run
TARGET = 80  # the rate the ways of setting it are compared at (nats per poem)
GAUSSIAN = ("--posterior", "gaussian")


def _target(c: int) -> Setting:
    return Setting(f"target {c}", (*GAUSSIAN, "--target-kl", str(c)), note=f"β·|KL̄ − {c}| (rate target)")


SETTINGS = (  # the comparison at TARGET first, then the rest of the curve
    _target(TARGET),
    Setting(f"free bits λ={TARGET}", (*GAUSSIAN, "--free-bits", str(TARGET)), note=f"max({TARGET}, KL) per poem"),
    Setting("BN γ=1.58", ("--posterior", "bn", "--gamma", "1.58"),
            note=f"batch-norm on μ: KL ≥ Dγ²/2 = {LATENT_DIM * 1.58 ** 2 / 2:.0f} nats"),
    Setting("β=0.3", (*GAUSSIAN, "--beta-max", "0.3"), note="the KL weighted 0.3 (the rate is an outcome)"),
    *(_target(c) for c in (5, 20, 40, 120, 200)),
)
PRIORS = ("standard", "aggregate")


def run_slug(setting: Setting) -> str:
    return slug(setting.name)


def result_path(setting: Setting, args) -> Path:
    return args.results / "rate-runs" / f"{run_slug(setting)}.json"


def execute(setting: Setting, args) -> dict:
    """Train (or resume), fit the aggregate prior, evaluate under both priors: the run's figures as JSON."""
    name = run_slug(setting)
    run_dir = args.runs / name
    if run_dir.exists() and not (run_dir / "last" / "trainer_state.pt").is_file():
        shutil.rmtree(run_dir)  # cut before its first checkpoint: nothing to resume
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    resume = ["--resume"] if (run_dir / "last" / "trainer_state.pt").is_file() else []
    train = command("train", "--preset", PRESET, "--data-dir", str(args.data), "--run-dir", str(run_dir),
                    "--latent-dim", str(LATENT_DIM), "--max-steps", str(args.steps),
                    "--eval-every", str(min(EVAL_EVERY, args.steps)), *setting.flags, *resume)
    start = time.perf_counter()
    log = args.runs / f"{name}.log"
    call(train, log, env)
    best = run_dir / "best"
    commands = [train, command("fit-prior", str(best), "--data", str(args.data),
                               "--max-points", str(args.prior_points))]
    call(commands[-1], log, env)
    reports = {}
    for prior in PRIORS:
        out = run_dir / f"evaluate-{prior}.json"
        commands.append(command("evaluate", str(best), "--data", str(args.data), "--prior", prior, "--form", "free",
                                "--iw-prior", prior, "--iw-samples", str(args.iw_samples),
                                "-n", str(args.samples), "--max-examples", str(args.max_examples),
                                "--seed", "0", "--out", str(out), "--json"))
        call(commands[-1], log, env)
        reports[prior] = json.loads(out.read_text())
    config = json.loads((run_dir / "run_config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    prior_file = json.loads((best / "prior.json").read_text())
    result = dict(name=setting.name, flags=list(setting.flags), commit=git_commit(args.results),
                  iw_samples=args.iw_samples,
                  commands=[" ".join(c[2:]).replace(str(args.runs), "runs/rate") for c in commands],
                  wall_seconds_this_session=round(time.perf_counter() - start), config=config,
                  latent=reports["standard"]["latent"], reconstruction=reports["standard"]["text"],
                  iw_nll_aggregate=reports["aggregate"]["latent"]["iw_nll"],
                  samples={p: reports[p]["text"]["samples"] for p in PRIORS},
                  prior_components=prior_file.get("components"),
                  validation=[r for r in records if r["split"] == "validation"])
    write_text(result_path(setting, args), json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    return result

# -----------------------------------------------------------------------------
# the report


def load_results(args) -> list[dict]:
    order = {s.name: i for i, s in enumerate(SETTINGS)}
    folder = args.results / "rate-runs"
    results = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(results, key=lambda r: order.get(r["name"], len(order)))


def _sample(prior: str, key: str):
    return lambda r: r["samples"][prior].get(key)


def _novel(prior: str):
    return lambda r: 1 - r["samples"][prior]["copied_lines"]


RATE_COLUMNS = [  # header, how to read it from a run file, format
    ("KL", lambda r: r["latent"]["kl"], ".1f"),
    ("MI", lambda r: r["latent"].get("mi"), ".2f"),
    ("AU", lambda r: r["latent"].get("active_units"), ".0f"),
    ("IW-NLL", lambda r: r["latent"].get("iw_nll"), ".1f"),
    ("IW-NLL (agg.)", lambda r: r.get("iw_nll_aggregate"), ".1f"),
    ("−ELBO", lambda r: -r["latent"]["elbo"], ".1f"),
    ("rec BLEU", lambda r: r["reconstruction"]["reconstruction_bleu"], ".1f"),
]
SAMPLE_COLUMNS = [(f"{label} ({ {'standard': 'std.', 'aggregate': 'agg.'}[p]})", get(p), spec) for label, get, spec in (
    ("form", lambda p: _sample(p, "form"), ".2f"), ("rhyme", lambda p: _sample(p, "rhyme"), ".2f"),
    ("tonal", lambda p: _sample(p, "tonal"), ".2f"), ("distinct-2", lambda p: _sample(p, "distinct_2"), ".2f"),
    ("new lines", _novel, ".3f")) for p in PRIORS]
KL, NLL, BLEU = (get for header, get, _ in RATE_COLUMNS if header in ("KL", "IW-NLL", "rec BLEU"))


def table(results: list[dict], columns: list) -> str:
    lines = ["| setting | " + " | ".join(h for h, _, _ in columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(cell([get(r)], spec) for _, get, spec in columns) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curve = sorted((r for r in results if r["name"].startswith("target")), key=KL)
    others = [r for r in results if not r["name"].startswith("target")]
    fig, bleu_axis = plt.subplots(figsize=(7, 4.2))
    nll_axis = bleu_axis.twinx()
    for axis, get, color, label in ((bleu_axis, BLEU, "tab:blue", "reconstruction BLEU"),
                                    (nll_axis, NLL, "tab:red", "IW-NLL (nats / poem)")):
        axis.plot([KL(r) for r in curve], [get(r) for r in curve], "o-", color=color, label=label)
        axis.scatter([KL(r) for r in others], [get(r) for r in others], marker="s", color=color, facecolors="none")
        axis.set_ylabel(label, color=color)
    for r in others:
        bleu_axis.annotate(r["name"], (KL(r), BLEU(r)), fontsize=7, xytext=(4, 4),
                           textcoords="offset points")
    bleu_axis.set_xlabel("KL (nats / poem), test split")
    bleu_axis.set_title("Rate and distortion of poem VAEs at one budget (line: rate target; squares: other ways)")
    bleu_axis.title.set_fontsize(9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def section(results: list[dict], args) -> str:
    first = results[0]
    settings = "\n".join(f"- **{s.name}**: {s.note}; flags `{' '.join(s.flags)}`" for s in SETTINGS)
    train = first["config"]["train"]
    return f"""## The rate-distortion study: poems

Produced by `python scripts/rate_study.py` ({len(results)} of {len(SETTINGS)} runs done; each run's figures,
commit and commands are in `docs/results/rate-runs/`). Every run trains `textvae train --preset {PRESET}
--latent-dim {LATENT_DIM}` for {train['max_steps']:,} steps of {train['batch_size']} poems, with only the
setting's flags changed (a Gaussian posterior but for the BN row); `textvae fit-prior` fits the aggregate prior to its best
checkpoint, and `textvae evaluate --form free` scores it on {first['latent']['examples']:,} test poems: KL,
whole-set MI, active units, IW-NLL (K = {first['iw_samples']}) with the standard prior N(0, I) and with the
aggregate prior as p(z) (agg., `--iw-prior aggregate`), and −ELBO in nats per poem, and reconstruction
char-BLEU (sacrebleu, zh; posterior mean, greedy, each poem's form kept):

{table(results, RATE_COLUMNS)}

and {first['samples']['standard']['count']} prior samples, free form, under the standard prior N(0, I) (std.) and
the aggregate prior (agg.): the share that are regular poems (form), of those the share that rhyme and that
keep the tonal pattern, distinct-2, and the share of their lines not found in the training split (new lines):

{table(results, SAMPLE_COLUMNS)}

![rate and distortion](figures/rate-distortion.png)

The settings:
{settings}
"""


def write_report(args) -> None:
    results = load_results(args)
    if not results:
        return
    plot(results, args.results.parent / "figures" / "rate-distortion.png")
    write_section(args.results.parent / "rate-study.md", "study-rate", section(results, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="prepared dataset")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="committed run files (default "
                        "docs/results; the report section and plot go into its parent)")
    parser.add_argument("--runs", type=Path, default=Path("runs/rate"), help="run folders and logs")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS}; smoke tests)")
    parser.add_argument("--iw-samples", type=int, default=100, help="K for IW-NLL (default 100)")
    parser.add_argument("--max-examples", type=int, default=0, help="test poems scored (default 0: all)")
    parser.add_argument("--samples", type=int, default=500, help="prior samples per prior (default 500)")
    parser.add_argument("--prior-points", type=int, default=100_000, help="training poems the aggregate prior "
                        "is fitted on (default 100,000)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--only", nargs="+", default=[], help="only these settings, by slug (e.g. target-80)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table from the committed files")
    args = parser.parse_args()
    if not (args.data / "dataset").is_dir():
        parser.error(f"{args.data} is not a prepared dataset: run `textvae prepare poems` first")
    counts = (args.workers, args.threads, args.iw_samples, args.steps, args.prior_points)
    if min(counts) < 1 or args.samples < 2 or args.max_examples < 0:
        parser.error("--workers, --threads, --iw-samples, --steps and --prior-points must be >= 1, "
                     "--samples >= 2, --max-examples >= 0")
    unknown = set(args.only) - {run_slug(s) for s in SETTINGS}
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}: choose from {[run_slug(s) for s in SETTINGS]}")
    chosen = [s for s in SETTINGS if not args.only or run_slug(s) in args.only]
    todo = [] if args.report_only else [s for s in chosen if not result_path(s, args).exists()]
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(execute, s, args) for s in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="rate study", unit="run"):
            result = future.result()
            tqdm.write(f"{result['name']}: KL {result['latent']['kl']:.1f}, "
                       f"BLEU {result['reconstruction']['reconstruction_bleu']:.1f}")
            write_report(args)
    write_report(args)
    print(f"results: {args.results}/rate-runs/ and the study-rate section of {args.results.parent / 'rate-study.md'}")


if __name__ == "__main__":
    main()
