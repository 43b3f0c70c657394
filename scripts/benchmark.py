"""Speed harness: the reference path (the shipped model's recipe as it ran before the speed work) against
the new default, measured in one invocation on one device with the whole machine, and the shipped models'
sampling speed and the studio's latency beside them.

    python scripts/benchmark.py --data data/poems --out docs/benchmark.json       # the full run (~30 min on CPU)
    python scripts/benchmark.py --parts shipped studio --out docs/benchmark.json  # some parts, merged in
    python scripts/benchmark.py --data /tmp/tvdata/poems --quick                  # a smoke test

--device is cuda where CUDA is present, else cpu; the results go into --out under the device's name (its CPU
kind, or the GPU's name), next to those of other devices, and each part run replaces that part's keys only.
- train (time_to_quality, train_tokens_per_s, mfu): reference is preset poem-base with the full softmax, nn.GRU,
  precision auto, and glibc's default malloc (TEXTVAE_MALLOC=system); new is preset poem (adaptive softmax) with
  the package's malloc settings. Each path runs `textvae train --device DEVICE` itself (the trainer's own step) in
  a child process, validating every --eval-every steps on the same --eval-examples validation poems. The target
  is the validation -ELBO per poem the reference reaches at its last step (--steps); the new path's time is its
  training seconds (validation excluded, as for the reference) at its first validation at or below it. Tokens/s
  are the trainer's own records (median after the first); MFU divides the model FLOP/s by the best GEMM rate
  of the run's precision measured here, and on a GPU also by its dense bf16 datasheet peak.
- sampling (sampling_poems_per_s, iw_nll_k500_seconds_per_1000): batched, form-constrained ancestral sampling
  (1,000 at a time) with each path's untrained default-size model, and IW-NLL with K = 500 on seeded random
  test poems, scaled to 1,000; one child process per path, so that each has its own malloc setting.
- shipped: `scripts/bench_sample.py` on data/pretrained and data/faithful as shipped: automatic form with every
  prior each has (standard and the fitted ones), a fixed form (7x4), and `--meter --rhyme`, precision auto.
- studio: `scripts/bench_studio.py`: POST /api/sample with n = 5, p50 and p95 under 1 and 20 clients.
Writes the JSON (--out) and, with train, a plot of both validation curves against training time (--plot).
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

from textvae import checkpoint, data
from textvae.atomic import write_text
from textvae.generate import Decoding, load_model, sample
from textvae.latent_stats import iw_nll
from textvae.malloc import keep_freed_memory
from textvae.poetry import Verse
from textvae.precision import DTYPES, cpu_flags, cpu_has_bf16, resolve_precision
from textvae.presets import PRESETS
from textvae.tokenizer import EOS_ID
from textvae.vae import TextVAE, VAEConfig

PATHS = {"reference": "poem-base", "new": "poem"}
INFERENCE_PRECISION = {"reference": "fp32", "new": "auto"}  # the reference's sample and evaluate defaults
SHIPPED = ("data/pretrained", "data/faithful")
SCRIPTS = Path(__file__).parent
GEMM_SHAPES = {"output layer 2176x256 @ 256x8000": (2176, 256, 8000), "GRU step 128x256 @ 256x768": (128, 256, 768),
               "1024^3": (1024, 1024, 1024)}
# dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' datasheets, by a part of the name
# torch.cuda.get_device_name gives; the first match counts
GPU_BF16_PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "GH200": 989, "A100": 312, "L40S": 362,
                        "L4": 121, "A10": 125}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def child_env(path: str) -> dict:
    return {**os.environ, "TEXTVAE_MALLOC": "system"} if path == "reference" else dict(os.environ)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()

# -----------------------------------------------------------------------------
# the device and its GEMM ceiling


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown")


def device_name(device: str) -> str:
    """The key results are filed under: the GPU's name, or the CPU's model with its kind of bf16 support."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    flags = cpu_flags()
    kind = ("AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags
            else "AVX2" if "avx2" in flags else "no AVX2")
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {kind}"


def machine_info(device: str) -> dict:
    info = dict(device=device_name(device), cpu=cpu_model(), logical_cpus=os.cpu_count(), native_bf16=cpu_has_bf16(),
                torch=torch.__version__, threads=torch.get_num_threads(), python=platform.python_version())
    if device.startswith("cuda"):
        info |= dict(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(torch.device(device)),
                     gpu_bf16_peak_tflops=gpu_peak_tflops(device))
    return info


def gpu_peak_tflops(device: str) -> float | None:
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peak for part, peak in GPU_BF16_PEAK_TFLOPS.items() if part in name), None)


def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, device: str, min_seconds: float = 0.5) -> float:
    """Best GFLOP/s of (m, k) @ (k, n) over repeats lasting at least min_seconds in all (2mkn FLOPs)."""
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    a @ b  # warm-up: lets the BLAS pick its kernel
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * m * k * n / best / 1e9


def gemm_rates(device: str) -> dict:
    return {name: {precision: gemm_gflops(*shape, dtype, device) for precision, dtype in DTYPES.items()}
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
# train: time to quality, the trainer itself, one child process per path


def train_run(path: str, args, run_dir: Path) -> list[dict]:
    model, training = PRESETS[PATHS[path]].model, PRESETS[PATHS[path]].train
    training = {**training, "data_dir": str(args.data), "run_dir": str(run_dir), "max_steps": args.steps,
                "eval_every": args.eval_every, "eval_examples": args.eval_examples, "log_every": 10,
                "device": args.device} | ({"batch_size": args.batch_size} if args.batch_size else {})
    config = run_dir.parent / f"{path}.json"
    config.write_text(checkpoint.run_config_text(model, training))
    progress(f"{path}: textvae train, preset {PATHS[path]} ({args.steps} steps on {args.device})")
    # the preset too: a bare `textvae train` starts from the default preset, which --config only overrides
    subprocess.run([sys.executable, "-m", "textvae", "train", "--preset", PATHS[path], "--config", str(config)],
                   check=True, env=child_env(path), stdout=subprocess.DEVNULL)
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


def plot_curves(curves: dict, ttq: dict, path: Path, device: str) -> None:
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
           title=f"time to quality on {device}: {speedup}")
    ax.set_ylim(top=min(ax.get_ylim()[1], ttq["target_elbo"] + 60))
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_part(args, tmp: Path) -> dict:
    records = {path: train_run(path, args, tmp / path) for path in PATHS}
    curves = {path: validation_curve(r) for path, r in records.items()}
    out = dict(time_to_quality=time_to_quality(curves), validation_curves=curves)
    progress("GEMM rates")
    out["gemm"] = gemm_rates(args.device)
    dataset, tokenizer = data.load(args.data)
    sequences = data.token_ids(dataset["validation"])
    shares = token_shares(sequences, tokenizer.vocab_size)
    tokens_per_sentence = sum(len(s) + 1 for s in sequences) / len(sequences)
    rate = {p: tokens_per_s(records[p]) for p in PATHS}
    out["train_tokens_per_s"] = rate | dict(speedup=rate["new"] / rate["reference"])
    precision = resolve_precision("auto", args.device)
    ceiling = max(r[precision] for r in out["gemm"].values())
    configs = {p: VAEConfig.from_dict({**PRESETS[PATHS[p]].model, "vocab_size": tokenizer.vocab_size}) for p in PATHS}
    out["flops_per_token"] = {p: flops_per_token(configs[p], tokens_per_sentence, shares) for p in PATHS}
    out["mfu"] = {p: rate[p] * out["flops_per_token"][p] / 1e9 / ceiling for p in PATHS}
    peak = gpu_peak_tflops(args.device) if args.device.startswith("cuda") else None
    if peak:
        out["mfu_datasheet_bf16"] = {p: rate[p] * out["flops_per_token"][p] / 1e12 / peak for p in PATHS}
    plot_curves(curves, out["time_to_quality"], args.plot, device_name(args.device))
    print(f"wrote {args.plot}")
    return out

# -----------------------------------------------------------------------------
# sampling: untrained default-size models and IW-NLL, one child process per path


def inference(path: str, args) -> dict:
    """Runs in the child: sampling rates per form and IW-NLL seconds per 1,000 test poems. The malloc
    settings apply as in `textvae sample`/`evaluate` (TEXTVAE_MALLOC=system leaves the reference without)."""
    keep_freed_memory()
    dataset, tokenizer = data.load(args.data)
    torch.manual_seed(0)
    config = VAEConfig.from_dict({**PRESETS[PATHS[path]].model, "vocab_size": tokenizer.vocab_size})
    model = TextVAE(config, tokenizer).to(args.device).eval()
    decoding = Decoding(strategy="sample", precision=INFERENCE_PRECISION[path])
    rates = {}
    for form in ("5x4", "7x8"):
        constraint = Verse(tokenizer, form, device=args.device)
        sample(model, min(args.samples, 200), constraint=constraint, decoding=decoding, seed=0)  # warm-up
        synchronize(args.device)
        start = time.perf_counter()
        sample(model, args.samples, constraint=constraint, decoding=decoding, seed=1)
        rates[form] = args.samples / (time.perf_counter() - start)
    test = data.token_ids(dataset["test"])
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    subset = [test[i] for i in order[:args.iw_examples[path]].tolist()]
    synchronize(args.device)
    start = time.perf_counter()
    iw_nll(model, subset, args.iw_k, precision=INFERENCE_PRECISION[path])
    seconds = (time.perf_counter() - start) * 1000 / len(subset)
    return dict(sampling_poems_per_s=rates, iw_seconds_per_1000=seconds, iw_examples=len(subset))


def inference_run(path: str, args, out: Path) -> dict:
    progress(f"{path}: sampling and IW-NLL (K={args.iw_k}, {args.iw_examples[path]} test poems)")
    command = [sys.executable, __file__, "--data", str(args.data), "--inference", path, "--out", str(out),
               "--samples", str(args.samples), "--iw-k", str(args.iw_k), "--device", args.device,
               "--iw-examples", *map(str, args.iw_examples.values())]
    subprocess.run(command, check=True, env=child_env(path))
    return json.loads(out.read_text())


def sampling_part(args, tmp: Path) -> dict:
    runs = {path: inference_run(path, args, tmp / f"{path}-inference.json") for path in PATHS}
    return dict(inference=runs, sampling_poems_per_s=runs["new"]["sampling_poems_per_s"],
                iw_nll_k500_seconds_per_1000=runs["new"]["iw_seconds_per_1000"])

# -----------------------------------------------------------------------------
# shipped models and the studio: the bench_* scripts in child processes


def bench_sample(model_dir: str, args, out: Path, *flags: str) -> list[dict]:
    command = [sys.executable, str(SCRIPTS / "bench_sample.py"), model_dir, "--precisions", "auto", "--n",
               str(args.samples), "--repeats", "2", "--device", args.device, "--json", str(out), *flags]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def shipped_part(args, tmp: Path) -> dict:
    """Per shipped model: poems/s unsteered in an automatic form under each prior it has, in a fixed form, and
    with --meter --rhyme, and the share of its unsteered speed that meter and rhyme keep."""
    out = {}
    for model_dir in SHIPPED:
        progress(f"{model_dir}: sampling as shipped")
        model = load_model(model_dir)
        priors, default = ["standard", *model.priors], model.default_prior or "standard"
        rows = bench_sample(model_dir, args, tmp / "plain.json", "--forms", "auto", "7x4", "--priors", *priors)
        steered = bench_sample(model_dir, args, tmp / "steered.json", "--forms", "auto", "--priors", default,
                               "--rhyme", "auto", "--meter")
        rate = {(r["form"], r["prior"]): r["poems_per_s"] for r in rows}
        out[model_dir] = dict(default_prior=default, unsteered_auto_form={p: rate["auto", p] for p in priors},
                              fixed_form_7x4=rate["7x4", default],
                              meter_rhyme_auto_form=steered[0]["poems_per_s"],
                              meter_rhyme_share=steered[0]["poems_per_s"] / rate["auto", default])
    return dict(shipped=out)


def studio_part(args, tmp: Path) -> dict:
    progress("the studio's latency (POST /api/sample, n = 5)")
    out = tmp / "studio.json"
    subprocess.run([sys.executable, str(SCRIPTS / "bench_studio.py"), "poem", "--clients", "1", "20",
                    "--json", str(out)], check=True)
    return dict(studio=json.loads(out.read_text()))


PARTS = dict(train=train_part, sampling=sampling_part, shipped=shipped_part, studio=studio_part)  # --parts names

# -----------------------------------------------------------------------------
# report


def format_table(entry: dict) -> str:
    m = entry["machine"]
    lines = [f"{m['device']}: torch {m['torch']}, {m['threads']} threads; precision auto = {entry['precision']}"]
    if "time_to_quality" in entry:
        ttq, tok = entry["time_to_quality"], entry["train_tokens_per_s"]
        lines += ["", f"{'GEMM (GFLOP/s)':<40}{'fp32':>10}{'bf16':>10}"]
        lines += [f"{name:<40}{rate['fp32']:>10.1f}{rate['bf16']:>10.1f}" for name, rate in entry["gemm"].items()]
        new = "not reached" if ttq["new_seconds"] is None else f"{ttq['new_seconds']:.0f} s (step {ttq['new_steps']})"
        speedup = "-" if ttq["speedup"] is None else f"{ttq['speedup']:.2f}x"
        lines += ["", f"time to quality: validation -ELBO {ttq['target_elbo']:.2f} nats/poem (reference at step "
                  f"{ttq['reference_steps']}): reference {ttq['reference_seconds']:.0f} s, new {new}: {speedup}",
                  f"train tokens/s: reference {tok['reference']:,.0f} (MFU {entry['mfu']['reference']:.1%}), "
                  f"new {tok['new']:,.0f} (MFU {entry['mfu']['new']:.1%}): {tok['speedup']:.2f}x"]
    if "inference" in entry:
        lines += ["", f"{'untrained':<12}{'5x4 poems/s':>13}{'7x8 poems/s':>13}{'IW-NLL s/1000':>15}"]
        for path, inf in entry["inference"].items():
            rates = inf["sampling_poems_per_s"]
            lines.append(f"{path:<12}{rates['5x4']:>13,.0f}{rates['7x8']:>13,.0f}{inf['iw_seconds_per_1000']:>15,.0f}")
    for model_dir, row in entry.get("shipped", {}).items():
        priors = ", ".join(f"{p} {r:,.0f}" for p, r in row["unsteered_auto_form"].items())
        lines += ["", f"{model_dir} (poems/s): automatic form: {priors}; 7x4 {row['fixed_form_7x4']:,.0f}; "
                  f"--meter --rhyme {row['meter_rhyme_auto_form']:,.0f} ({row['meter_rhyme_share']:.0%} of unsteered)"]
    if "studio" in entry:
        lines.append("")
        lines += [f"studio, {r['clients']:>2} clients: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms "
                  f"({r['ratio']:.2f}x the p50 of one)" for r in entry["studio"]["rows"]]
    return "\n".join(lines)


def merged(path: Path | None, key: str, entry: dict) -> dict:
    """The report in `path` with this device's entry updated by `entry` (other devices' entries kept)."""
    report = json.loads(path.read_text()) if path is not None and path.is_file() else {"devices": {}}
    if "devices" not in report:
        sys.exit(f"error: {path} is not a benchmark report of this script (it has no 'devices'): give another --out")
    report["devices"][key] = {**report["devices"].get(key, {}), **entry}
    return report


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="a prepared poem dataset")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda where present, else cpu)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                        help="what to measure (default all)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each path (default 300)")
    parser.add_argument("--batch-size", type=int, help="training batch size of both paths (default: the presets')")
    parser.add_argument("--eval-every", type=int, default=25, help="steps between validations (default 25)")
    parser.add_argument("--eval-examples", type=int, default=500, help="validation poems (default 500)")
    parser.add_argument("--samples", type=int, default=2000, help="poems per timed sampling run")
    parser.add_argument("--iw-k", type=int, default=500, help="importance samples (default 500)")
    parser.add_argument("--iw-examples", type=int, nargs=2, default=[8, 64], metavar=("REFERENCE", "NEW"),
                        help="test poems scored for the IW-NLL time per path (default 8 64)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: a few steps, poems and samples")
    parser.add_argument("--out", type=Path, help="merge the results into this JSON report")
    parser.add_argument("--plot", type=Path, default=Path("docs/figures/time_to_quality.png"))
    parser.add_argument("--inference", choices=list(PATHS), help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.eval_examples, args.samples, args.iw_k = 4, 2, 16, 20, 4
        args.iw_examples = [2, 2]
    if min(args.steps, args.eval_every, args.eval_examples, args.samples, args.iw_k, *args.iw_examples) < 1 or \
            (args.batch_size is not None and args.batch_size < 1):
        parser.error("--steps, --batch-size, --eval-every, --eval-examples, --samples, --iw-k and --iw-examples "
                     "must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    args.iw_examples = dict(zip(PATHS, args.iw_examples))
    if not (args.data / "tokenizer.model").is_file():
        parser.error(f"{args.data} is not a prepared dataset: run `textvae prepare poems` first")
    missing = [d for d in SHIPPED if not (Path(d) / "config.json").is_file()] if "shipped" in args.parts else []
    if missing:
        parser.error(f"the shipped part needs {', '.join(missing)}: run from a clone of the repository")
    return args


def main() -> None:
    args = parse_args()
    if args.inference:
        write_text(args.out, json.dumps(inference(args.inference, args)) + "\n")
        return
    entry = dict(machine=machine_info(args.device), precision=resolve_precision("auto", args.device),
                 args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.parts:
            entry |= PARTS[name](args, Path(tmp))
    print()
    print(format_table(entry))
    if args.out:
        write_text(args.out, json.dumps(merged(args.out, entry["machine"]["device"], entry), indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
