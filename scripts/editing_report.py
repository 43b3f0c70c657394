"""How faithfully a poem model edits (issue 2.4): interpolations between test poems and variations of them,
scored with character edit distances.

    python scripts/editing_report.py data/pretrained                    # writes data/pretrained/editing.json
    python scripts/editing_report.py runs/rate/target-80/best --pairs 20 --out /tmp/editing.json
    python scripts/editing_report.py data/faithful --spread 0.5 --precision fp32     # as its model card reports

Interpolation (--pairs seeded pairs of test poems, --steps points each, greedy): whether the first and last
steps are exactly the reconstructions of A and B, the share of steps that are regular poems, the mean edit
distance between neighbouring steps against the distance from the reconstruction of A to that of B, and the
largest single move. Variation (--poems test poems, --variations draws z ~ q(z|x) each, pulled towards the mode
by --spread as `textvae vary --spread` does, greedy): the share of the input's characters a variation keeps in
place, and the share of variations that are the input itself. --precision is the decoding's: bf16 rounding depends on
how many texts decode together, so a near tie can go one way in a path and the other in a reconstruction.
"""

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from textvae import data
from textvae.atomic import check_can_write, keep_previous, write_text
from textvae.errors import TextVAEError
from textvae.generate import Decoding, check_spread, interpolate, load_model, reconstruct, vary
from textvae.metrics import edit_distance, kept_in_place
from textvae.precision import PRECISIONS
from textvae.poetry import form_of, split_lines


def interpolation_figures(model, pairs: list[tuple[str, str]], steps: int, decoding: Decoding) -> dict:
    exact, formed, neighbour, span, largest = [], [], [], [], []
    for a, b in tqdm(pairs, desc="interpolations", unit="pair"):
        path = interpolate(model, a, b, steps=steps, decoding=decoding)
        ends = [texts[0] for texts in reconstruct(model, [a, b], decoding=decoding)]
        exact.append(path[0] == ends[0] and path[-1] == ends[1])
        formed += [form_of(split_lines(p)) is not None for p in path]
        moves = [edit_distance(x, y) for x, y in zip(path, path[1:])]
        neighbour.append(statistics.mean(moves))
        largest.append(max(moves))
        span.append(edit_distance(ends[0], ends[1]))
    return dict(pairs=len(pairs), steps=steps, ends_are_reconstructions=sum(exact) / len(exact),
                well_formed=sum(formed) / len(formed), neighbour_distance=statistics.mean(neighbour),
                reconstruction_distance=statistics.mean(span), largest_move=statistics.mean(largest),
                input_distance=statistics.mean(edit_distance(a, b) for a, b in pairs))


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
    parser.add_argument("--poems", type=int, default=100, help="test poems varied (default 100)")
    parser.add_argument("--variations", type=int, default=5, help="variations of each (default 5)")
    parser.add_argument("--spread", type=float, default=1.0, help="vary's spread (default 1: draws from q)")
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
        texts = data.load(args.data)[0]["test"]["text"]
    except TextVAEError as error:
        sys.exit(f"error: {error}")
    rng = random.Random(args.seed)
    chosen = rng.sample(texts, 2 * args.pairs)
    pairs = list(zip(chosen[::2], chosen[1::2]))
    report = dict(model=str(args.model_dir), data=str(args.data), seed=args.seed, precision=args.precision,
                  interpolation=interpolation_figures(model, pairs, args.steps, decoding),
                  variation=variation_figures(model, rng.sample(texts, args.poems), args.variations, args.seed,
                                              args.spread, decoding))
    keep_previous(out)
    write_text(out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(report, ensure_ascii=False, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
