"""What `textvae evaluate` shows of its report: the printed table (`format_report`) and the PNG plots
(`write_plots`: KL and variance of E_q[z] per dimension, training curves from a run's metrics.jsonl, a 2-D PCA
projection of E_q[z]). The report itself is textvae.evaluate's. Shapes: N examples, D latent.
"""

import json
from pathlib import Path

import torch


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """The report as the plain-text table `textvae evaluate` prints."""
    lat, text = report["latent"], report["text"]
    rows = [f"split {report['split']}: {lat['examples']:,} examples, {lat['tokens']:,} tokens (EOS counted); "
            f"posterior {report['posterior']}; seed {report['seed']}; precision {report['precision']}",
            "", "likelihood (nats per sentence)",
            f"  rec                         {_fmt(lat['rec'])}",
            f"  KL                          {_fmt(lat['kl'])}",
            f"  -ELBO                       {_fmt(-lat['elbo'])}   ELBO-PPL {_fmt(lat['elbo_ppl'])}"]
    if "iw_nll" in lat:
        label = lat["iw_estimator"].ljust(27)  # "IW-NLL (K=500, aggregate prior)" overruns the column
        rows.append(f"  {label} {_fmt(lat['iw_nll'])}   IW-PPL {_fmt(lat['iw_ppl'])}")
    if "mi" in lat:
        d = lat["latent_dim"]
        rows += ["", "latent",
                 f"  MI, q(z) over the whole set {_fmt(lat['mi'], '.3f')}   (<= log N = {lat['log_n']:.2f})",
                 f"  MI, per mini-batch          {_fmt(lat['mi_minibatch'], '.3f')}   (capped at log B)",
                 f"  active units (Var > 0.01)   {lat['active_units']} / {d}",
                 f"  units with 99% of Var E[z]  {lat['effective_units']} / {d}   "
                 f"(principal axes: {lat['effective_units_pca']})",
                 f"  decoder reliance            {_fmt(lat['decoder_reliance'])}   (rec increase with another "
                 f"sentence's z; {_fmt(lat['decoder_reliance_per_token'], '.3f')} nats/token)"]
    if "reconstruction_bleu" in text:
        rows += ["", f"reconstruction BLEU (posterior mode, greedy, form kept)   {_fmt(text['reconstruction_bleu'])}"]
    rows += ["", f"{'text':28}{'samples':>10}{'corpus':>10}"]
    sampled, corpus = text.get("samples", {}), text["corpus"]
    names = [("self_bleu", "Self-BLEU", ".1f"), ("distinct_1", "distinct-1", ".3f"),
             ("distinct_2", "distinct-2", ".3f"), ("copied_texts", "copies a training text", ".1%")]
    if text["poems"]:
        names += [("copied_lines", "lines found in training", ".1%"), ("form", "regular form", ".1%"),
                  ("rhyme", "rhyme rate (judged)", ".1%"), ("rhyme_judged", "  judged by the table", ".1%"),
                  ("tonal", "tonal pattern", ".1%")]
    for key, label, spec in names:
        rows.append(f"  {label:26}{_fmt(sampled.get(key), spec):>10}{_fmt(corpus.get(key), spec):>10}")
    rows.append(f"  ({sampled.get('count', 0):,} prior samples, {text['strategy']} decoding, form "
                f"{sampled.get('constrained_form', 'free')}, rhyme steering {sampled.get('rhyme_steering', 'off')}, "
                f"meter steering {'on' if sampled.get('meter_steering') else 'off'}; corpus: "
                f"{corpus['count']:,} texts of the {report['split']} split)")
    if sampled.get("relaxed"):
        rows.append("  (rules relaxed where no character kept them all, positions: "
                    + ", ".join(f"{rule} {n:,}" for rule, n in sampled["relaxed"].items()) + ")")
    return "\n".join(rows)


def read_metrics_log(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a torn last line, from a run still writing, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_plots(report: dict, means: torch.Tensor | None, split, out_dir: Path,
                metrics_log: Path | None = None) -> list[Path]:
    """PNGs: KL per dimension, variance of E_q[z] per dimension, training curves (when the run's
    metrics.jsonl is given and exists), and a 2-D PCA projection of E_q[z] coloured by the split's form
    and dynasty columns (those it has)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lat, written = report["latent"], []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(out_dir / name)

    if lat.get("kl_per_dim"):
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar(range(len(lat["kl_per_dim"])), lat["kl_per_dim"])
        ax.set(xlabel="latent dimension", ylabel="KL (nats)", title=f"KL per dimension (total {lat['kl']:.2f})")
        save(fig, "kl_per_dim.png")
    if lat.get("variance_per_dim"):
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar(range(lat["latent_dim"]), lat["variance_per_dim"])
        ax.axhline(0.01, color="red", lw=1, label="0.01 (active-unit threshold)")
        ax.set(xlabel="latent dimension", ylabel="Var_x E_q[z_j]", yscale="log",
               title=f"active units: {lat['active_units']} / {lat['latent_dim']}")
        ax.legend(loc="lower right")
        save(fig, "active_units.png")
    if metrics_log is not None and Path(metrics_log).is_file():
        save(_training_curves(plt, read_metrics_log(metrics_log)), "training_curves.png")
    if means is not None and means.size(1) >= 2:
        labels = {c: split[c] for c in ("form", "dynasty") if c in split.column_names}
        save(_projection(plt, means, labels), "latent_projection.png")
    return written


def _training_curves(plt, records: list[dict]):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for split, style in (("train", "-"), ("validation", "o-")):
        rows = [r for r in records if r.get("split") == split]
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes[:2], ("rec", "kl")):
            ax.plot(steps, [r.get(key) for r in rows], style, label=split, ms=3)
        axes[2].plot(steps, [r.get("ppl") for r in rows], style, ms=3, label=f"{split} ELBO-PPL")
        if split == "train":
            twin = axes[1].twinx()
            twin.plot(steps, [r.get("beta") for r in rows], "k:", lw=1)
            twin.set_ylabel("β (dotted)")
    for ax, title in zip(axes, ("rec (nats / sentence)", "KL (nats / sentence)", "perplexity")):
        ax.set(xlabel="step", title=title)
        ax.legend()
    axes[2].set_yscale("log")
    fig.tight_layout()
    return fig


def _projection(plt, means: torch.Tensor, labels: dict[str, list[str]]):
    centred = means.double() - means.double().mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()  # (N, 2): the two principal axes
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(6 * max(1, len(labels)), 5), squeeze=False)
    for ax, (name, values) in zip(axes[0], labels.items() or [("", [""] * len(xy))]):
        for value in sorted(set(values)):
            pick = [i for i, v in enumerate(values) if v == value]
            ax.scatter(xy[pick, 0], xy[pick, 1], s=4, alpha=0.5, label=value or None)
        ax.set(xlabel="PC 1", ylabel="PC 2", title=f"E_q[z], coloured by {name}" if name else "E_q[z]")
        if name:
            ax.legend(markerscale=3)
    return fig


__all__ = ["format_report", "read_metrics_log", "write_plots"]
