"""Benchmark IW-NLL (Burda et al. 2016) over a dataset split: wall time, decoded tokens per second, and
how much bf16 moves the estimate.

    python scripts/bench_iwnll.py --data /tmp/tvdata/poems                       # untrained default model
    python scripts/bench_iwnll.py --model runs/poem-base/best --data data/poems  # a trained one
    python scripts/bench_iwnll.py --data /tmp/tvdata/poems --max-examples 64     # a subset, projected

Without --model the model is an untrained `VAEConfig()` (the default size) with the dataset's tokenizer.
With --max-examples the subset is a seeded random sample and the full-split time is projected from the
tokens it decoded. --precision is the package's one setting (auto | fp32 | bf16, see textvae.precision).
--compare-bf16 N scores N examples in fp32 and in bf16 under the same seed and prints the difference per
sentence.
"""

import argparse
import time

import torch

from textvae import data
from textvae.evaluate import EvalConfig, load, select_split
from textvae.latent_stats import iw_nll
from textvae.metrics import perplexity
from textvae.precision import PRECISIONS, resolve_precision
from textvae.vae import TextVAE, VAEConfig


def build_model(args):
    if args.model:
        model, dataset = load(args.model, args.data, args.device)
        return model, dataset
    dataset, tokenizer = data.load(args.data)
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=tokenizer.vocab_size), tokenizer).to(args.device).eval()
    return model, dataset


def run(model, sequences, args, precision: str) -> tuple[torch.Tensor, float]:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    nll = iw_nll(model, sequences, args.k, args.rows, args.batch_size, precision, args.seed, progress=True)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return nll, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved model directory (default: an untrained default-size model)")
    parser.add_argument("--data", default="data/poems", help="a prepared dataset (default data/poems)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=500, help="importance samples per example (default 500)")
    parser.add_argument("--rows", type=int, default=EvalConfig.iw_rows, help="decoder rows per pass")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size, help="examples per encoder pass")
    parser.add_argument("--max-examples", type=int, default=0, help="a random subset of the split (0: all)")
    parser.add_argument("--precision", choices=PRECISIONS, default=EvalConfig.precision,
                        help=f"as `textvae evaluate --precision` (default {EvalConfig.precision})")
    parser.add_argument("--compare-bf16", type=int, default=0, metavar="N",
                        help="also score N examples in fp32 and bf16 and print the difference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, dataset = build_model(args)
    full = select_split(dataset, EvalConfig(split=args.split))
    split = select_split(dataset, EvalConfig(split=args.split, max_examples=args.max_examples, seed=args.seed))
    sequences = split.data.column("ids").to_pylist()
    ntokens = torch.tensor([len(s) + 1 for s in sequences])  # EOS counted, BOS not
    full_tokens = sum(len(s) + 1 for s in full.data.column("ids").to_pylist())
    c = model.config
    print(f"model: {args.model or 'untrained VAEConfig()'} ({c.encoder}/{c.posterior}/{c.decoder}, "
          f"V={c.vocab_size}, H={c.decoder_hidden}, D={c.latent_dim}); {sum(p.numel() for p in model.parameters()):,} "
          f"parameters; {torch.get_num_threads()} threads on {args.device}")
    print(f"{args.split}: {len(sequences):,} of {len(full):,} examples, {int(ntokens.sum()):,} tokens; K={args.k}, "
          f"rows={args.rows}, precision {args.precision} ({resolve_precision(args.precision, args.device)} here)")

    nll, seconds = run(model, sequences, args, args.precision)
    decoded = int(ntokens.sum()) * args.k
    print(f"IW-NLL {nll.mean():.3f} nats/sentence, IW-PPL {perplexity(nll, ntokens):.2f}")
    print(f"time {seconds:.1f} s; {decoded / seconds:,.0f} decoded tokens/s")
    if len(sequences) < len(full):
        print(f"projected for the whole {args.split} split at K={args.k}: {seconds * full_tokens / ntokens.sum():.0f} s")

    if args.compare_bf16:
        subset = sequences[:args.compare_bf16]
        fp32, t32 = run(model, subset, args, "fp32")
        bf16, t16 = run(model, subset, args, "bf16")
        diff = bf16 - fp32
        print(f"bf16 vs fp32 on {len(subset)} examples (same draws): mean difference {diff.mean():+.4f} "
              f"nats/sentence, max |difference| {diff.abs().max():.4f}; relative to the NLL "
              f"{(diff / fp32).abs().max():.2e}; time {t32:.1f} s fp32, {t16:.1f} s bf16")


if __name__ == "__main__":
    main()
