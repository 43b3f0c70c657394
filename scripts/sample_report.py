"""The poem model's sampling report: prior samples under each form and steering, scored with the
project's own metrics, beside the same figures for the test split's poems.

    python scripts/sample_report.py data/pretrained                       # writes data/pretrained/samples.json
    python scripts/sample_report.py runs/poem-v2/best --n 200 --out /tmp/samples.json
    python scripts/sample_report.py data/faithful --judge data/pretrained      # also scored by another model
    python scripts/sample_report.py data/faithful --prior posterior --rows 7x4   # the held-out ceiling

Rows (each N samples at temperature 1, seeded):
- free: the model decides the shape (`--form free`); well-formed is its share of regular poems.
- auto / drawn: the automatic form (the model picks it as it writes) and forms drawn from the corpus's shares;
  `form_shares` beside the training corpus's.
- 5x4 ... 7x8: the form fixed, nothing else steered: the rhyme and tonal rates are the model's own.
- 5x4 meter+rhyme ...: `--meter --rhyme auto`, with the rules relaxed (where a position had no allowed
  character left) counted.
`--prior` picks where z comes from: a prior the model has (as `sample --prior`), or `posterior`, one draw
z ~ q(z|x) from each of n test poems picked at random (of the row's form where it fixes one, as a prior that
knows forms samples p(z | form)): the ceiling a prior that matched the aggregate posterior exactly would reach on
poems the model never saw (training posteriors would decode to near-copies); `posterior-mean` takes their means.
Copies are checked against the training split: whole poems and single lines. With --judge MODEL each row and the
test poems are also scored by that model's -ELBO per character (z at its posterior mean): a model of real poems
reads samples from a hole in the latent space as it reads gibberish, where form and rhyme checks may pass them.
"""

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from textvae.atomic import check_can_write, write_keeping_previous
from textvae.errors import TextVAEError
from textvae.evaluate import load, nats_per_character, text_report
from textvae.generate import (PRIORS, Decoding, check_prior, constraint_for, decode, load_model, posterior, sample,
                              seeded)
from textvae.poetry import FORMS, form_of, rhyme_rate, split_lines, tonal_compliance
from textvae.poetry.constraints import CORPUS_FORMS

HELD_OUT = ("posterior", "posterior-mean")  # the ceilings: z from held-out test poems' posteriors
ROWS = {  # name: (form, rhyme, meter)
    "free": ("free", None, False), "auto": ("auto", None, False), "drawn": ("drawn", None, False),
    **{form: (form, None, False) for form in FORMS},
    **{f"{form} meter+rhyme": (form, "auto", True) for form in FORMS},
}


def shares(counts: Counter) -> dict[str, float]:
    total = sum(counts[f] for f in FORMS)
    return {f: counts[f] / total if total else 0.0 for f in FORMS}


def corpus_by_form(texts: list[str]) -> dict:
    """Rhyme and tonal rates of the reference poems, per regular form."""
    poems = [split_lines(t) for t in texts]
    out = {}
    for form in FORMS:
        these = [p for p in poems if form_of(p) == form]
        out[form] = dict(count=len(these), rhyme=rhyme_rate(these)[0], tonal=tonal_compliance(these))
    return out


def judge_nats_per_character(judge, texts: list[str]) -> float:
    """Mean over texts of the judge's -ELBO (z at the posterior mean) divided by the text's characters."""
    return statistics.mean(nats_per_character(judge, texts))


def held_out_posterior_samples(model, n: int, form: str, constraint, test_texts: list[str], seed: int,
                               mean: bool) -> list[str]:
    """Decodings of one z ~ q(z|x) (or its mean) for each of n test poems drawn at random (with replacement),
    poems of `form` only where it is a fixed one."""
    if form in FORMS:
        test_texts = [t for t in test_texts if form_of(split_lines(t)) == form]
    with seeded(seed, torch.device("cpu")):
        picks = torch.randint(len(test_texts), (n,)).tolist()
        qs = [posterior(model, [test_texts[i] for i in picks[s:s + 500]]) for s in range(0, n, 500)]
        z = torch.cat([q.mean if mean else q.sample() for q in qs])
        return decode(model, z, decoding=Decoding(strategy="sample"), constraint=constraint)


def sample_row(model, name: str, args, train_texts: set, train_lines: set, judge, test_texts: list[str]) -> dict:
    form, rhyme, meter = ROWS[name]
    constraint = constraint_for(model.tokenizer, form, rhyme=rhyme, meter=meter)
    if args.prior in HELD_OUT:
        poems = held_out_posterior_samples(model, args.n, form, constraint, test_texts, args.seed,
                                           mean=args.prior == "posterior-mean")
    else:
        poems = sample(model, args.n, decoding=Decoding(strategy="sample"), constraint=constraint, seed=args.seed,
                       prior=args.prior, prior_steps=args.prior_steps)
    report = text_report(poems, train_texts, train_lines, poems=True)
    counts = Counter(form_of(split_lines(p)) for p in poems)
    if judge is not None:
        report["judge_nats_per_char"] = judge_nats_per_character(judge, poems)
    return report | dict(constrained_form=form, rhyme_steering=rhyme or "off", meter_steering=meter,
                         form_shares=shares(counts), relaxed=dict(constraint.relaxed),
                         examples=poems[:5])


def percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def table(report: dict) -> str:
    corpus = report["corpus"]
    judged = "judge" in corpus
    rows = ["| samples | well-formed | rhyme | tonal pattern | corpus rhyme / tonal | training poems copied | "
            "lines found in training | distinct-2 |" + (" judge nats/char |" if judged else ""),
            "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if judged else "")]
    for name, r in report["rows"].items():
        ref = corpus["by_form"].get(r["constrained_form"])
        beside = f"{percent(ref['rhyme'])} / {percent(ref['tonal'])}" if ref else "–"
        rows.append(f"| {name} | {percent(r['form'])} | {percent(r['rhyme'])} | {percent(r['tonal'])} | {beside} | "
                    f"{percent(r['copied_texts'])} | {percent(r['copied_lines'])} | {r['distinct_2']:.3f} |"
                    + (f" {r['judge_nats_per_char']:.3f} |" if judged else ""))
    if judged:
        rows.append(f"| test poems | | | | | | | | {corpus['judge']['nats_per_char']:.3f} |")
    shares_rows = ["| form shares | " + " | ".join(FORMS) + " |", "|---|" + "---:|" * len(FORMS)]
    for name in ("auto", "drawn"):
        if name in report["rows"]:
            got = report["rows"][name]["form_shares"]
            shares_rows.append(f"| {name} | " + " | ".join(percent(got[f]) for f in FORMS) + " |")
    shares_rows.append("| training corpus | " + " | ".join(percent(corpus["form_shares"][f]) for f in FORMS) + " |")
    return "\n".join(rows) + "\n\n" + "\n".join(shares_rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="the prepared dataset")
    parser.add_argument("--n", type=int, default=1000, help="samples per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", choices=[*PRIORS, *HELD_OUT], default="auto",
                        help="where z comes from: as `sample --prior`, or posterior | posterior-mean (held-out "
                             "test posteriors: see above)")
    parser.add_argument("--prior-steps", type=int, help="a diffusion prior's DDIM steps (as `sample --prior-steps`)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), help="only these rows")
    parser.add_argument("--judge", type=Path, help="a model folder that also scores every row (see above)")
    parser.add_argument("--out", type=Path, help="the JSON report (default MODEL_DIR/samples.json); an existing "
                                                 "one is kept, renamed NAME.<its time>.json")
    args = parser.parse_args()
    out = args.out or args.model_dir / "samples.json"
    try:
        if not 1 <= args.n <= 100_000:
            raise TextVAEError(f"--n must be from 1 to 100000, not {args.n}")
        if out.is_dir():
            raise TextVAEError(f"--out {out} is a folder: give a file name")
        check_can_write(out.parent, "--out")
        model, dataset = load(args.model_dir, args.data)
        prior = args.prior if args.prior in HELD_OUT else check_prior(model, args.prior)
        judge = None if args.judge is None else load_model(args.judge)
        if "lines" not in dataset["test"].column_names:
            raise TextVAEError(f"{args.data} is not a poem dataset: the report scores regular verse")
    except TextVAEError as e:
        sys.exit(f"error: {e}")
    train = dataset["train"].data
    train_texts = set(train.column("text").to_pylist())
    train_lines = {x for lines in train.column("lines").to_pylist() for x in lines}
    test_texts = dataset["test"].data.column("text").to_pylist()
    report = dict(model=str(args.model_dir), data=str(args.data), n=args.n, seed=args.seed, temperature=1.0,
                  prior=prior, prior_steps=args.prior_steps,
                  corpus=dict(split="test", by_form=corpus_by_form(test_texts),
                              form_shares=shares(Counter(CORPUS_FORMS))), rows={})
    if judge is not None:
        report["corpus"]["judge"] = dict(model=str(args.judge),
                                         nats_per_char=judge_nats_per_character(judge, test_texts))
    for name in tqdm(args.rows or list(ROWS), desc="sampling", unit="row"):
        report["rows"][name] = sample_row(model, name, args, train_texts, train_lines, judge, test_texts)
    kept = write_keeping_previous(out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    print(table(report) + f"\nwrote {out}" + (f" (the previous report is kept as {kept})" if kept else ""))


if __name__ == "__main__":
    main()
