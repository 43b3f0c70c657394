"""The posterior-collapse study on two corpora: each remedy trained under one protocol to a real budget,
scored by `textvae evaluate`, and written into docs/collapse-study.md with the published figures beside ours.

    python scripts/collapse_study.py --study ptb        # Penn Treebank, 40 epochs a run (hours: resumable)
    python scripts/collapse_study.py --study poems      # the poem corpus, one epoch a run, the fast path
    python scripts/collapse_study.py --study ptb --only lm-no-latent bn-g-0-7 --steps 40 --iw-samples 5 \\
        --max-examples 50 --results /tmp/study --runs /tmp/study-runs   # a smoke test

A queue: runs go --workers at a time with --threads each (two at a time with one thread each fills
2 CPU cores). A finished run's figures are committed as docs/results/<study>-runs/<run>.json, with the
commit and the commands that made it; a run whose file exists is not run again, and a run cut short
resumes exactly from its last checkpoint in runs/<study>/<run>/ (`textvae train --resume`). After each run
the table (docs/results/<study>.json and the <study> section of docs/collapse-study.md) is rewritten from the
files present, so a partial study reads as one. Headline settings run every seed in SEEDS, the others the
first seed only.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from textvae.atomic import write_section, write_text
from textvae.presets import PRESETS
from textvae.train import COLLAPSE_KL
from textvae.vae import TextVAE

SEEDS = (0, 1)
DOC = "collapse-study.md"  # the report, beside the results folder: docs/collapse-study.md
GAUSSIAN = ("--posterior", "gaussian")
CONSTANT = ("--kl-schedule", "constant")
FREE_BITS = ("--free-bits", "0.25", "--free-bits-mode", "dimension")


@dataclass(frozen=True)
class Setting:
    name: str  # row label in the table
    flags: tuple  # `textvae train` flags on top of the study's preset
    headline: bool = True  # run for every seed in SEEDS (else the first only, to save CPU time)
    note: str = ""  # what the row varies
    pretrain: tuple = ()  # flags of a first run whose last/ starts this one's encoder (Li et al. 2019)
    prior_of: str = ""  # the setting whose trained runs this row scores again with a learned prior
    prior_kind: str = "gmm"  # that prior: `textvae fit-prior --kind`


@dataclass(frozen=True)
class Study:
    name: str
    preset: str  # the model and the training protocol: `textvae train --preset`
    data: str
    unit: str  # what one example is, for the table's units
    settings: tuple[Setting, ...]
    published: tuple[dict, ...] = ()  # rows read from papers and peers' READMEs, shown beside ours
    steps: int | None = None  # training steps and validation interval where not the preset's
    eval_every: int | None = None
    iw_samples: int = 500  # K for IW-NLL on the test split
    setup: str = ""  # how our model differs from the published rows' models


def _remedies(epoch: int) -> tuple[Setting, ...]:
    """The settings both studies share; annealing spans the first ten epochs of PTB's forty (texar's and
    Li et al.'s warm-up), half of the one poem epoch."""
    return (
        Setting("LM (no latent)", ("--posterior", "none", *CONSTANT), note="the same decoder without z"),
        Setting("vanilla VAE", (*GAUSSIAN, *CONSTANT), note="β = 1 from the first step"),
        Setting("linear annealing", (*GAUSSIAN, "--kl-schedule", "linear", "--kl-warmup-steps", str(epoch)),
                headline=False, note=f"β 0 → 1 over {epoch:,} steps"),
        Setting("cyclical annealing", (*GAUSSIAN, "--kl-schedule", "cyclical", "--kl-cycles", "4", "--kl-ratio", "0.5"),
                headline=False, note="4 cycles, β rises over the first half of each (Fu et al. 2019)"),
        Setting("free bits λ=0.25/dim", (*GAUSSIAN, *CONSTANT, *FREE_BITS),
                headline=False, note="Σ_j max(λ, KL_j), batch-mean KL per dimension (Kingma et al. 2016)"),
        Setting("BN γ=0.6", ("--posterior", "bn", "--gamma", "0.6", *CONSTANT),
                note="fixed γ on BN(μ) (Zhu et al. 2020)"),
        Setting("BN γ=0.7", ("--posterior", "bn", "--gamma", "0.7", *CONSTANT), note="fixed γ on BN(μ)"),
        Setting("vMF κ=50", ("--posterior", "vmf", "--kappa", "50", *CONSTANT), headline=False, note="constant KL"),
        Setting("vMF κ=100", ("--posterior", "vmf", "--kappa", "100", *CONSTANT), headline=False, note="constant KL"),
        Setting("GCNN enc, BN γ=0.7", ("--encoder", "gcnn", "--posterior", "bn", "--gamma", "0.7", *CONSTANT),
                headline=False, note="gated-CNN encoder"),
    )


def _ptb_own(epoch: int) -> tuple[Setting, ...]:
    """Our own PTB variants, each as an LM and as the BN-VAE, trained for 20 epochs (a 40-epoch run of them
    takes one and a half to two hours of one core): the LSTM decoder at 512 units, and the 256-unit one with
    a full softmax tied to its input embedding (Press & Wolf 2017). The tied one gets one seed: its VAE
    scored 0.60 nats above its LM, and a step of its full softmax costs about four of the adaptive one."""
    twenty = ("--max-steps", str(20 * epoch))
    variants = (("LSTM-512", ("--decoder-hidden", "512"), "larger decoder", True),
                ("tied", ("--output-layer", "tied"), "decoder with the tied full softmax", False))
    pretrained = (
        Setting("AE pretraining + free bits", (*GAUSSIAN, *CONSTANT, *FREE_BITS, *twenty),
                pretrain=(*GAUSSIAN, *CONSTANT, "--beta-max", "0", *twenty), headline=False,
                note="an autoencoder (β = 0) for 20 epochs, whose encoder starts a VAE with a fresh decoder and free "
                     "bits λ = 0.25/dim for 20 more (Li et al. 2019)"),)
    return pretrained + tuple(setting for label, flags, what, headline in variants for setting in (
        Setting(f"LM, {label} (no latent)", (*flags, *twenty, "--posterior", "none", *CONSTANT), headline,
                note=f"our {what} without z, 20 epochs"),
        Setting(f"BN γ=0.7, {label}", (*flags, *twenty, "--posterior", "bn", "--gamma", "0.7", *CONSTANT),
                headline, note=f"the same {what} with z, 20 epochs")))


PRIOR_ROWS = {  # kind: (row suffix, what p(z) is)
    "gmm": ("aggregate prior", "a Gaussian mixture fitted to one z ~ q(z|x) per training sentence (its component "
                               "count picked on validation)"),
    "flow": ("flow prior", "a normalizing flow (zuko's coupling MAF) fitted to draws z ~ q(z|x) of the training "
                           "sentences, redrawn each epoch (the epoch picked on validation)"),
}


def _with_prior(settings: tuple[Setting, ...], names: tuple[str, ...], kind: str = "gmm",
                every_seed: bool = True) -> tuple[Setting, ...]:
    """Rows that score the trained runs of the settings `names` again with a learned prior fitted to the training
    set's aggregate posterior (Ghosh et al. 2020; `textvae fit-prior --kind`)."""
    suffix, what = PRIOR_ROWS[kind]
    return tuple(Setting(f"{s.name} + {suffix}", s.flags, s.headline and every_seed, prior_of=s.name, prior_kind=kind,
                         note=f"the runs of «{s.name}», not retrained, with p(z) {what}; IW-NLL and samples use it, "
                              "−ELBO and KL stay under N(0, I)")
                 for s in settings if s.name in names)


def _ptb_settings(epoch: int) -> tuple[Setting, ...]:
    """Cyclical annealing gets the headline rows' second seed on PTB: its one seed gave the study's lowest VAE
    figure, under the LM by about twice the LM's seed spread."""
    remedies = tuple(replace(s, headline=True) if s.name == "cyclical annealing" else s
                     for s in _remedies(epoch=epoch * 10))
    trained = (*remedies, *_ptb_own(epoch))
    refitted = ("BN γ=0.6", "BN γ=0.7", "BN γ=0.7, LSTM-512", "AE pretraining + free bits")
    return (*trained, *_with_prior(trained, refitted), *_with_prior(trained, ("BN γ=0.7",), "flow", every_seed=False))


def _ptb_setup() -> str:
    """How preset `ptb` differs from the published small models, its figures read from the preset itself."""
    model, training = PRESETS["ptb"].model, PRESETS["ptb"].train
    epochs = training["max_steps"] // training["eval_every"]
    lr = f"{training['lr']:.0e}".replace("e-0", "e-")  # 3e-3, as the docs write it
    return (f"Our model: a bidirectional GRU-256 encoder, an LSTM-256 decoder with the adaptive softmax (cutoffs "
            f"1,000 and 3,000), 256-d embeddings, D = 32, dropout {model['decoder_dropout']}, AdamW at {lr} with cosine "
            f"decay, {epochs} epochs. The published small models: a one-way LSTM-256 encoder, the full softmax, "
            f"dropout 0.5, up to 100 epochs.\n\n")


PTB_EPOCH = PRESETS["ptb"].train["eval_every"]  # steps of 32 sentences in one pass over the 42,068
OPTIMUS = ("Li et al. 2020 (Optimus), Table 8, the small-VAE rows it quotes from the literature; PPL counts the "
           "end of sentence (its NLL and PPL agree at 21.92 tokens a test sentence)")
TEXAR = "asyml/texar examples/vae_text README (since 2018-09-07)"
STUDIES = {
    "ptb": Study("ptb", "ptb", "data/ptb", "sentence", _ptb_settings(PTB_EPOCH), (
        dict(name="LSTM-LM", nll=101.04, ppl=100.47, source=OPTIMUS,
             setup="exact NLL; 1-layer LSTM 256, D 32 for the VAEs beside it (Li et al. 2019's PTB setup)"),
        dict(name="VAE, monotonic annealing", elbo=101.28, ppl=101.40, kl=0.0, mi=0.0, au=0, source=OPTIMUS,
             setup="the same small LSTM VAE; PPL from the IW bound, NLL the −ELBO"),
        dict(name="VAE, cyclical annealing", elbo=102.81, ppl=108.81, kl=1.37, mi=1.27, au=5, source=OPTIMUS,
             setup="Fu et al. 2019"),
        dict(name="VAE, aggressive inference", elbo=101.19, ppl=99.83, kl=0.93, mi=0.83, au=4, source=OPTIMUS,
             setup="He et al. 2019"),
        dict(name="VAE, AE pretraining + free bits", elbo=102.41, ppl=96.86, kl=6.54, mi=5.31, au=32, source=OPTIMUS,
             setup="Li et al. 2019"),
        dict(name="texar VAE-LSTM", elbo=101.92, ppl=104.61, source=TEXAR,
             setup="LSTM 256 enc/dec, D 32, dropout 0.5, batch 32, up to 100 epochs, KL weight 0.1 → 1 over 10; "
                   "NLL a one-sample −ELBO (the README's June–August 2018 version: 102.10 / 105.48)"),
        dict(name="texar VAE-Transformer", elbo=101.72, ppl=103.68, source=TEXAR,
             setup="LSTM encoder, 3-block Transformer decoder (dim 256, 8 heads), D 32; one-sample −ELBO "
                   "(June–August 2018: 101.48 / 102.53)"),
    ), setup=_ptb_setup()),
    # one epoch: 1,800 steps of 128 poems (230,400 of the 225,679 training poems), validated six times; IW-NLL
    # with K = 100 (the rate study's): K = 500 on 2,334 poems of ~48 tokens would take 45 min a run on one core
    "poems": Study("poems", "poem", "data/poems", "poem", _remedies(epoch=900), steps=1800, eval_every=300,
                   iw_samples=100),
}

# -----------------------------------------------------------------------------
# running


@dataclass
class Run:
    setting: Setting
    seed: int
    slug: str

    def result_path(self, args) -> Path:
        return result_path(self.slug, args)

    @property
    def source_slug(self) -> str:
        """The run whose model a prior row refits: the prior_of setting's of the same seed."""
        return f"{slug(self.setting.prior_of)}-seed{self.seed}"


def result_path(run_slug: str, args) -> Path:
    return args.results / f"{args.study}-runs" / f"{run_slug}.json"


def slug(name: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in name.lower().replace("γ", "g").replace("κ", "k")
                   .replace("τ", "t").replace("λ", "l"))
    return "-".join(part for part in keep.split("-") if part)


def command(*words) -> list[str]:
    return [sys.executable, "-m", "textvae", *words]


def git_commit(results: Path) -> str:
    """The commit the run's code came from, marked +dirty where the working tree differs from it outside the
    study's own outputs (the results folder and collapse-study.md beside it), which earlier runs of the queue may have
    written and not yet committed."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip())
    inside = results.resolve().is_relative_to(top.resolve())  # a --results elsewhere cannot dirty the tree
    outputs = [f":(exclude){results}", f":(exclude){results.parent / DOC}"] if inside else []
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", *outputs],
                            capture_output=True, text=True, check=True)
    dirty = status.stdout.strip()
    return head + ("+dirty" if dirty else "")


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "last" / "trainer_state.pt").is_file()


def train_command(run_dir: Path, flags: tuple, seed: int, args) -> list[str]:
    study = STUDIES[args.study]
    steps, every = args.steps or study.steps, args.eval_every or study.eval_every
    overrides = [flag for name, value in (("--max-steps", steps), ("--eval-every", every)) if value
                 for flag in (name, str(value))]
    resume = ["--resume"] if has_checkpoint(run_dir) else []
    return command("train", "--preset", study.preset, "--data-dir", str(args.data), "--run-dir", str(run_dir),
                   "--seed", str(seed), "--device", args.device, *flags, *overrides, *resume)


def stages(run: Run, args) -> list[tuple[Path, tuple]]:
    """The (run folder, flags) trainings of one run: its own, after the pretraining run where it has one."""
    if not run.setting.pretrain:
        return [(args.runs / run.slug, run.setting.flags)]
    first = args.runs / f"{run.slug}-pretrain"
    return [(first, run.setting.pretrain), (args.runs / run.slug, (*run.setting.flags, "--encoder-from",
                                                                    str(first / "last")))]


FAILED = threading.Event()  # set by a failed command: the queue's workers start no further run


def train(run: Run, args, env: dict) -> tuple[Path, list[list[str]]]:
    """Train (or resume) the run's stages; its folder (the last stage's) and the training commands."""
    trainings, planned = [], stages(run, args)
    for run_dir, flags in planned:
        if run_dir.exists() and not has_checkpoint(run_dir):
            shutil.rmtree(run_dir)  # cut before its first checkpoint: nothing to resume
        trainings.append(train_command(run_dir, flags, run.seed, args))
        call(trainings[-1], args.runs / f"{run_dir.name}.train.log", env)
    return planned[-1][0], trainings


def fit_prior(run: Run, args, env: dict) -> tuple[Path, list[list[str]]]:
    """A prior row's folder: a copy of its source run's best model, its training config and curves, with a
    learned prior fitted to posterior samples of the training sentences (`textvae fit-prior`)."""
    source, run_dir = args.runs / run.source_slug, args.runs / run.slug
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a copy this script made: it is made again whole
    shutil.copytree(source / "best", run_dir / "best")
    for name in ("run_config.json", "metrics.jsonl"):
        shutil.copy2(source / name, run_dir / name)
    fit = command("fit-prior", str(run_dir / "best"), "--data", str(args.data), "--kind", run.setting.prior_kind,
                  "--fit-on", "samples", "--seed", "0")
    call(fit, args.runs / f"{run.slug}.fit-prior.log", env)
    return run_dir, [fit]


def execute(run: Run, args) -> dict:
    """Train (or resume) and evaluate one run, then commit-ready: its figures as one JSON file. A prior row
    refits its source run instead of training, and scores it with its learned prior."""
    if FAILED.is_set():
        raise SystemExit(f"{run.slug}: not started, an earlier run failed")
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    run_dir, made_by = (fit_prior if run.setting.prior_of else train)(run, args, env)
    seconds = time.perf_counter() - start
    prior = ["--iw-prior", run.setting.prior_kind] if run.setting.prior_of else []
    evaluate = command("evaluate", str(run_dir / "best"), "--data", str(args.data), "--iw-samples",
                       str(args.iw_samples), "--max-examples", str(args.max_examples), "-n",
                       str(args.samples), "--seed", "0", "--device", args.device, *prior,
                       "--out", str(run_dir / "evaluate.json"), "--json")
    call(evaluate, args.runs / f"{run.slug}.evaluate.log", env)
    report = json.loads((run_dir / "evaluate.json").read_text())
    config = json.loads((run_dir / "run_config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = dict(name=run.setting.name, seed=run.seed, flags=list(run.setting.flags), commit=args.commit,
                  **(dict(prior_of=run.source_slug) if run.setting.prior_of else {}),
                  iw_samples=args.iw_samples,
                  commands=[" ".join(words[1:]).replace(str(args.runs), "runs/" + args.study)
                            for words in (*made_by, evaluate)],
                  wall_seconds_this_session=round(seconds), config=config,
                  parameters=sum(p.numel() for p in TextVAE.from_pretrained(run_dir / "best").parameters()),
                  latent=report["latent"],
                  text={k: v for k, v in report["text"].items() if k != "reconstruction_examples"},
                  validation=[r for r in records if r["split"] == "validation"])
    write_text(run.result_path(args), json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    return result


def call(cmd: list[str], log: Path, env: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        FAILED.set()
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n--- {log} ---\n{log.read_text()[-3000:]}")


def plan(args) -> list[Run]:
    chosen = [s for s in STUDIES[args.study].settings if not args.only or slug(s.name) in args.only]
    runs = [Run(s, seed, f"{slug(s.name)}-seed{seed}") for s in chosen for seed in (SEEDS if s.headline else SEEDS[:1])]
    return sorted(runs, key=lambda run: run.seed)  # every setting's first seed before any second seed

# -----------------------------------------------------------------------------
# the report, from the committed run files


def load_results(args) -> list[dict]:
    folder = args.results / f"{args.study}-runs"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def training_size(data_dir: Path) -> int:
    """Training examples, from the manifest (PTB's counts sentences and words; the others a number)."""
    size = json.loads((data_dir / "manifest.json").read_text())["splits"]["train"]
    return size["sentences"] if isinstance(size, dict) else size


def epochs(result: dict, train_size: int) -> float:
    train = result["config"]["train"]
    return train["max_steps"] * train["batch_size"] / train_size


def ptb_perplexity(latent: dict) -> float | None:
    """Perplexity per word with the end-of-sentence token counted, from the IW-NLL (or exact NLL)."""
    nll = latent.get("iw_nll")
    return None if nll is None else math.exp(nll * latent["examples"] / latent["tokens"])


COLUMNS = [  # header, how to read it from a run file, format
    ("params (M)", lambda r: r["parameters"] / 1e6 if "parameters" in r else None, ".2f"),
    ("IW-NLL", lambda r: r["latent"].get("iw_nll"), ".2f"),
    ("PPL", lambda r: ptb_perplexity(r["latent"]), ".2f"),
    ("−ELBO", lambda r: -r["latent"]["elbo"], ".2f"),
    ("KL", lambda r: r["latent"]["kl"], ".2f"),
    ("MI", lambda r: r["latent"].get("mi"), ".2f"),
    ("AU", lambda r: r["latent"].get("active_units"), ".1f"),
    ("reliance", lambda r: r["latent"].get("decoder_reliance"), ".2f"),
    ("rec BLEU", lambda r: r["text"].get("reconstruction_bleu"), ".2f"),
    ("distinct-2", lambda r: (r["text"].get("samples") or {}).get("distinct_2"), ".3f"),
]


def cell(values: list, spec: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(set(values)) == 1:  # one seed, or a figure the seed does not change (the parameter count)
        return format(values[0], spec)
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


def collapsed(results: list[dict]) -> str:
    """The trainer's collapse rule (KL under COLLAPSE_KL nats or no active unit), per seed."""
    if results[0]["latent"].get("active_units") is None:
        return "no latent"
    verdicts = [r["latent"]["kl"] < COLLAPSE_KL or r["latent"]["active_units"] == 0 for r in results]
    return "yes" if all(verdicts) else "no" if not any(verdicts) else f"{sum(verdicts)} of {len(verdicts)}"


def grouped(results: list[dict], study: Study) -> list[tuple[Setting, list[dict]]]:
    order = {s.name: s for s in study.settings}
    groups = {}
    for result in results:
        groups.setdefault(result["name"], []).append(result)
    return [(order[name], groups[name]) for name in order if name in groups]


def _mean(results: list[dict], get) -> float | None:
    values = [v for v in map(get, results) if v is not None]
    return statistics.mean(values) if values else None


def rows_json(groups, train_size: int) -> list[dict]:
    """The table as JSON rows, one per setting (means over seeds)."""
    return [dict(name=s.name, iw_nll=_mean(rs, lambda r: r["latent"].get("iw_nll")),
                 ppl=_mean(rs, lambda r: ptb_perplexity(r["latent"])), kl=_mean(rs, lambda r: r["latent"]["kl"]),
                 mi=_mean(rs, lambda r: r["latent"].get("mi")), au=_mean(rs, lambda r: r["latent"].get("active_units")),
                 params=_mean(rs, lambda r: r.get("parameters")), seeds=[r["seed"] for r in rs],
                 epochs=round(epochs(rs[0], train_size), 2),
                 commit=sorted({r["commit"] for r in rs}))
            for s, rs in groups]


def table(groups, study: Study) -> str:
    header = "| setting | seeds | collapsed | " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for setting, results in groups:
        cells = [cell([get(r) for r in results], spec) for _, get, spec in COLUMNS]
        lines.append(f"| {setting.name} | {len(results)} | {collapsed(results)} | " + " | ".join(cells) + " |")
    for row in study.published:
        cells = [row.get(key) for key in ("params", "nll", "ppl", "elbo", "kl", "mi", "au")]
        cells = ["–" if v is None else str(v) for v in cells] + ["–"] * (len(COLUMNS) - len(cells))
        lines.append(f"| *{row['name']}* (published) | – | – | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(results: list[dict], args) -> str:
    study = STUDIES[args.study]
    groups = grouped(results, study)
    train_size = training_size(args.data)
    done, planned = len(results), len(plan(argparse.Namespace(study=args.study, only=[])))
    first = results[0]
    training = PRESETS[study.preset].train  # the protocol; rows whose flags change the steps say so in their notes
    protocol = (study.steps or training["max_steps"]) * training["batch_size"] / train_size
    published = "".join(f"- *{r['name']}*: {r['setup']} ({r['source']}).\n" for r in study.published)
    published += "\n" if published else ""  # a blank line before the settings, none where nothing is quoted
    settings_text = "\n".join(f"- **{s.name}**: {s.note}; flags `{' '.join(s.flags)}`" for s, _ in groups)
    return f"""## The collapse study: {args.study}

Produced by `python scripts/collapse_study.py --study {args.study}` ({done} of {planned} runs done; each run's
figures, commit and commands are in `docs/results/{args.study}-runs/`, the rows as JSON in
`docs/results/{args.study}.json`). Every run trains `textvae train --preset {study.preset}`
({protocol:.1f} epochs of {train_size:,} training {study.unit}s,
{first['config']['train']['batch_size']} a step) with only the
setting's flags changed, and `textvae evaluate` scores its best validation checkpoint on
{first['latent']['examples']:,} test {study.unit}s: IW-NLL with K = {first['iw_samples']} importance samples
(the exact NLL for the LM), in nats per {study.unit}; PPL per token counting the end-of-{study.unit} token; KL,
whole-set MI, active units (Var > 0.01), decoder reliance (rec NLL with another example's z minus with its
own) and reconstruction BLEU. Rows with two seeds are mean ± sd.

{study.setup}{table(groups, study)}

{published}The settings:
{settings_text}
"""


def write_report(args) -> None:
    results = load_results(args)
    if not results:  # none yet, or the committed ones were withdrawn (a changed preset): say so
        write_text(args.results / f"{args.study}.json", "[]\n")
        write_section(args.results.parent / DOC, f"study-{args.study}",
                      f"## The collapse study: {args.study}\n\nNo run of `python scripts/collapse_study.py --study "
                      f"{args.study}` is done under the current preset `{STUDIES[args.study].preset}` yet.\n")
        return
    study = STUDIES[args.study]
    train_size = training_size(args.data)
    rows = rows_json(grouped(results, study), train_size)
    write_text(args.results / f"{args.study}.json", json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    write_section(args.results.parent / DOC, f"study-{args.study}", section(results, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=list(STUDIES), default="ptb")
    parser.add_argument("--data", type=Path, help="prepared dataset (default the study's: data/ptb, data/poems)")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="committed run files and "
                        "tables (default docs/results; the report section goes into collapse-study.md beside it)")
    parser.add_argument("--runs", type=Path, help="run folders, checkpoints and logs (default runs/STUDY)")
    parser.add_argument("--steps", type=int, help="override the preset's training steps (smoke tests)")
    parser.add_argument("--eval-every", type=int, help="override the preset's validation interval")
    parser.add_argument("--iw-samples", type=int, help="K for IW-NLL (default the study's: 500 for PTB, 100 for "
                        "poems)")
    parser.add_argument("--max-examples", type=int, default=0, help="test examples scored (default 0: all)")
    parser.add_argument("--samples", type=int, default=200, help="prior samples per run (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--device", default="cpu", help="where runs train and are scored: cpu | cuda (default cpu)")
    parser.add_argument("--commit", help="the commit recorded with each run (default: git's HEAD, +dirty where the "
                        "tree differs; give it where the code runs from a copy without .git)")
    parser.add_argument("--only", nargs="+", default=[],
                        help="only these settings, by slug (e.g. lm-no-latent, bn-g-0-7)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the tables from the committed files")
    args = parser.parse_args()
    args.data = args.data or Path(STUDIES[args.study].data)
    args.runs = args.runs or Path("runs") / args.study
    if args.iw_samples is None:
        args.iw_samples = STUDIES[args.study].iw_samples
    args.commit = args.commit or git_commit(args.results)
    if not (args.data / "dataset").is_dir():
        parser.error(f"{args.data} is not a prepared dataset: run `textvae prepare {args.study}` first")
    if min(args.workers, args.threads, args.iw_samples) < 1 or args.samples < 2 or args.max_examples < 0:
        parser.error("--workers, --threads and --iw-samples must be >= 1, --samples >= 2, --max-examples >= 0")
    todo = [] if args.report_only else [run for run in plan(args) if not run.result_path(args).exists()]
    waiting = [run for run in todo if run.setting.prior_of and not result_path(run.source_slug, args).exists()]
    for run in waiting:
        print(f"{run.slug}: waits for {run.source_slug}'s results (a later call scores it)")
    todo = [run for run in todo if run not in waiting]
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(execute, run, args) for run in todo]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"{args.study} study", unit="run"):
                result = future.result()
                tqdm.write(f"{result['name']} seed {result['seed']}: IW-NLL {result['latent'].get('iw_nll')}, "
                           f"KL {result['latent']['kl']:.2f}")
                write_report(args)
        except BaseException:  # Ctrl-C, or a failed run (which has set FAILED): drop the runs not yet started
            FAILED.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    write_report(args)
    print(f"results: {args.results}/{args.study}.json and the study-{args.study} section of "
          f"{args.results.parent / DOC}")


if __name__ == "__main__":
    main()
