"""Fine-tune a VAE jointly with its flow prior: the ELBO with p(z) the model's fitted flow (textvae.priors.flow)
instead of N(0, I), the KL term estimated by one sample (log q(z|x) - log p(z), the z the decoder reads), encoder,
decoder and flow trained together. It measures whether a learned prior that moves with the posteriors closes the
gap between the VAE's likelihood and its language model's.

    python scripts/flow_finetune.py data/pretrained runs/pretrained-flow-ft --steps 2000
    python scripts/flow_finetune.py data/pretrained /tmp/ft --steps 20 --iw-samples 2 --max-examples 20  # smoke

The model folder must hold a flow prior (`textvae fit-prior MODEL --kind flow --fit-on samples`). The tuned model
is saved as a new folder with the tuned flow as its default prior, and `OUT/finetune.json` records the IW-NLL
under the flow before and after (`textvae evaluate OUT --iw-prior flow` gives the same figure).
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from textvae import TextVAE
from textvae.atomic import write_text
from textvae.data import pad_batch, token_ids
from textvae.evaluate import load


def elbo_under_flow(model: TextVAE, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-ELBO per poem (B,) with p(z) the model's flow: rec + log q(z|x) - log p(z) at one z ~ q(z|x)."""
    q = model.encode(ids, mask)
    z = q.rsample()  # (B, D)
    kl = q.log_prob(z) - model.priors["flow"].log_prob(z)
    return model.reconstruction_nll(z, ids) + kl


def iw_nll(model_dir: Path, args, name: str) -> float:
    out = args.out / f"iw-{name}.json"
    subprocess.run(["textvae", "evaluate", str(model_dir), "--data", str(args.data), "--iw-prior", "flow",
                    "--iw-samples", str(args.iw_samples), "--max-examples", str(args.max_examples),
                    "-n", "0", "--seed", "0", "--json", "--out", str(out)], check=True,
                   capture_output=True)
    return json.loads(out.read_text())["latent"]["iw_nll"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path, help="the tuned model's folder (must not exist)")
    parser.add_argument("--data", type=Path, default=Path("data/poems"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--max-examples", type=int, default=0, help="test poems the IW-NLL scores (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"error: {args.out} exists: the tuned model goes into a new folder")
    model, dataset = load(args.model_dir, args.data)
    if "flow" not in model.priors:
        sys.exit(f"error: {args.model_dir} has no flow prior: fit one with `textvae fit-prior --kind flow`")
    flow = model.priors["flow"]
    sequences = token_ids(dataset["train"])
    parameters = [*model.parameters(), *flow.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model.train()
    flow.train()
    start, history = time.perf_counter(), []
    for step in tqdm(range(args.steps), desc="fine-tuning", unit="step"):
        batch = torch.randint(len(sequences), (args.batch_size,), generator=generator).tolist()
        ids, mask = pad_batch([sequences[i] for i in batch], model.config.max_len)
        for group in optimizer.param_groups:  # cosine decay over the run
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        loss = elbo_under_flow(model, ids, mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if step % 100 == 0:
            history.append(dict(step=step, loss=loss.item()))
    model.eval()
    flow.eval()
    model.default_prior = "flow"
    model.save_pretrained(args.out)
    before, after = iw_nll(args.model_dir, args, "before"), iw_nll(args.out, args, "after")
    report = dict(source=str(args.model_dir), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                  seconds=round(time.perf_counter() - start), iw_samples=args.iw_samples,
                  max_examples=args.max_examples, iw_nll_flow_before=before, iw_nll_flow_after=after,
                  history=history)
    write_text(args.out / "finetune.json", json.dumps(report, indent=1) + "\n")
    print(f"IW-NLL under the flow (K={args.iw_samples}): {before:.2f} before, {after:.2f} after {args.steps} steps")


if __name__ == "__main__":
    main()
