"""The learned-prior study: every kind of prior over z a model folder holds (gmm, flow, diffusion; N(0, I) the
reference), beside the ceiling of z drawn from held-out posteriors, on the shipped models. Each cell is one model
under one prior:

- `scripts/sample_report.py` rows 7x4 (unsteered, form fixed) and auto (the automatic form): form, rhyme, tonal
  pattern, distinct-2, copies and lines found in training, and the judge's nats per character, where the judge is
  the other model (a model never judges its own samples);
- `textvae evaluate --iw-prior KIND` on the test split (or a seeded subset) where the prior has log p(z);
- the cost of drawing z against decoding the poems it starts, timed in one process.

    python scripts/prior_study.py                                   # data/faithful and data/pretrained
    python scripts/prior_study.py --n 50 --iw-samples 2 --results /tmp/priors   # a smoke test

A finished cell is written to docs/results/priors/<model>-<prior>.json with the commands that made it and is never
run again (delete the file to redo it); the table and the plot go into docs/priors.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from textvae import TextVAE  # noqa: E402
from textvae.atomic import write_section, write_text  # noqa: E402
from textvae.generate import Decoding, constraint_for, decode, prior_sample  # noqa: E402

PRIORS = ("standard", "gmm", "flow", "diffusion", "posterior", "posterior-mean")  # the last two: held-out ceilings
CEILINGS = {"posterior": ("held-out posterior draws (ceiling)", "tab:red"),
            "posterior-mean": ("held-out posterior means (ceiling)", "tab:green")}
ROWS = ("7x4", "auto")


def judge_of(model_dir: Path) -> str:
    """The other shipped model: a model never judges its own samples."""
    return "data/pretrained" if "faithful" in model_dir.name else "data/faithful"


def run(cmd: list[str], threads: int) -> None:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def timing(model_dir: Path, prior: str, n: int, seed: int) -> dict:
    """Seconds to draw n latents from the prior, and to decode n unsteered 7x4 poems from them."""
    model = TextVAE.from_pretrained(model_dir)
    constraint = constraint_for(model.tokenizer, "7x4")
    torch.manual_seed(seed)
    with torch.inference_mode():
        start = time.perf_counter()
        z = prior_sample(model, n, prior)
        drawn = time.perf_counter()
        decode(model, z, decoding=Decoding(strategy="sample"), constraint=constraint)
        decoded = time.perf_counter()
    return dict(n=n, prior_seconds=drawn - start, decode_seconds=decoded - drawn,
                prior_share=(drawn - start) / (decoded - drawn))


def cell(model_dir: Path, prior: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        samples = [sys.executable, "scripts/sample_report.py", str(model_dir), "--data", str(args.data), "--n",
                   str(args.n), "--seed", "0", "--prior", prior, "--rows", *ROWS, "--judge", judge_of(model_dir),
                   "--out", f"{tmp}/samples.json"]
        run(samples, args.threads)
        result = dict(model=str(model_dir), prior=prior, commands=[" ".join(samples[1:]).replace(tmp, "TMP")],
                      samples=json.loads(Path(tmp, "samples.json").read_text()))
        if prior in args.iw_priors and args.iw_samples:
            iw = ["textvae", "evaluate", str(model_dir), "--data", str(args.data), "--iw-samples",
                  str(args.iw_samples), "--iw-prior", prior, "-n", "0", "--max-examples",
                  str(args.max_examples), "--seed", "0", "--json", "--out", f"{tmp}/eval.json"]
            run(iw, args.threads)
            result["commands"].append(" ".join(iw).replace(tmp, "TMP"))
            result["latent"] = json.loads(Path(tmp, "eval.json").read_text())["latent"]
    if prior not in CEILINGS:
        torch.set_num_threads(args.threads)
        result["timing"] = timing(model_dir, prior, args.n, seed=0)
    for row in result["samples"]["rows"].values():
        row["examples"] = row["examples"][:3]
    return result


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(cells: dict) -> str:
    lines = ["| model | p(z) | 7x4 rhyme % | 7x4 tonal % | auto: regular % | distinct-2 | copies % | lines in "
             "training % | judge nats/char | IW-NLL | drawing z, % of decoding |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, prior), c in cells.items():
        rows = c["samples"]["rows"]
        seven, auto = rows["7x4"], rows["auto"]
        iw = c.get("latent", {}).get("iw_nll")
        share = c.get("timing", {}).get("prior_share")
        label = CEILINGS[prior][0] if prior in CEILINGS else prior
        lines.append(f"| {model} | {label} | {pct(seven['rhyme'])} | {pct(seven['tonal'])} | {pct(auto['form'])} | "
                     f"{seven['distinct_2']:.3f} | {pct(seven['copied_texts'])} | {pct(seven['copied_lines'])} | "
                     f"{seven['judge_nats_per_char']:.3f} | {'–' if iw is None else f'{iw:.2f}'} | "
                     f"{'–' if share is None else f'{100 * share:.2f}'} |")
    return "\n".join(lines)


def plot(cells: dict, out: Path) -> None:
    models = sorted({m for m, p in cells if p in CEILINGS})
    measures = (("rhyme", "7x4 rhyme (%)"), ("tonal", "7x4 tonal pattern (%)"), ("judge_nats_per_char",
                                                                                 "judge nats/char (lower is better)"))
    fig, axes = plt.subplots(len(models), len(measures), figsize=(13, 3.4 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        kinds = [p for p in PRIORS if (model, p) in cells and p not in CEILINGS]
        for j, (key, title) in enumerate(measures):
            ax = axes[i][j]
            scale = 1 if key == "judge_nats_per_char" else 100
            values = [scale * cells[model, p]["samples"]["rows"]["7x4"][key] for p in kinds]
            ax.bar(kinds, values, color="tab:blue")
            for ceiling, (label, colour) in CEILINGS.items():
                if (model, ceiling) in cells:
                    value = scale * cells[model, ceiling]["samples"]["rows"]["7x4"][key]
                    ax.axhline(value, color=colour, linestyle="--", label=label.replace(" (ceiling)", ""))
                    values.append(value)
            ax.legend(loc="lower right", fontsize=7)
            if key == "judge_nats_per_char":
                ax.set_ylim(min(values) - 0.3, max(values) + 0.1)
            ax.set_title(f"{model}: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


REPORT = """## Learned priors: samples from each p(z) against the held-out ceiling

Produced by `python scripts/prior_study.py` ({done} cells; each cell's commands and figures are in
`docs/results/priors/`). Every row draws {n} samples at temperature 1, seeded, on the test split's terms:
*7x4* fixes the form and steers nothing else, *auto* lets the model pick a regular form as it writes. The judge
is the other shipped model (data/pretrained judges data/faithful and the reverse), scoring each sample's −ELBO per
character. *Held-out posterior draws* decodes one z ~ q(z|x) of a random test poem per sample (of the row's form
where it fixes one, since the priors learn p(z | form)): what a prior that matched the aggregate posterior exactly
would give on poems the model never saw; *held-out posterior means* decodes their means instead, the ceiling of a
prior fitted to posterior means. IW-NLL is `textvae evaluate --iw-prior KIND` with K = {k} on a seeded subset of
the test split (`--max-examples`, in each cell's commands), in nats per poem; the last column is the time to draw z
as a share of the time to decode the poems it starts, in one process with {threads} thread(s).

{table}

![each prior's samples against the held-out ceiling](figures/priors.png)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, default=[Path("data/faithful"), Path("data/pretrained")])
    parser.add_argument("--data", type=Path, default=Path("data/poems"))
    parser.add_argument("--n", type=int, default=1000, help="samples per row (default 1000)")
    parser.add_argument("--iw-samples", type=int, default=100, help="K of the IW-NLL (0 skips it; default 100)")
    parser.add_argument("--max-examples", type=int, default=0, help="test poems the IW-NLL scores (0: all)")
    parser.add_argument("--priors", nargs="+", choices=PRIORS, default=list(PRIORS), help="the cells to run")
    parser.add_argument("--iw-priors", nargs="+", choices=("standard", "gmm", "flow"), default=["standard", "flow"],
                        help="the priors whose IW-NLL is measured (a prior fitted to posterior means gives a poor "
                             "bound: it is far narrower than the posteriors it must score)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    folder = args.results / "priors"
    folder.mkdir(parents=True, exist_ok=True)
    for model_dir in args.models:
        held = TextVAE.from_pretrained(model_dir).priors
        for prior in PRIORS:
            if prior not in ("standard", *CEILINGS) and prior not in held:
                continue
            path = folder / f"{model_dir.name}-{prior}.json"
            if not path.is_file() and prior in args.priors:
                print(f"{model_dir.name} under {prior}", flush=True)
                write_text(path, json.dumps(cell(model_dir, prior, args), ensure_ascii=False, indent=1) + "\n")
    cells = {}  # every cell done so far, by (model folder name, prior), in table order
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        cells[Path(result["model"]).name, result["prior"]] = result
    cells = dict(sorted(cells.items(), key=lambda item: (item[0][0], PRIORS.index(item[0][1]))))
    figure = args.results.parent / "figures" / "priors.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot(cells, figure)
    text = REPORT.format(done=len(cells), n=args.n, k=args.iw_samples, threads=args.threads, table=table(cells))
    write_section(args.results.parent / "priors.md", "priors", text)
    print(table(cells) + f"\n\nwrote {figure} and the priors section of {args.results.parent / 'priors.md'}")


if __name__ == "__main__":
    main()
