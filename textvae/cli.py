"""The `textvae` command: argparse subcommands, each a short function that wires library calls."""

import argparse
import json
import sys
import time
from pathlib import Path

from textvae import corpus, data
from textvae.errors import TextVAEError


def _print_counts(parsed: corpus.Corpus, table: dict[str, dict[str, int]] | None) -> None:
    if table:
        forms = sorted({f for row in table.values() for f in row})
        print(f"{'':8}" + "".join(f"{f:>10}" for f in forms) + f"{'total':>10}")
        for row, counts in table.items():
            print(f"{row:8}" + "".join(f"{counts.get(f, 0):>10,}" for f in forms) + f"{sum(counts.values()):>10,}")
    print(f"kept {len(parsed.poems):,} from {parsed.files} files; dropped:")
    for reason, n in parsed.dropped.most_common():
        print(f"  {n:>9,}  {reason}")


def _finish_prepare(parsed: corpus.Corpus, kind: str, args, manifest: dict, started: float) -> None:
    table = data.count_table(parsed.poems, "dynasty", "form") if kind == "char" else None
    _print_counts(parsed, table)
    dataset, tokenizer = data.build(parsed.poems, kind=kind, vocab_size=args.vocab_size)
    out_dir = Path(args.out) / args.name
    manifest |= dict(kept=len(parsed.poems), dropped=dict(parsed.dropped), counts=table,
                     splits={k: len(v) for k, v in dataset.items()}, vocab_size=tokenizer.vocab_size)
    data.save(dataset, tokenizer, manifest, out_dir)
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in dataset.items())
    print(f"wrote {out_dir}: {sizes}; tokenizer of {tokenizer.vocab_size:,} pieces "
          f"({time.perf_counter() - started:.0f} s)")


def cmd_prepare_poems(args) -> None:
    started = time.perf_counter()
    data.check_writable(Path(args.out) / args.name)
    source = Path(args.source) if args.source else corpus.fetch_tarball(args.cache_dir)
    if source.is_file():
        corpus.verify_tarball(source)
    convert = None
    if args.simplified:
        import opencc  # imported only when asked for: its dictionaries take a moment to load
        convert = opencc.OpenCC("t2s").convert
    print(f"reading {source}")
    parsed = corpus.parse(source, to_simplified=convert)
    manifest = dict(corpus="chinese-poetry@2.0.1", source=str(source), simplified=args.simplified)
    _finish_prepare(parsed, "char", args, manifest, started)


def cmd_prepare_text(args) -> None:
    started = time.perf_counter()
    data.check_writable(Path(args.out) / args.name)
    parsed = corpus.parse_text_files(args.files)
    manifest = dict(corpus="text", files=[str(f) for f in args.files])
    _finish_prepare(parsed, args.tokenizer, args, manifest, started)


def _add_prepare(sub) -> None:
    prepare = sub.add_parser("prepare", help="build a dataset and tokenizer under data/<name>/")
    kinds = prepare.add_subparsers(dest="kind", required=True)
    poems = kinds.add_parser("poems", help="the chinese-poetry corpus: regular 5/7-character quatrains and regulated verse")
    poems.add_argument("--source", help="the chinese-poetry tarball, its extracted folder, or a repository clone "
                                        "(default: `npm pack chinese-poetry@2.0.1` into the cache)")
    poems.add_argument("--cache-dir", help="where the downloaded tarball is kept (default ~/.cache/textvae)")
    poems.add_argument("--simplified", action="store_true", help="convert to simplified characters (OpenCC t2s)")
    poems.add_argument("--name", default="poems", help="dataset name: written to OUT/NAME")
    poems.add_argument("--vocab-size", type=int, default=8000, help="upper bound on the character vocabulary")
    poems.set_defaults(func=cmd_prepare_poems)
    text = kinds.add_parser("text", help="any one-sentence-per-line UTF-8 corpus")
    text.add_argument("files", nargs="+", type=Path)
    text.add_argument("--name", required=True, help="dataset name: written to OUT/NAME")
    text.add_argument("--tokenizer", choices=["unigram", "char"], default="unigram")
    text.add_argument("--vocab-size", type=int, default=8000, help="upper bound on the vocabulary")
    text.set_defaults(func=cmd_prepare_text)
    for p in (poems, text):
        p.add_argument("--out", default="data", help="parent folder of the dataset (default data/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textvae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TextVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
