"""How a poem model edits: interpolations between test poems and variations of them, scored with character edit
distances and read by a judge model.

    python scripts/editing_report.py data/faithful --judge data/pretrained   # writes data/faithful/editing.json
    python scripts/editing_report.py runs/smooth/last --path prior --pairs 20 --out /tmp/editing.json

Interpolation (--pairs seeded pairs of test poems, --steps points each, greedy, walked as --path). For each path:
the ends' distance (the edit distance between its first and last points, the two reconstructions), the path's
length (the sum of its moves) and smoothness (ends' distance / length: 1 for a path that jumps straight from one
end to the other, so the largest move is reported too, as a share of the ends' distance), its distinct points,
its share of regular poems, and with --judge the judge's -ELBO per character of its middle points against its two
ends. The summary gives the means, the share of paths whose largest move is at most 35 % of the ends' distance, and
the middle points' judge nats over the ends', and the same figures for the pairs whose ends share a form: between
a four-line and an eight-line poem no path of regular poems is gradual, since the step that adds four lines adds
at least 24 characters, more than 35 % of any two such poems' distance (at most 64). The judge must be a model the
scored one never trained with.
Variation (--poems test poems, --variations draws z ~ q(z|x) each, pulled towards the mode by --spread as
`textvae vary --spread` does, greedy): the share of the input's characters a variation keeps in place, and the
share of variations that are the input itself. --precision is the decoding's: bf16 rounding depends on how many
texts decode together, so a near tie can go one way in a path and the other in a reconstruction.
"""

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from textvae import data
from textvae.atomic import check_can_write, write_keeping_previous
from textvae.errors import TextVAEError
from textvae.evaluate import nats_per_character
from textvae.generate import (DEFAULT_PATH, DEFAULT_SPREAD, PATHS, Decoding, check_spread, interpolate, load_model,
                              reconstruct, vary, walked_prior)
from textvae.metrics import edit_distance, kept_in_place
from textvae.precision import PRECISIONS
from textvae.poetry import form_of, split_lines


SMOOTH_MOVE = 0.35  # a path is gradual when no move changes more than this share of the ends' distance


def path_figures(path: list[str], ends: list[str]) -> dict:
    """The figures of one path, its points as text."""
    moves = [edit_distance(x, y) for x, y in zip(path, path[1:])]
    span = edit_distance(path[0], path[-1])
    forms = [form_of(split_lines(p)) for p in (path[0], path[-1])]
    return dict(points=path, ends_are_reconstructions=path[0] == ends[0] and path[-1] == ends[1],
                same_form=forms[0] is not None and forms[0] == forms[1],
                ends_distance=span, length=sum(moves), smoothness=span / sum(moves) if sum(moves) else 1.0,
                largest_move=max(moves), largest_share=max(moves) / span if span else 0.0,
                distinct=len(set(path)),
                regular=statistics.mean(form_of(split_lines(p)) is not None for p in path))


def judged(record: dict, judge) -> dict:
    """The judge's nats per character of a path's middle points and of its ends."""
    scores = nats_per_character(judge, record["points"])
    return dict(record, middle_nats=statistics.mean(scores[1:-1]),
                ends_nats=statistics.mean([scores[0], scores[-1]]))


def interpolation_figures(model, pairs: list[tuple[str, str]], steps: int, decoding: Decoding, path: str,
                          judge) -> dict:
    records = []
    for a, b in tqdm(pairs, desc="interpolations", unit="pair"):
        points = interpolate(model, a, b, steps=steps, decoding=decoding, path=path)
        ends = [texts[0] for texts in reconstruct(model, [a, b], decoding=decoding)]
        record = path_figures(points, ends)
        records.append(judged(record, judge) if judge is not None and steps > 2 else record)
    mean = lambda key: statistics.mean(r[key] for r in records)  # noqa: E731
    summary = dict(pairs=len(pairs), steps=steps, path=path,
                   ends_are_reconstructions=mean("ends_are_reconstructions"), regular=mean("regular"),
                   ends_distance=mean("ends_distance"), length=mean("length"), smoothness=mean("smoothness"),
                   largest_move=mean("largest_move"), largest_share=mean("largest_share"),
                   gradual_paths=statistics.mean(r["largest_share"] <= SMOOTH_MOVE for r in records),
                   distinct=mean("distinct"), input_distance=statistics.mean(edit_distance(a, b) for a, b in pairs))
    same = [r for r in records if r["same_form"]]
    if same:
        summary |= dict(same_form_pairs=len(same),
                        same_form_gradual_paths=statistics.mean(r["largest_share"] <= SMOOTH_MOVE for r in same),
                        same_form_largest_share=statistics.mean(r["largest_share"] for r in same),
                        same_form_distinct=statistics.mean(r["distinct"] for r in same))
    if "middle_nats" in records[0]:
        summary |= dict(middle_nats=mean("middle_nats"), ends_nats=mean("ends_nats"),
                        middle_over_ends=mean("middle_nats") / mean("ends_nats"))
    return dict(summary, paths=records)


def variation_figures(model, poems: list[str], variations: int, seed: int, spread: float,
                      decoding: Decoding) -> dict:
    kept, copies = [], 0
    for i, poem in enumerate(tqdm(poems, desc="variations", unit="poem")):
        for text in vary(model, poem, variations, seed=seed + i, spread=spread, decoding=decoding):
            kept.append(kept_in_place(poem, text))
            copies += text == poem
    return dict(poems=len(poems), variations=variations, spread=spread, kept_in_place=statistics.mean(kept),
                kept_at_least_half=sum(k >= 0.5 for k in kept) / len(kept), copies=copies / len(kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="the prepared dataset")
    parser.add_argument("--pairs", type=int, default=100, help="interpolated pairs of test poems (default 100)")
    parser.add_argument("--steps", type=int, default=7, help="points on each path, ends included (default 7)")
    parser.add_argument("--path", choices=PATHS, default=DEFAULT_PATH,
                        help=f"how paths walk, as `textvae interpolate --path` (default {DEFAULT_PATH})")
    parser.add_argument("--judge", type=Path, help="a model that reads the paths' points (one the scored model never "
                        "trained with, e.g. data/pretrained for data/faithful)")
    parser.add_argument("--poems", type=int, default=100, help="test poems varied (default 100)")
    parser.add_argument("--variations", type=int, default=5, help="variations of each (default 5)")
    parser.add_argument("--spread", type=float, default=DEFAULT_SPREAD,
                        help=f"vary's spread (default {DEFAULT_SPREAD}, as `textvae vary`; 1 draws from q)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the decoding's precision (default auto: bf16 where the CPU has it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="the JSON report (default MODEL_DIR/editing.json); an existing "
                        "one is kept, renamed NAME.<its time>.json")
    args = parser.parse_args()
    out = args.out or args.model_dir / "editing.json"
    try:
        if min(args.pairs, args.poems, args.variations) < 1 or args.steps < 2:
            raise TextVAEError("--pairs, --poems and --variations must be >= 1 and --steps >= 2")
        check_spread(args.spread)
        decoding = Decoding(precision=args.precision)
        check_can_write(out.parent, "the report")
        model = load_model(args.model_dir)
        judge = None if args.judge is None else load_model(args.judge)
        if args.path == "prior":
            walked_prior(model)
        texts = data.load(args.data)[0]["test"]["text"]
    except TextVAEError as error:
        sys.exit(f"error: {error}")
    rng = random.Random(args.seed)
    chosen = rng.sample(texts, 2 * args.pairs)
    pairs = list(zip(chosen[::2], chosen[1::2]))
    report = dict(model=str(args.model_dir), data=str(args.data), seed=args.seed, precision=args.precision,
                  judge=None if args.judge is None else str(args.judge),
                  interpolation=interpolation_figures(model, pairs, args.steps, decoding, args.path, judge),
                  variation=variation_figures(model, rng.sample(texts, args.poems), args.variations, args.seed,
                                              args.spread, decoding))
    write_keeping_previous(out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    shown = dict(report, interpolation={k: v for k, v in report["interpolation"].items() if k != "paths"})
    print(json.dumps(shown, ensure_ascii=False, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
