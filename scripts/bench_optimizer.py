"""The optimizer's share of a training step: AdamW one tensor at a time (torch's default on a CPU, what the
trainer used before) against the fused kernel (what it uses now), on a preset's model and real batches.

    python scripts/bench_optimizer.py --preset ptb --data data/ptb --out docs/bench_optimizer.json
    python scripts/bench_optimizer.py --preset poem --data data/poems --steps 10

Both optimizers step the same model from the same weights on the same batches, alternating in rounds, so
that a noisy machine slows both alike; the figures are medians over the rounds. The largest parameter
difference after one step from the same weights and gradients shows that the two apply the same update up
to rounding (over many steps Adam amplifies rounding, as it does any change in summation order).
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from textvae import data
from textvae.atomic import write_text
from textvae.malloc import keep_freed_memory
from textvae.presets import PRESETS
from textvae.vae import TextVAE, VAEConfig, override

OPTIMIZERS = {"per-tensor": dict(foreach=False), "fused": dict(fused=True)}


def timed_steps(model, optimizer, batches, first: int, steps: int) -> tuple[float, float]:
    """Seconds for `steps` training steps, and the seconds of those spent in optimizer.step()."""
    total = in_optimizer = 0.0
    for step in range(first, first + steps):
        started = time.perf_counter()
        out = model(*batches(step))
        loss = (out.rec + out.kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        before_step = time.perf_counter()
        optimizer.step()
        done = time.perf_counter()
        total, in_optimizer = total + done - started, in_optimizer + done - before_step
    return total, in_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ptb", choices=list(PRESETS))
    parser.add_argument("--data", type=Path, default=Path("data/ptb"), help="a prepared dataset")
    parser.add_argument("--posterior", default="bn", help="the model's posterior (default bn)")
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=20, help="steps a round and optimizer (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if not (args.data / "dataset").is_dir():
        parser.error(f"{args.data} is not a prepared dataset (textvae prepare ...)")
    if min(args.steps, args.rounds, args.threads) < 1:
        parser.error("--steps, --rounds and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    model_settings, train_settings = PRESETS[args.preset].model, PRESETS[args.preset].train
    dataset, tokenizer = data.load(args.data)
    config = VAEConfig.from_dict(override(model_settings, dict(posterior=args.posterior,
                                                               vocab_size=tokenizer.vocab_size)))
    torch.manual_seed(0)
    start = TextVAE(config, tokenizer).train()
    batch_size = args.batch_size or train_settings["batch_size"]
    batches = data.Batches(data.token_ids(dataset["train"]), batch_size, seed=0, max_len=config.max_len)
    models = {name: copy.deepcopy(start) for name in OPTIMIZERS}
    optimizers = {name: torch.optim.AdamW(models[name].parameters(), lr=1e-3, **kw) for name, kw in OPTIMIZERS.items()}
    for name in OPTIMIZERS:  # one step from the same weights on the same batch, which also allocates the moments
        torch.manual_seed(0)
        timed_steps(models[name], optimizers[name], batches, 0, 1)
    one_step = max((a - b).abs().max().item() for a, b in zip(models["per-tensor"].parameters(),
                                                             models["fused"].parameters()))
    rounds = {name: [] for name in OPTIMIZERS}
    for r in range(args.rounds):
        for name in OPTIMIZERS:
            torch.manual_seed(r)  # the same dropout masks for both
            rounds[name].append(timed_steps(models[name], optimizers[name], batches, 1 + r * args.steps, args.steps))
    figures = {name: dict(step_ms=1000 * statistics.median(t for t, _ in rs) / args.steps,
                          optimizer_ms=1000 * statistics.median(o for _, o in rs) / args.steps)
               for name, rs in rounds.items()}
    result = dict(preset=args.preset, posterior=args.posterior, batch_size=batch_size, threads=args.threads,
                  parameters=sum(p.numel() for p in start.parameters()), steps=args.steps, rounds=args.rounds,
                  torch=torch.__version__, **figures,
                  step_speedup=figures["per-tensor"]["step_ms"] / figures["fused"]["step_ms"],
                  max_difference_after_one_step=one_step)
    for name, f in figures.items():
        print(f"{name:>10}: {f['step_ms']:7.1f} ms a step, {f['optimizer_ms']:6.1f} ms of it in the optimizer")
    print(f"fused: {result['step_speedup']:.2f}x the steps/s; after one step from the same weights the "
          f"parameters differ by at most {one_step:.1e}")
    if args.out:
        write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
