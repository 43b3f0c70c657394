"""Speed harness: the reference path (the shipped model's recipe as it ran before the speed work) against
the new default, measured in one invocation on one machine with the whole machine.

    python scripts/benchmark.py --data data/poems --out docs/benchmark.json       # the full run (~25 min)
    python scripts/benchmark.py --data /tmp/tvdata/poems --quick                  # a smoke test

- reference: preset poem-base with the full softmax, nn.GRU, precision auto, and glibc's default malloc
  (TEXTVAE_MALLOC=system); new: preset poem (adaptive softmax) with the package's malloc settings.
- time_to_quality: each path runs `textvae train` itself (the trainer's own step) in a child process,
  validating every --eval-every steps on the same --eval-examples validation poems. The target is the
  validation -ELBO per poem the reference reaches at its last step (--steps); the new path's time is its
  training seconds (validation excluded, as for the reference) at its first validation at or below it.
- train_tokens_per_s: the trainer's own tokens/s records (median after the first); MFU divides the model
  FLOP/s by the best GEMM rate of the precision the run used, measured in this run.
- sampling_poems_per_s: batched, form-constrained ancestral sampling (1,000 at a time) with each path's
  (untrained) default-size model; iw_nll_k500_seconds_per_1000: IW-NLL with K = 500 on seeded random test
  poems, scaled to 1,000. Both run in a child process per path, so that each has its own malloc setting.
Writes the JSON (--out) and a plot of both validation curves against training time (--plot).
Shapes: B batch, T tokens, V vocab, E embedding, H hidden, D latent.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from textvae import data
from textvae.atomic import write_text
from textvae.generate import Decoding, sample
from textvae.latent_stats import iw_nll
from textvae.malloc import keep_freed_memory
from textvae.poetry import Verse
from textvae.precision import cpu_has_bf16, resolve_precision
from textvae.tokenizer import EOS_ID
from textvae.presets import PRESETS
from textvae.vae import TextVAE, VAEConfig

PATHS = {"reference": "poem-base", "new": "poem"}
INFERENCE_PRECISION = {"reference": "fp32", "new": "auto"}  # the reference's sample and evaluate defaults
GEMM_SHAPES = {"output layer 2176x256 @ 256x8000": (2176, 256, 8000), "GRU step 128x256 @ 256x768": (128, 256, 768),
               "1024^3": (1024, 1024, 1024)}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def child_env(path: str) -> dict:
    return {**os.environ, "TEXTVAE_MALLOC": "system"} if path == "reference" else dict(os.environ)

# -----------------------------------------------------------------------------
# machine and GEMM ceiling


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    return dict(cpu=model, logical_cpus=os.cpu_count(), native_bf16=cpu_has_bf16(), torch=torch.__version__,
                threads=torch.get_num_threads(), python=platform.python_version())


def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, min_seconds: float = 0.5) -> float:
    """Best GFLOP/s of (m, k) @ (k, n) over repeats lasting at least min_seconds in all (2mkn FLOPs)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up: lets the BLAS pick its kernel
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        a @ b
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * m * k * n / best / 1e9


def gemm_rates() -> dict:
    return {name: {"fp32": gemm_gflops(*shape, torch.float32), "bf16": gemm_gflops(*shape, torch.bfloat16)}
            for name, shape in GEMM_SHAPES.items()}

# -----------------------------------------------------------------------------
# model FLOPs


def gru_flops(n_in: int, hidden: int) -> int:
    """Forward FLOPs of one GRU direction per position: three gates, each an input and a recurrent matmul."""
    return 2 * 3 * (n_in * hidden + hidden * hidden)


def output_flops(c: VAEConfig, token_shares: torch.Tensor) -> float:
    """Forward FLOPs of the output layer per predicted token: 2*H*V for the full softmax; for the adaptive
    one the head, plus each band's tail weighted by the share of targets that fall in it."""
    H = c.decoder_hidden
    if c.output_layer == "full":
        return 2 * H * c.vocab_size
    cutoffs, div = c.output_layer_settings.adaptive_cutoffs, c.output_layer_settings.adaptive_div
    bounds = [*cutoffs, c.vocab_size]
    total = 2 * H * (bounds[0] + len(cutoffs))
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        d = H // div ** (i + 1)
        total += float(token_shares[lo:hi].sum()) * 2 * (H * d + d * (hi - lo))
    return total


def flops_per_token(c: VAEConfig, tokens_per_sentence: float, token_shares: torch.Tensor) -> float:
    """Training matmul FLOPs per predicted token (3x forward) of the GRU-encoder, GRU-decoder presets timed
    here: bidirectional encoder GRU, head (per sentence, divided by T), decoder GRU with z at every input
    and z -> initial state, output layer. Biases, norms, activations and lookups are left out."""
    E, He, Hd, D, T = c.embed_dim, c.encoder_hidden, c.decoder_hidden, c.latent_dim, tokens_per_sentence
    encoder = 2 * gru_flops(E, He) + 2 * 2 * (2 * He) * D / T
    decoder = gru_flops(E + D, Hd) + 2 * D * Hd / T
    return 3 * (encoder + decoder + output_flops(c, token_shares))


def token_shares(sequences: list[list[int]], vocab_size: int) -> torch.Tensor:
    """Share of each id among predicted tokens (text + EOS)."""
    ids = torch.tensor([i for s in sequences for i in s] + [EOS_ID] * len(sequences))
    counts = torch.bincount(ids, minlength=vocab_size).double()
    return counts / counts.sum()

# -----------------------------------------------------------------------------
# time to quality: the trainer itself, one child process per path


def train_run(path: str, args, run_dir: Path) -> list[dict]:
    model, training = PRESETS[PATHS[path]].model, PRESETS[PATHS[path]].train
    training = {**training, "data_dir": str(args.data), "run_dir": str(run_dir), "max_steps": args.steps,
                "eval_every": args.eval_every, "eval_examples": args.eval_examples, "log_every": 10}
    config = run_dir.parent / f"{path}.json"
    config.write_text(json.dumps(dict(model=model, train=training)))
    progress(f"{path}: textvae train, preset {PATHS[path]} ({args.steps} steps)")
    subprocess.run([sys.executable, "-m", "textvae", "train", "--config", str(config)], check=True,
                   env=child_env(path), stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def validation_curve(records: list[dict]) -> list[tuple[float, float, int]]:
    """(training seconds, validation -ELBO per poem, step) at each validation."""
    return [(r["train_seconds"], -r["elbo"], r["step"]) for r in records if r["split"] == "validation"]


def time_to_quality(curves: dict) -> dict:
    target = curves["reference"][-1][1]
    reference_seconds = curves["reference"][-1][0]
    reached = next(((s, step) for s, loss, step in curves["new"] if loss <= target), None)
    out = dict(target_elbo=target, reference_seconds=reference_seconds, reference_steps=curves["reference"][-1][2],
               new_seconds=reached[0] if reached else None, new_steps=reached[1] if reached else None)
    return out | dict(speedup=reference_seconds / reached[0] if reached else None)


def tokens_per_s(records: list[dict]) -> float:
    rates = [r["tokens_per_s"] for r in records if r["split"] == "train"]
    return statistics.median(rates[1:] or rates)  # the first interval holds the warm-up


def plot_curves(curves: dict, ttq: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        ax.plot([s for s, _, _ in curve], [loss for _, loss, _ in curve], "o-", ms=3,
                label=f"{name} (preset {PATHS[name]})")
    ax.axhline(ttq["target_elbo"], color="grey", ls=":", label=f"target {ttq['target_elbo']:.2f}")
    speedup = f"{ttq['speedup']:.1f}x sooner" if ttq["speedup"] else "target not reached"
    ax.set(xlabel="training seconds (validation excluded)", ylabel="validation -ELBO (nats per poem)",
           title=f"time to quality: {speedup}")
    ax.set_ylim(top=min(ax.get_ylim()[1], ttq["target_elbo"] + 60))
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

# -----------------------------------------------------------------------------
# inference: sampling and IW-NLL, one child process per path


def inference(path: str, args) -> dict:
    """Runs in the child: sampling rates per form and IW-NLL seconds per 1,000 test poems. The malloc
    settings apply as in `textvae sample`/`evaluate` (TEXTVAE_MALLOC=system leaves the reference without)."""
    keep_freed_memory()
    dataset, tokenizer = data.load(args.data)
    torch.manual_seed(0)
    config = VAEConfig.from_dict({**PRESETS[PATHS[path]].model, "vocab_size": tokenizer.vocab_size})
    model = TextVAE(config, tokenizer).eval()
    decoding = Decoding(strategy="sample", precision=INFERENCE_PRECISION[path])
    rates = {}
    for form in ("5x4", "7x8"):
        constraint = Verse(tokenizer, form)
        sample(model, min(args.samples, 200), constraint=constraint, decoding=decoding, seed=0)  # warm-up
        start = time.perf_counter()
        sample(model, args.samples, constraint=constraint, decoding=decoding, seed=1)
        rates[form] = args.samples / (time.perf_counter() - start)
    test = data.token_ids(dataset["test"])
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    subset = [test[i] for i in order[:args.iw_examples[path]].tolist()]
    start = time.perf_counter()
    iw_nll(model, subset, args.iw_k, precision=INFERENCE_PRECISION[path])
    seconds = (time.perf_counter() - start) * 1000 / len(subset)
    return dict(sampling_poems_per_s=rates, iw_seconds_per_1000=seconds, iw_examples=len(subset))


def inference_run(path: str, args, out: Path) -> dict:
    progress(f"{path}: sampling and IW-NLL (K={args.iw_k}, {args.iw_examples[path]} test poems)")
    command = [sys.executable, __file__, "--data", str(args.data), "--inference", path, "--out", str(out),
               "--samples", str(args.samples), "--iw-k", str(args.iw_k),
               "--iw-examples", *map(str, args.iw_examples.values())]
    subprocess.run(command, check=True, env=child_env(path))
    return json.loads(out.read_text())

# -----------------------------------------------------------------------------
# report


def format_table(report: dict) -> str:
    m, ttq, tok = report["machine"], report["time_to_quality"], report["train_tokens_per_s"]
    lines = [f"{m['cpu']}: {m['logical_cpus']} logical CPUs, native bf16 {'yes' if m['native_bf16'] else 'no'}; "
             f"torch {m['torch']}, {m['threads']} threads; precision auto = {report['precision']}", "",
             f"{'GEMM (GFLOP/s)':<40}{'fp32':>10}{'bf16':>10}"]
    for name, rate in report["gemm"].items():
        lines.append(f"{name:<40}{rate['fp32']:>10.1f}{rate['bf16']:>10.1f}")
    new = "not reached" if ttq["new_seconds"] is None else f"{ttq['new_seconds']:.0f} s (step {ttq['new_steps']})"
    speedup = "-" if ttq["speedup"] is None else f"{ttq['speedup']:.2f}x"
    lines += ["", f"time to quality: validation -ELBO {ttq['target_elbo']:.2f} nats/poem (reference at step "
              f"{ttq['reference_steps']}): reference {ttq['reference_seconds']:.0f} s, new {new}: {speedup}", "",
              f"{'':12}{'train tok/s':>12}{'MFU':>8}{'5x4 poems/s':>13}{'7x8 poems/s':>13}{'IW-NLL s/1000':>15}"]
    for path in PATHS:
        inf = report["inference"][path]
        lines.append(f"{path:<12}{tok[path]:>12,.0f}{report['mfu'][path]:>8.1%}"
                     f"{inf['sampling_poems_per_s']['5x4']:>13,.0f}{inf['sampling_poems_per_s']['7x8']:>13,.0f}"
                     f"{inf['iw_seconds_per_1000']:>15,.0f}")
    lines.append(f"{'speed-up':<12}{tok['speedup']:>11.2f}x")
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="a prepared poem dataset")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each path (default 300)")
    parser.add_argument("--eval-every", type=int, default=25, help="steps between validations (default 25)")
    parser.add_argument("--eval-examples", type=int, default=500, help="validation poems (default 500)")
    parser.add_argument("--samples", type=int, default=2000, help="poems per timed sampling run")
    parser.add_argument("--iw-k", type=int, default=500, help="importance samples (default 500)")
    parser.add_argument("--iw-examples", type=int, nargs=2, default=[8, 64], metavar=("REFERENCE", "NEW"),
                        help="test poems scored for the IW-NLL time per path (default 8 64)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: a few steps, poems and samples")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--plot", type=Path, default=Path("docs/figures/time_to_quality.png"))
    parser.add_argument("--inference", choices=list(PATHS), help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.eval_examples, args.samples, args.iw_k = 4, 2, 16, 20, 4
        args.iw_examples = [2, 2]
    if min(args.steps, args.eval_every, args.eval_examples, args.samples, args.iw_k, *args.iw_examples) < 1:
        parser.error("--steps, --eval-every, --eval-examples, --samples, --iw-k and --iw-examples must be >= 1")
    args.iw_examples = dict(zip(PATHS, args.iw_examples))
    if not (args.data / "tokenizer.model").is_file():
        parser.error(f"{args.data} is not a prepared dataset: run `textvae prepare poems` first")
    return args


def main() -> None:
    args = parse_args()
    if args.inference:
        write_text(args.out, json.dumps(inference(args.inference, args)) + "\n")
        return
    report = dict(machine=machine_info(), precision=resolve_precision("auto", torch.device("cpu")),
                  args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    with tempfile.TemporaryDirectory() as tmp:
        records = {path: train_run(path, args, Path(tmp) / path) for path in PATHS}
        report["inference"] = {path: inference_run(path, args, Path(tmp) / f"{path}-inference.json") for path in PATHS}
    curves = {path: validation_curve(r) for path, r in records.items()}
    report["time_to_quality"] = time_to_quality(curves)
    report["validation_curves"] = curves
    progress("GEMM rates")
    report["gemm"] = gemm_rates()
    dataset, tokenizer = data.load(args.data)
    sequences = data.token_ids(dataset["validation"])
    shares = token_shares(sequences, tokenizer.vocab_size)
    tokens_per_sentence = sum(len(s) + 1 for s in sequences) / len(sequences)
    rate = {p: tokens_per_s(records[p]) for p in PATHS}
    report["train_tokens_per_s"] = rate | dict(speedup=rate["new"] / rate["reference"])
    ceiling = max(r[report["precision"]] for r in report["gemm"].values())
    configs = {p: VAEConfig.from_dict({**PRESETS[PATHS[p]].model, "vocab_size": tokenizer.vocab_size}) for p in PATHS}
    report["flops_per_token"] = {p: flops_per_token(configs[p], tokens_per_sentence, shares) for p in PATHS}
    report["mfu"] = {p: rate[p] * report["flops_per_token"][p] / 1e9 / ceiling for p in PATHS}
    report["sampling_poems_per_s"] = report["inference"]["new"]["sampling_poems_per_s"]
    report["iw_nll_k500_seconds_per_1000"] = report["inference"]["new"]["iw_seconds_per_1000"]
    print()
    print(format_table(report))
    plot_curves(curves, report["time_to_quality"], args.plot)
    print(f"\nwrote {args.plot}")
    if args.out:
        write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
