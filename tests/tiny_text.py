"""A tiny text corpus prepared, and a tiny Gaussian VAE trained on it, through the CLI as a user would: what the
bad-input and locking tests share."""

from pathlib import Path

from textvae.cli import main

# a tiny Gaussian VAE with the full softmax (the default preset's adaptive bands need a larger vocabulary)
TINY = ["--embed-dim", "16", "--encoder-hidden", "16", "--decoder-hidden", "32", "--latent-dim", "4",
        "--max-len", "40", "--posterior", "gaussian", "--output-layer", "full"]
QUICK = ["--max-steps", "4", "--batch-size", "8", "--eval-every", "4", "--warmup-steps", "1", "--precision", "fp32"]


def prepare_corpus(root: Path, lines: list[str]) -> Path:
    """root/corpus.txt holding the lines, prepared as root/tiny with a character tokenizer."""
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    main(["prepare", "text", str(root / "corpus.txt"), "--out", str(root), "--name", "tiny", "--tokenizer", "char",
          "--vocab-size", "300"])
    return root / "tiny"


def train_model(data_dir: Path, runs: Path) -> Path:
    """The best/ folder of a TINY model trained QUICK-ly on the dataset, in runs/run."""
    main(["train", "--data-dir", str(data_dir), "--run-dir", str(runs / "run"), *TINY, *QUICK])
    return runs / "run" / "best"
