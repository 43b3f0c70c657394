"""The posterior-collapse study: every remedy trained under one protocol, scored by `textvae evaluate`,
summarised in docs/results.md with plots.

    python scripts/collapse_study.py --data data/poems                      # the full study (~55 min, 2 workers)
    python scripts/collapse_study.py --data data/poems --steps 20 --only lm vanilla --out /tmp/study

Protocol: one model size (the poem-small preset: 128-d embeddings and GRU encoder, 256-d GRU decoder,
D = 32), one data set, the same number of steps and batch size (so the same token budget, as every run
sees the same batches for a seed), bf16 autocast, and the seeds in SEEDS for the headline rows. Only the
remedy changes. Each run trains with `textvae train`, then `textvae evaluate` scores its last checkpoint
on a fixed random subset of the test split (IW-NLL with --iw-samples importance samples; unconstrained
prior samples for the text and poem rates, so the form and rhyme rates are what the model learned).
Runs are resumable: a run whose eval.json exists is not run again. Workers run in parallel, each with
its own share of the CPU threads.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from textvae.atomic import write_text
from textvae.train import COLLAPSE_KL

SEEDS = (0, 1)
GAUSSIAN = ("--posterior", "gaussian")
CONSTANT = ("--kl-schedule", "constant")


@dataclass(frozen=True)
class Setting:
    name: str  # row label in the table
    flags: tuple  # `textvae train` flags on top of the preset and the protocol
    headline: bool = True  # headline rows (the baselines and one setting per remedy family) run for every
    # seed in SEEDS, the others for the first only: the 2-core machine's budget
    note: str = ""  # what the row varies


def settings(steps: int) -> list[Setting]:
    half = str(steps // 2)
    return [
        Setting("LM (no latent)", ("--posterior", "none", *CONSTANT), note="the same decoder without z"),
        Setting("vanilla VAE", (*GAUSSIAN, *CONSTANT), note="β = 1 from the first step"),
        Setting("linear annealing", (*GAUSSIAN, "--kl-schedule", "linear", "--kl-warmup-steps", half),
                note=f"β 0 → 1 over {half} steps"),
        Setting("cyclical annealing", (*GAUSSIAN, "--kl-schedule", "cyclical", "--kl-cycles", "4",
                                       "--kl-ratio", "0.5"), headline=False, note="4 cycles, β rises over half of each"),
        Setting("free bits λ=0.25/dim", (*GAUSSIAN, *CONSTANT, "--free-bits", "0.25", "--free-bits-mode", "dimension"),
                headline=False, note="Σ_j max(λ, KL_j), batch-mean KL per dimension"),
        Setting("BN γ=0.6", ("--posterior", "bn", "--gamma", "0.6", *CONSTANT), note="fixed γ on BN(μ)"),
        Setting("BN γ=0.3", ("--posterior", "bn", "--gamma", "0.3", *CONSTANT), headline=False, note="fixed γ on BN(μ)"),
        Setting("BN-τ τ=0.5", ("--posterior", "bn-tau", "--tau", "0.5", *CONSTANT), headline=False,
                note="τ-scaled μ and σ"),
        Setting("vMF κ=25", ("--posterior", "vmf", "--kappa", "25", *CONSTANT), headline=False, note="constant KL"),
        Setting("vMF κ=50", ("--posterior", "vmf", "--kappa", "50", *CONSTANT), note="constant KL"),
        Setting("vMF κ=100", ("--posterior", "vmf", "--kappa", "100", *CONSTANT), headline=False,
                note="constant KL"),
        # the encoder and decoder variants: collapse is about the decoder's strength, so each variant
        # runs at the two ends, with no remedy and with BN (the Transformer LM is left out for time)
        Setting("GCNN enc, vanilla", ("--encoder", "gcnn", *GAUSSIAN, *CONSTANT), headline=False,
                note="gated-CNN encoder"),
        Setting("GCNN enc, BN γ=0.6", ("--encoder", "gcnn", "--posterior", "bn", "--gamma", "0.6", *CONSTANT),
                headline=False, note="gated-CNN encoder"),
        Setting("Transformer dec, vanilla", ("--decoder", "transformer", "--decoder-layers", "2", *GAUSSIAN,
                                             *CONSTANT), headline=False, note="2-layer 256-d Transformer"),
        Setting("Transformer dec, BN γ=0.6", ("--decoder", "transformer", "--decoder-layers", "2", "--posterior",
                                              "bn", "--gamma", "0.6", *CONSTANT), headline=False,
                note="2-layer 256-d Transformer"),
    ]


def slug(name: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in name.lower().replace("γ", "g").replace("κ", "k")
                   .replace("τ", "t").replace("λ", "l"))
    return "-".join(part for part in keep.split("-") if part)

# -----------------------------------------------------------------------------
# running


@dataclass
class Run:
    setting: Setting
    seed: int
    run_dir: Path
    result: dict = field(default_factory=dict)


def command(*words) -> list[str]:
    return [sys.executable, "-m", "textvae", *words]


def execute(run: Run, args) -> Run:
    """Train and evaluate one run (skipped when its eval.json exists); its logs go to run_dir/*.log."""
    eval_path = run.run_dir / "eval.json"
    if not eval_path.exists():
        if run.run_dir.exists():
            shutil.rmtree(run.run_dir)  # an interrupted run starts over: the protocol is a fixed budget
        run.run_dir.mkdir(parents=True)
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        train = command("train", "--preset", "poem-small", "--data-dir", str(args.data),
                        "--run-dir", str(run.run_dir), "--max-steps", str(args.steps),
                        "--batch-size", str(args.batch_size), "--eval-every", str(max(1, args.steps // 6)),
                        "--eval-examples", str(args.valid_examples),
                        "--warmup-steps", str(max(1, args.steps // 20)), "--precision", "bf16",
                        "--seed", str(run.seed), *run.setting.flags)
        start = time.perf_counter()
        call(train, run.run_dir / "train.log", env)
        seconds = time.perf_counter() - start
        evaluate = command("evaluate", str(run.run_dir / "last"), "--data", str(args.data),
                           "--iw-samples", str(args.iw_samples), "--max-examples", str(args.examples),
                           "--num-samples", str(args.samples), "--precision", "bf16", "--seed", "0",
                           "--out", str(run.run_dir / "evaluate.json"), "--json")
        call(evaluate, run.run_dir / "evaluate.log", env)
        report = json.loads((run.run_dir / "evaluate.json").read_text()) | dict(train_seconds=seconds)
        write_text(eval_path, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    run.result = json.loads(eval_path.read_text())
    return run


def call(cmd: list[str], log: Path, env: dict) -> None:
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n--- {log} ---\n{log.read_text()[-3000:]}")


def plan(args) -> list[Run]:
    chosen = [s for s in settings(args.steps) if not args.only or slug(s.name) in args.only]
    runs = [Run(s, seed, args.out / f"{slug(s.name)}-seed{seed}")
            for s in chosen for seed in (SEEDS if s.headline else SEEDS[:1])]
    return sorted(runs, key=lambda run: run.seed)  # every setting's first seed before any second seed

# -----------------------------------------------------------------------------
# the report


COLUMNS = [  # header, how to read it from eval.json, format
    ("IW-NLL", lambda r: r["latent"].get("iw_nll"), ".2f"),
    ("IW-PPL", lambda r: r["latent"].get("iw_ppl"), ".1f"),
    ("ELBO-PPL", lambda r: r["latent"]["elbo_ppl"], ".1f"),
    ("KL", lambda r: r["latent"]["kl"], ".2f"),
    ("MI", lambda r: r["latent"].get("mi"), ".2f"),
    ("AU", lambda r: r["latent"].get("active_units"), ".1f"),
    ("AU 99%", lambda r: r["latent"].get("effective_units"), ".1f"),
    ("reliance", lambda r: r["latent"].get("decoder_reliance"), ".2f"),
    ("rec BLEU", lambda r: r["text"].get("reconstruction_bleu"), ".2f"),
    ("Self-BLEU", lambda r: r["text"]["samples"]["self_bleu"], ".1f"),
    ("distinct-2", lambda r: r["text"]["samples"]["distinct_2"], ".3f"),
    ("novel", lambda r: 1 - r["text"]["samples"]["copied_texts"], ".1%"),
    ("lines copied", lambda r: r["text"]["samples"].get("copied_lines"), ".1%"),
    ("form", lambda r: r["text"]["samples"].get("form"), ".1%"),
    ("rhyme", lambda r: r["text"]["samples"].get("rhyme"), ".1%"),
    ("train s", lambda r: r["train_seconds"], ".0f"),
]


def cell(values: list, spec: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if spec.endswith("%"):
        values = [100 * v for v in values]
        spec = spec[:-1] + "f"
    mean = format(statistics.mean(values), spec)
    return mean if len(values) == 1 else f"{mean} ± {statistics.stdev(values):{spec}}"


def table(runs: list[Run]) -> str:
    by_setting = {}
    for run in runs:
        by_setting.setdefault(run.setting, []).append(run.result)
    header = "| setting | seeds | collapsed | " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for setting, results in by_setting.items():
        cells = [cell([get(r) for r in results], spec) for _, get, spec in COLUMNS]
        lines.append(f"| {setting.name} | {len(results)} | {collapsed(results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collapsed(results: list[dict]) -> str:
    """The trainer's collapse rule (KL under COLLAPSE_KL nats or no active unit), per seed."""
    if results[0]["latent"].get("active_units") is None:
        return "no latent"
    verdicts = [r["latent"]["kl"] < COLLAPSE_KL or r["latent"]["active_units"] == 0 for r in results]
    return "yes" if all(verdicts) else "no" if not any(verdicts) else f"{sum(verdicts)} of {len(verdicts)}"


def validation_records(run: Run) -> list[dict]:
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "validation"]


def findings(runs: list[Run]) -> str:
    """Statements computed from the table: which settings collapsed, which kept a used latent, and the pick
    for the default model (among the headline settings with KL >= 5 and MI >= 2 nats, the lowest IW-NLL)."""
    groups = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run.result)
    mean = lambda results, key: statistics.mean(r["latent"].get(key) or 0.0 for r in results)  # noqa: E731
    latent = {s: rs for s, rs in groups.items() if rs[0]["latent"].get("active_units") is not None}
    lost = [s.name for s, rs in latent.items() if collapsed(rs) == "yes"]
    kept = [f"{s.name} (KL {mean(rs, 'kl'):.1f}, MI {mean(rs, 'mi'):.1f})" for s, rs in latent.items()
            if mean(rs, "kl") >= 0.5 and mean(rs, "mi") >= 0.5]
    silent = [s.name for s, rs in latent.items() if mean(rs, "kl") >= 0.5 and mean(rs, "mi") < 0.5]
    eligible = [(mean(rs, "iw_nll"), s.name) for s, rs in latent.items()
                if s.headline and mean(rs, "kl") >= 5 and mean(rs, "mi") >= 2]
    lines = [f"- Collapsed (KL < {COLLAPSE_KL} nats or no active unit): {', '.join(lost) or 'none'}.",
             f"- Kept KL and MI above 0.5 nats: {', '.join(kept) or 'none'}.",
             f"- KL above 0.5 nats but MI under 0.5 (the KL is paid, yet q(z|x) hardly depends on x): "
             f"{', '.join(silent) or 'none'}."]
    if eligible:
        nll, name = min(eligible)
        lines.append(f"- Pick for the default model (headline settings with KL ≥ 5 and MI ≥ 2 nats, lowest "
                     f"IW-NLL): **{name}** ({nll:.2f} nats).")
    return "\n".join(lines)


def validation_size(runs: list[Run]) -> int:
    """N of the validation MI (capped at log N): the validation set size a run's config recorded."""
    config = json.loads((runs[0].run_dir / "run_config.json").read_text())
    return config["train"]["eval_examples"]


def plots(runs: list[Run], figures: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures.mkdir(parents=True, exist_ok=True)
    first = [r for r in runs if r.seed == SEEDS[0] and r.setting.flags[:2] != ("--posterior", "none")]
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, run in enumerate(first):
        records = validation_records(run)
        steps = [r["step"] for r in records]
        style = dict(ls="-" if run.setting.headline else "--", color=plt.cm.tab20(i % 20), label=run.setting.name)
        axes[0].plot(steps, [r["kl"] for r in records], **style)
        axes[1].plot(steps, [r.get("mi", math.nan) for r in records], **style)
    axes[1].axhline(math.log(validation_size(runs)), color="k", lw=0.8, ls=":")  # the estimator's cap, log N
    for ax, what in zip(axes, ("KL(q(z|x) || p(z)) per poem, nats", "mutual information I_q(x; z), nats")):
        ax.set(xlabel="training step", ylabel=what, title=f"validation {what.split(',')[0]}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    written.append(save(fig, figures / "kl_mi_over_training.png"))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, run in enumerate(first):
        variances = sorted(run.result["latent"]["variance_per_dim"], reverse=True)
        ax.semilogy(range(1, len(variances) + 1), [max(v, 1e-8) for v in variances],
                    ls="-" if run.setting.headline else "--", color=plt.cm.tab20(i % 20), label=run.setting.name)
    ax.axhline(0.01, color="k", lw=0.8, ls=":")
    ax.set(xlabel="latent dimension (sorted)", ylabel="Var_x E_q[z_j]",
           title="per-dimension variance of the posterior mean (active above 0.01)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    written.append(save(fig, figures / "variance_per_dim.png"))
    return written


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path


def write_results(runs: list[Run], args) -> Path:
    figures = plots(runs, args.docs / "figures")
    train_minutes = sum(r.result["train_seconds"] for r in runs) / 60
    eval_minutes = sum(sum(r.result["seconds"].values()) for r in runs) / 60
    one = runs[0].result
    settings_text = "\n".join(f"- **{s.name}**: {s.note}; flags `{' '.join(s.flags)}`"
                              for s in dict.fromkeys(r.setting for r in runs))
    text = f"""# Posterior collapse: the remedies under one protocol

Produced by `python scripts/collapse_study.py {' '.join(sys.argv[1:])}`. The {len(runs)} runs took
{train_minutes:.0f} min of training and {eval_minutes:.0f} min of evaluation in all, {args.workers} at a time
with {args.threads} thread(s) each on the 2-core development machine.

**Protocol.** Every run trains the `poem-small` model (128-d embeddings, bidirectional GRU encoder
128 per direction, GRU decoder 256, D = 32, 8,000-piece character vocabulary)
for {args.steps} steps of {args.batch_size} poems (the same batches for a seed: {args.steps * args.batch_size:,}
poems, about {args.steps * args.batch_size / 225_679:.2f} epochs), AdamW at 2e-3 with cosine decay, bf16
autocast, and scores its last checkpoint with `textvae evaluate` on the same {one['latent']['examples']}
random test poems: IW-NLL with K = {args.iw_samples}, KL, whole-set MI, active units (Var > 0.01) and the
99 %-variance count, decoder reliance (rec NLL with another poem's z minus rec NLL with its own), and
{args.samples} unconstrained prior samples for Self-BLEU, distinct-2, novelty (not a training poem) and the
form and rhyme rates. Headline rows are mean ± sd over seeds {', '.join(map(str, SEEDS))}; the encoder and
decoder variants ran once.

{table(runs)}

{findings(runs)}

IW-NLL and KL are nats per poem; IW-PPL and ELBO-PPL are per token (characters, punctuation and end of
poem). "collapsed" applies the trainer's warning rule to the test figures: KL under {COLLAPSE_KL} nats or no
active unit. "train s" is the training wall time with {args.threads} thread(s) while {args.workers} runs shared the machine.

The settings:
{settings_text}

The curves are the validation figures logged during training ({validation_size(runs)} poems; the dotted
line is log N, the most the whole-set MI estimator can report). The variance plot shows Var_x E_q[z_j] per
dimension, sorted; a unit is active above the dotted 0.01.

![KL and MI over training](figures/{figures[0].name})

![Per-dimension variance of E_q[z]](figures/{figures[1].name})
"""
    path = args.docs / "results.md"
    write_text(path, text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="prepared dataset (default data/poems)")
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="run folders (default runs/study)")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="where results.md and figures/ go")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--batch-size", type=int, default=64, help="poems per step (default 64)")
    parser.add_argument("--valid-examples", type=int, default=1000,
                        help="validation poems for the curves during training (default 1000)")
    parser.add_argument("--iw-samples", type=int, default=50, help="K for IW-NLL (default 50)")
    parser.add_argument("--examples", type=int, default=300, help="test poems scored (default 300)")
    parser.add_argument("--samples", type=int, default=200, help="prior samples per run (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--only", nargs="+", default=[], help="run only these settings, by slug "
                        "(the setting name in lower case, e.g. vanilla-vae, bn-g-0-6)")
    args = parser.parse_args()
    if not (args.data / "dataset").is_dir():
        parser.error(f"{args.data} is not a prepared dataset: run `textvae prepare poems` first")
    if min(args.steps, args.batch_size, args.examples, args.valid_examples, args.workers, args.threads) < 1 or args.samples < 2:
        parser.error("--steps, --batch-size, --examples, --valid-examples, --workers, --threads must be >= 1; --samples >= 2")
    runs = plan(args)
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(execute, run, args) for run in runs]
        for future in tqdm(as_completed(futures), total=len(futures), desc="study runs", unit="run"):
            future.result()
    path = write_results(runs, args)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
