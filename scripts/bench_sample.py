"""Poems per second for batched, form-constrained sampling from the prior, in fp32 and bf16.

    python scripts/bench_sample.py runs/poem/best                      # a trained model
    python scripts/bench_sample.py --untrained --data data/poems       # VAEConfig() defaults, real tokenizer
    python scripts/bench_sample.py data/pretrained --forms 7x4 auto --rhyme auto --meter   # steered
    python scripts/bench_sample.py data/faithful --forms auto --priors standard gmm flow --json rates.json

bf16 decodes with `Decoding(precision="bf16")`, a bfloat16 copy of the decoder (sampling statistics stay
fp32), auto with what `Decoding(precision="auto")` picks on this machine; `--precisions autocast` measures
torch.autocast over the fp32 weights instead, which re-casts every weight at every step. Each figure is the
best of --repeats timed runs of `generate.sample(n, constraint=..., prior=...)`, text included, after one
warm-up batch; the constraint is `generate.constraint_for(tokenizer, form, rhyme=..., meter=...)`, so --forms
takes auto and drawn too. `--json` writes the rows as a list of {precision, form, prior, poems_per_s}.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from textvae.atomic import write_text
from textvae.generate import PRIORS, Decoding, constraint_for, load_model, sample
from textvae.poetry import FORMS, form_of, split_lines
from textvae.precision import PRECISIONS
from textvae.tokenizer import load_tokenizer
from textvae.vae import TextVAE, VAEConfig


def build_model(args) -> TextVAE:
    if not args.untrained:
        return load_model(args.model_dir, device=args.device)
    tokenizer = load_tokenizer(f"{args.data}/tokenizer.model")
    torch.manual_seed(0)
    return TextVAE(VAEConfig(vocab_size=tokenizer.vocab_size), tokenizer).to(args.device).eval()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def poems_per_second(model, form: str, precision: str, prior: str, args) -> float:
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "autocast")
    decoding = Decoding(strategy="sample", temperature=args.temperature,
                        precision="fp32" if precision == "autocast" else precision)
    constraint = constraint_for(model.tokenizer, form, rhyme=args.rhyme, meter=args.meter, device=args.device)
    options = dict(decoding=decoding, constraint=constraint, prior=prior, batch_size=args.batch)
    with autocast:
        sample(model, min(args.batch, args.n), seed=0, **options)
        best = float("inf")
        for repeat in range(args.repeats):
            synchronize(args.device)
            start = time.perf_counter()
            texts = sample(model, args.n, seed=repeat, **options)
            best = min(best, time.perf_counter() - start)
    forms = {form_of(split_lines(t)) for t in texts}
    assert None not in forms and (form not in FORMS or forms == {form}), "a sample broke the form"
    return args.n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", help="a save_pretrained directory")
    parser.add_argument("--untrained", action="store_true", help="benchmark an untrained VAEConfig() model")
    parser.add_argument("--data", default="data/poems", help="prepared dataset whose tokenizer --untrained uses")
    parser.add_argument("--forms", nargs="+", default=["5x4", "7x8"], help="5x4 7x4 5x8 7x8 auto drawn")
    parser.add_argument("--rhyme", help="rhyme steering: auto, random, a group or a character (default: off)")
    parser.add_argument("--meter", action="store_true", help="meter steering (格律)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=[*PRECISIONS, "autocast"])
    parser.add_argument("--n", type=int, default=4000, help="poems per timed run")
    parser.add_argument("--batch", type=int, default=1000, help="poems decoded together")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--priors", nargs="+", default=["auto"], choices=PRIORS,
                        help="where z comes from (default: the model's own, auto)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    if (args.model_dir is None) == (not args.untrained):
        parser.error("give a model directory or --untrained")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    print(f"{'untrained' if args.untrained else args.model_dir}: {model.config.decoder} decoder "
          f"{model.config.decoder_hidden}, vocab {model.config.vocab_size}; {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.n} poems per run, rhyme {args.rhyme or 'off'}, "
          f"meter {'on' if args.meter else 'off'}")
    rows = []
    for precision in args.precisions:
        for form in args.forms:
            for prior in args.priors:
                rate = poems_per_second(model, form, precision, prior, args)
                rows.append(dict(precision=precision, form=form, prior=prior, poems_per_s=rate))
                print(f"{precision:>8}  {form:>5}  {prior:>9}  {rate:8,.0f} poems/s", flush=True)
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
