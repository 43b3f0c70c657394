"""Speed harness: the machine's GEMM ceiling, training throughput and MFU per preset, sampling and IW-NLL
rates, and the speed-up of textvae over a straightforward reference model, all measured in one run.

    python scripts/benchmark.py --data data/poems                                   # everything
    python scripts/benchmark.py --data /tmp/tvdata/poems --presets poem-small --steps 3 --skip-iw
    python scripts/benchmark.py --precisions fp32 --skip-sampling --skip-iw --out bench.json

Training runs forward + backward + AdamW step on real batches (data.Batches, the trainer's own batching)
and counts predicted tokens (text + EOS, padding excluded). MFU divides the achieved model FLOP/s by the
bf16 GEMM rate measured in the same run, so it is a fraction of what this machine's matmul can do, not of a
datasheet peak. The reference model (below) trains on the same batches in fp32; the runs of a preset
(textvae per precision, then the reference) take turns step by step, since absolute times drift on a shared
machine, and the speed-up is the median over batches of reference step time / textvae step time.
Peak memory is the process's ru_maxrss (psutil is not a dependency): its growth over the high-water mark
while a preset trains, all of its runs together, so a preset that needs less than an earlier one shows 0.
Shapes: B batch, T tokens, V vocab, E embedding, H hidden, C transformer width, D latent, L layers.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from textvae import data
from textvae.atomic import write_text
from textvae.evaluate import EvalConfig, iw_nll
from textvae.generate import Decoding, sample
from textvae.train import DEFAULT_PRESET, PRESETS
from textvae.vae import PAD_ID, TextVAE, VAEConfig

GEMM_SHAPES = {"output layer 2176x256 @ 256x6000": (2176, 256, 6000), "4096^3": (4096, 4096, 4096)}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

# -----------------------------------------------------------------------------
# machine and GEMM ceiling


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines() if line.startswith("flags")),
                 set())
    return dict(cpu=model, logical_cpus=os.cpu_count(), avx512_bf16="avx512_bf16" in flags,
                amx=sorted(f for f in flags if f.startswith("amx")), torch=torch.__version__,
                threads=torch.get_num_threads(), python=platform.python_version())


def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, min_seconds: float = 0.5) -> float:
    """Best GFLOP/s of (m, k) @ (k, n) over repeats lasting at least min_seconds in all (2mkn FLOPs)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up: lets oneDNN pick and cache its kernel
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


def flops_per_token(c: VAEConfig, tokens_per_sentence: float, training: bool = True) -> float:
    """
    Matmul FLOPs per predicted token, counted from the config (2 FLOPs per multiply-add; biases,
    norms, activations, softmax and the embedding lookups are left out as lower-order terms):

      GRU layer (in -> H):      2 * 3 * (in*H + H*H)                per position and direction
      encoder, gru:             sum over layers of 2 directions; in = E, then 2H
      encoder, gcnn:            2*E*H (projection) + L * 2*k*H*2H (GLU conv to 2H channels)
      head (per sentence):      2 * 2 * (2H_enc) * D (loc and log-variance / scale), divided by T
      decoder, gru:             sum over layers of the GRU layer with in = E + D, then H;
                                + 2*D*L*H per sentence for the initial state, divided by T
      decoder, transformer:     L * (2*12*C^2 + 2*2*T*C)  (qkv, proj, 4C MLP; scores and values over
                                the whole length, as the fused causal kernel is usually charged)
      output layer:             2 * H_dec * V
      training:                 3 x forward (the backward pass costs two forwards)

    T = tokens_per_sentence (the mean predicted tokens per sentence in the timed batches).
    """
    E, He, Hd, D, L, V = c.embed_dim, c.encoder_hidden, c.decoder_hidden, c.latent_dim, c.decoder_layers, c.vocab_size
    T = tokens_per_sentence
    total = 0.0
    if c.has_latent:
        if c.encoder == "gru":
            total += sum(2 * gru_flops(E if layer == 0 else 2 * He, He) for layer in range(c.encoder_layers))
        else:
            total += 2 * E * He + c.encoder_layers * 2 * c.kernel_size * He * 2 * He
        total += 2 * 2 * (2 * He) * D / T
    d = D if c.has_latent else 0
    if c.decoder == "gru":
        total += sum(gru_flops(E + d if layer == 0 else Hd, Hd) for layer in range(L)) + 2 * d * L * Hd / T
    else:
        total += L * (2 * 12 * Hd * Hd + 2 * 2 * T * Hd)
    total += 2 * Hd * V
    return 3 * total if training else total

# -----------------------------------------------------------------------------
# the straightforward reference: stock torch modules, fp32, full logits, plain cross-entropy


class ReferenceVAE(nn.Module):
    """Same sizes as a VAEConfig: embedding -> bidirectional nn.GRU (or Conv1d GLU stack) -> Gaussian
    q(z|x) with reparameterisation -> nn.GRU or causal nn.TransformerEncoderLayer decoder -> Linear to V.
    `forward(ids, mask)` returns the mean over the batch of rec + KL, as a training loss."""

    def __init__(self, c: VAEConfig):
        super().__init__()
        self.c = c
        self.enc_embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD_ID)
        if c.encoder == "gru":
            self.enc = nn.GRU(c.embed_dim, c.encoder_hidden, c.encoder_layers, batch_first=True, bidirectional=True)
        else:
            self.enc_proj = nn.Linear(c.embed_dim, c.encoder_hidden)
            self.enc = nn.ModuleList(nn.Conv1d(c.encoder_hidden, 2 * c.encoder_hidden, c.kernel_size, padding="same")
                                     for _ in range(c.encoder_layers))
        self.to_loc = nn.Linear(2 * c.encoder_hidden, c.latent_dim)
        self.to_logvar = nn.Linear(2 * c.encoder_hidden, c.latent_dim)
        if c.decoder == "gru":
            self.dec_embed = nn.Embedding(c.vocab_size, c.embed_dim)
            self.z_to_hidden = nn.Linear(c.latent_dim, c.decoder_layers * c.decoder_hidden)
            self.dec = nn.GRU(c.embed_dim + c.latent_dim, c.decoder_hidden, c.decoder_layers, batch_first=True)
        else:
            self.dec_embed = nn.Embedding(c.vocab_size, c.decoder_hidden)
            self.pos_embed = nn.Embedding(c.max_len + 1, c.decoder_hidden)
            self.z_to_prefix = nn.Linear(c.latent_dim, c.decoder_hidden)
            layer = nn.TransformerEncoderLayer(c.decoder_hidden, c.num_heads, 4 * c.decoder_hidden, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.dec = nn.TransformerEncoder(layer, c.decoder_layers, enable_nested_tensor=False)
        self.lm_head = nn.Linear(c.decoder_hidden, c.vocab_size)

    def encode(self, ids, mask):
        x = self.enc_embed(ids)  # (B, T, E)
        if self.c.encoder == "gru":
            packed = pack_padded_sequence(x, mask.sum(dim=1).cpu(), batch_first=True, enforce_sorted=False)
            _, h = self.enc(packed)  # (2L, B, H)
            return torch.cat([h[-2], h[-1]], dim=-1)  # (B, 2H)
        x = self.enc_proj(x).transpose(1, 2)  # (B, H, T)
        m = mask[:, None, :]
        for conv in self.enc:
            x = x + F.glu(conv(x.masked_fill(~m, 0.0)), dim=1)
        mean = x.masked_fill(~m, 0.0).sum(dim=2) / m.sum(dim=2)
        return torch.cat([mean, x.masked_fill(~m, float("-inf")).amax(dim=2)], dim=1)  # (B, 2H)

    def decode(self, z, ids):
        B, T = ids.shape
        if self.c.decoder == "gru":
            x = torch.cat([self.dec_embed(ids), z[:, None, :].expand(-1, T, -1)], dim=-1)  # (B, T, E + D)
            h0 = torch.tanh(self.z_to_hidden(z)).view(B, self.c.decoder_layers, -1).transpose(0, 1).contiguous()
            out, _ = self.dec(x, h0)  # (B, T, H)
        else:
            x = torch.cat([self.z_to_prefix(z)[:, None, :], self.dec_embed(ids)], dim=1)  # (B, 1 + T, C)
            x = x + self.pos_embed.weight[:T + 1]
            causal = nn.Transformer.generate_square_subsequent_mask(T + 1)
            out = self.dec(x, mask=causal, is_causal=True)[:, 1:]  # (B, T, C)
        return self.lm_head(out)  # (B, T, V)

    def forward(self, ids, mask):
        h = self.encode(ids, mask)
        loc, logvar = self.to_loc(h), self.to_logvar(h)  # (B, D)
        z = loc + torch.randn_like(loc) * (0.5 * logvar).exp()
        kl = 0.5 * (loc.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)  # (B,)
        logits = self.decode(z, ids[:, :-1])
        targets = ids[:, 1:]
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD_ID, reduction="none")
        return (nll.view(targets.shape).sum(dim=1) + kl).mean()

# -----------------------------------------------------------------------------
# training throughput


def textvae_loss(model: TextVAE, ids, mask) -> torch.Tensor:
    out = model(ids, mask)
    return (out.rec + out.kl).mean()


def reference_loss(model: ReferenceVAE, ids, mask) -> torch.Tensor:
    return model(ids, mask)


def train_step(model, optimizer, loss_fn, ids, mask, precision: str) -> float:
    """One forward + backward + clip + AdamW step; returns its wall time in seconds."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = loss_fn(model, ids, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - start


def interleaved_step_times(runs: dict, batches: list, warmup: int) -> dict:
    """
    Seconds per timed step for each run {name: (model, loss_fn, precision)}, all trained on the same
    batches. The runs take turns on each batch, so load from other processes on a shared machine slows
    them alike and their per-step ratios stay meaningful; the first `warmup` batches are not timed.
    """
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _, _) in runs.items()}
    seconds = {name: [] for name in runs}
    for i, (ids, mask) in enumerate(batches):
        for name, (model, loss_fn, precision) in runs.items():
            elapsed = train_step(model.train(), optimizers[name], loss_fn, ids, mask, precision)
            if i >= warmup:
                seconds[name].append(elapsed)
        progress(f"  step {i + 1}/{len(batches)}{' (warm-up)' if i < warmup else ''}")
    return seconds


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_preset(name: str, vocab_size: int, train_seqs: list, args) -> dict:
    model_overrides, train_overrides = PRESETS[name]
    config = VAEConfig(vocab_size=vocab_size, **model_overrides)
    batch_size = args.batch_size or train_overrides.get("batch_size", 128)
    batcher = data.Batches(train_seqs, batch_size, seed=0, max_len=config.max_len)
    batches = [batcher(step) for step in range(args.warmup + args.steps)]
    timed = batches[args.warmup:]
    tokens_per_sentence = sum(int(m[:, 1:].sum()) for _, m in timed) / sum(m.size(0) for _, m in timed)
    runs = {}
    for precision in args.precisions:
        torch.manual_seed(0)
        runs[precision] = (TextVAE(config), textvae_loss, precision)
    torch.manual_seed(0)
    runs["reference"] = (ReferenceVAE(config), reference_loss, "fp32")
    rss_before = peak_rss_mib()
    progress(f"{name}: {', '.join(runs)} in turns, {args.warmup} + {args.steps} steps of {batch_size}")
    seconds = interleaved_step_times(runs, batches, args.warmup)
    tokens = sum(int(m[:, 1:].sum()) for _, m in timed)
    reference = seconds["reference"]
    # the median of per-batch ratios: robust to a burst of outside load that hits one step
    speedup = {p: statistics.median(r / t for r, t in zip(reference, seconds[p])) for p in args.precisions}
    return dict(batch_size=batch_size, tokens_per_sentence=tokens_per_sentence,
                params=sum(p.numel() for p in runs[args.precisions[0]][0].parameters()),
                flops_per_token=flops_per_token(config, tokens_per_sentence),
                tokens_per_s={p: tokens / sum(seconds[p]) for p in args.precisions},
                reference_tokens_per_s=tokens / sum(reference), speedup=speedup, step_seconds=seconds,
                peak_rss_growth_mib=peak_rss_mib() - rss_before)

# -----------------------------------------------------------------------------
# sampling and IW-NLL with the default-size model


def default_model(tokenizer) -> TextVAE:
    """The default preset's model (untrained: speed does not depend on the weights)."""
    torch.manual_seed(0)
    return TextVAE(VAEConfig(vocab_size=tokenizer.vocab_size, **PRESETS[DEFAULT_PRESET][0]), tokenizer).eval()


def sampling_poems_per_second(model: TextVAE, n: int, form: str, precision: str) -> float:
    """Batched, form-constrained ancestral sampling from the prior, text included; best of two runs."""
    decoding = Decoding(strategy="sample", precision=precision)
    sample(model, min(n, 100), form=form, decoding=decoding, seed=0)  # warm-up
    best = float("inf")
    for seed in (1, 2):
        start = time.perf_counter()
        sample(model, n, form=form, decoding=decoding, seed=seed)
        best = min(best, time.perf_counter() - start)
    return n / best


def iw_seconds_per_1000(model: TextVAE, sequences: list, k: int) -> float:
    """Seconds for IW-NLL over the given sentences, scaled to 1,000 sentences of the same mix."""
    start = time.perf_counter()
    iw_nll(model, sequences, k, EvalConfig.iw_rows, EvalConfig.batch_size)
    return (time.perf_counter() - start) * 1000 / len(sequences)

# -----------------------------------------------------------------------------
# report


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [(f"{m['cpu']}: {m['logical_cpus']} logical CPUs, avx512_bf16 {'yes' if m['avx512_bf16'] else 'no'}, "
              f"amx {'/'.join(m['amx']) or 'no'}; torch {m['torch']}, {m['threads']} threads"), "",
             f"{'GEMM (GFLOP/s)':<40}{'fp32':>10}{'bf16':>10}"]
    for name, rate in report["gemm"].items():
        lines.append(f"{name:<40}{rate['fp32']:>10.1f}{rate['bf16']:>10.1f}")
    lines += ["", f"ceiling for MFU: {report['ceiling_gflops']:.1f} GFLOP/s (best bf16 GEMM)", "",
              (f"{'training':<22}{'tok/s':>9}{'GFLOP/tok':>11}{'GFLOP/s':>9}{'MFU':>7}{'ref tok/s':>11}"
               f"{'speed-up':>10}{'+RSS MiB':>10}")]
    for name, r in report["presets"].items():
        for precision, rate in r["tokens_per_s"].items():
            achieved = rate * r["flops_per_token"] / 1e9
            lines.append(f"{name + ' ' + precision:<22}{rate:>9,.0f}{r['flops_per_token'] / 1e9:>11.4f}{achieved:>9.1f}"
                         f"{r['mfu'][precision]:>7.1%}{r['reference_tokens_per_s']:>11,.0f}"
                         f"{r['speedup'][precision]:>9.2f}x{r['peak_rss_growth_mib']:>10.0f}")
    for name, r in report["presets"].items():
        reference = r["reference_tokens_per_s"] * r["flops_per_token"] / 1e9
        lines.append(f"{name}: the reference reaches {reference:.1f} GFLOP/s, so no implementation of the same "
                     f"FLOPs can beat it by more than {report['ceiling_gflops'] / reference:.1f}x on this machine")
    if "sampling_poems_per_s" in report:
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in report["sampling_poems_per_s"].items())
        lines.append(f"\nsampling (default preset's model, batches of 1000, poems/s): {rates}")
    if "iw_seconds_per_1000" in report:
        lines.append(f"IW-NLL (default model, K={report['iw_k']}): {report['iw_seconds_per_1000']:,.0f} s per 1,000 "
                     f"sentences (from {report['iw_examples']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/poems", help="a prepared dataset (default data/poems)")
    parser.add_argument("--presets", nargs="+", default=[DEFAULT_PRESET], choices=list(PRESETS),
                        help=f"presets to train (default {DEFAULT_PRESET}, the default model's)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per run (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first (default 2)")
    parser.add_argument("--batch-size", type=int, default=0, help="training batch (default: the preset's)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--samples", type=int, default=1000, help="poems in the timed sampling run")
    parser.add_argument("--iw-examples", type=int, default=16, help="test sentences scored for the IW-NLL time")
    parser.add_argument("--iw-k", type=int, default=500, help="importance samples (default 500)")
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-iw", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")

    dataset, tokenizer = data.load(args.data)
    report = dict(machine=machine_info(), args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    train_seqs = data.token_ids(dataset["train"])
    # training first: the GEMM operands would otherwise set a high-water mark that hides its memory
    presets = {name: bench_preset(name, tokenizer.vocab_size, train_seqs, args) for name in args.presets}
    progress("GEMM ceiling")
    report["gemm"] = gemm_rates()
    report["ceiling_gflops"] = max(rate["bf16"] for rate in report["gemm"].values())
    for r in presets.values():
        r["mfu"] = {p: rate * r["flops_per_token"] / 1e9 / report["ceiling_gflops"]
                    for p, rate in r["tokens_per_s"].items()}
    report["presets"] = presets
    if not (args.skip_sampling and args.skip_iw):
        model = default_model(tokenizer)
    if not args.skip_sampling:
        progress(f"sampling {args.samples} poems per form and precision")
        report["sampling_poems_per_s"] = {f"{form} {p}": sampling_poems_per_second(model, args.samples, form, p)
                                          for form in ("5x4", "7x8") for p in args.precisions}
    if not args.skip_iw:
        test = data.token_ids(dataset["test"])
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
        subset = [test[i] for i in order[:args.iw_examples].tolist()]
        progress(f"IW-NLL, K={args.iw_k}, {len(subset)} sentences")
        report.update(iw_k=args.iw_k, iw_examples=len(subset),
                      iw_seconds_per_1000=iw_seconds_per_1000(model, subset, args.iw_k))
    print()
    print(format_table(report))
    if args.out:
        write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
