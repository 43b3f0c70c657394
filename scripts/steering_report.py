"""How well steering through the latent works: samples steered toward each poet, era and theme, read by
independent text classifiers, beside unsteered samples at the same settings.

    python scripts/steering_report.py data/faithful --judge data/pretrained    # writes docs/results/steering/
    python scripts/steering_report.py data/faithful --samples 100 --only era   # a quick look

The text classifiers never see z: char 1-2-gram TF-IDF with logistic regression (scikit-learn, fitted by SGD), trained
on real training poems (a seeded 100,000 of them) with 10 % of each class held out as the control (their recall on
real poems). era:
tang/song; author: the 10 most prolific poets, 杜甫, 李白 and 王維, against everyone else; theme: one-vs-rest per
theme of textvae.attributes.THEMES, with balanced class weights, a poem assigned where p > 0.5. Each row samples
--samples poems (seeded) with its steering and reports the share the classifier assigns to the target, the rhyme
and tonal-pattern rates, the judge's nats per character (a model the sampled one never trained with), copies of
training poems, and the time against unsteered sampling. Restyle rows rewrite --restyle-poems test poems toward a
target. Keyword rows sample with each of KEYWORDS, with and without --meter --rhyme, beside unsteered samples of
the same settings. Writes steering.json and steering.png (target share, steered against unsteered, per row),
restyle.json and keywords.json under --out.
"""

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import font_manager
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier

from textvae import data
from textvae.atomic import check_can_write, write_text
from textvae.attributes import THEMES, themes_of
from textvae.evaluate import nats_per_character, text_report
from textvae.generate import KEEP_BONUS, Decoding, constraint_for, load_model, reconstruct, restyle, sample
from textvae.metrics import kept_in_place
from textvae.poetry import split_lines
from textvae.steering import RESTYLE_STRENGTH, Steering

FAMOUS = ("杜甫", "李白", "王維")
HELD_OUT = 0.10  # of each class's training poems, for the classifiers' control accuracy
OTHER_CAP = 40_000  # poems of the "other" author class the classifier trains on (a seeded subset)


def _split(labels: list, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices: HELD_OUT of each class held out (seeded)."""
    rng, train, held = np.random.default_rng(seed), [], []
    by_class = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class, key=str):
        index = rng.permutation(by_class[label])
        cut = max(1, round(HELD_OUT * len(index)))
        held += index[:cut].tolist()
        train += index[cut:].tolist()
    return np.array(sorted(train)), np.array(sorted(held))


class TextClassifier:
    """Char 1-2-gram TF-IDF and a logistic regression, with its accuracy per class on held-out real poems."""

    def __init__(self, texts: list[str], labels: list, balanced: bool = False):
        train, held = _split(labels)
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=3, sublinear_tf=True)
        x = self.vectorizer.fit_transform([texts[i] for i in train])
        self.model = SGDClassifier(loss="log_loss", alpha=2e-6, max_iter=20, tol=None, random_state=0,
                                   class_weight="balanced" if balanced else None)
        self.model.fit(x, [labels[i] for i in train])
        predicted = self.predict([texts[i] for i in held])
        truth = [labels[i] for i in held]
        self.recall = {str(c): float(np.mean([p == c for p, t in zip(predicted, truth) if t == c]))
                       for c in self.model.classes_}
        self.accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))

    def predict(self, texts: list[str]) -> list:
        return list(self.model.predict(self.vectorizer.transform(texts)))

    def probability(self, texts: list[str], label) -> np.ndarray:
        column = list(self.model.classes_).index(label)
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, column]


def classifiers(dataset, authors: tuple[str, ...], only: set[str], poems: int) -> dict:
    """The text classifiers: era and theme on a seeded `poems` of the training poems; author on every poem of
    the target poets and a seeded OTHER_CAP of everyone else's."""
    rng = np.random.default_rng(1)
    subset = dataset.select(sorted(rng.permutation(len(dataset))[:poems].tolist()))
    texts, progress = subset["text"], lambda what: print(f"training the {what} text classifier", flush=True)
    found = {}
    if "era" in only:
        progress("era")
        found["era"] = TextClassifier(texts, subset["dynasty"])
    if "author" in only:
        progress("author")
        poets = dataset["author"]
        others = [i for i, a in enumerate(poets) if a not in authors]
        keep = sorted([i for i, a in enumerate(poets) if a in authors]
                      + rng.choice(others, min(OTHER_CAP, len(others)), replace=False).tolist())
        chosen = dataset.select(keep)
        found["author"] = TextClassifier(chosen["text"], [a if a in authors else "other" for a in chosen["author"]])
    if "theme" in only:
        found["theme"] = {}
        themes = [themes_of(title, text) for title, text in zip(subset["title"], texts)]
        for theme in THEMES:
            progress(f"{theme} theme")
            found["theme"][theme] = TextClassifier(texts, [theme in t for t in themes], balanced=True)
    return found


def assigned(found: dict, kind: str, value: str, poems: list[str]) -> float:
    """The share of poems the text classifier assigns to the target."""
    if kind == "theme":
        return float(np.mean(found["theme"][value].predict(poems)))
    return float(np.mean([p == value for p in found[kind].predict(poems)]))


def control(found: dict, kind: str, value: str) -> float:
    """The classifier's recall of the target class on held-out real poems."""
    clf = found["theme"][value] if kind == "theme" else found[kind]
    return clf.recall["True" if kind == "theme" else value]


def steering_for(kind: str | None, value: str | None, strength: float) -> Steering:
    if kind is None:
        return Steering()
    return Steering(**{"like" if kind == "author" else kind: value}, strength=strength)


def row(model, judge, found, train_texts, train_lines, kind, value, args, decoding) -> tuple[dict, list[str]]:
    """One row's figures, and its poems."""
    steering = steering_for(kind, value, args.strength)
    started = time.perf_counter()
    poems = sample(model, args.samples, decoding=decoding, seed=args.seed, steering=steering)
    seconds = time.perf_counter() - started
    report = text_report(poems, train_texts, train_lines, poems=True)
    figures = dict(kind=kind or "unsteered", value=value, seconds=seconds, rhyme=report["rhyme"],
                   tonal=report["tonal"], copies=report["copied_texts"],
                   judge_nats=statistics.mean(nats_per_character(judge, poems)) if judge else None, examples=poems[:3])
    if kind:
        figures["assigned"] = assigned(found, kind, value, poems)
        figures["control"] = control(found, kind, value)
    return figures, poems


def show(rows: list[dict]) -> None:
    base = rows[0]
    print(f"unsteered: rhyme {base['rhyme']:.1%}, tonal {base['tonal']:.1%}, judge {base['judge_nats'] or 0:.3f} "
          f"nats/char, copies {base['copies']:.1%}, {base['seconds']:.1f} s")
    print(f"{'row':<22}{'target':>8}{'unsteered':>10}{'ratio':>7}{'control':>9}{'rhyme':>7}{'tonal':>7}"
          f"{'judge':>7}{'copies':>7}{'time':>6}")
    for r in rows[1:]:
        ratio = r["assigned"] / r["unsteered"] if r["unsteered"] else float("inf")
        print(f"{r['kind'] + ' ' + r['value']:<22}{r['assigned']:>8.1%}{r['unsteered']:>10.1%}{ratio:>7.1f}"
              f"{r['control']:>9.1%}{r['rhyme'] - base['rhyme']:>+7.1%}{r['tonal'] - base['tonal']:>+7.1%}"
              f"{(r['judge_nats'] or 0) - (base['judge_nats'] or 0):>+7.3f}{r['copies']:>7.1%}"
              f"{r['seconds'] / base['seconds']:>6.2f}")


def probability(found: dict, kind: str, value: str, poems: list[str]) -> np.ndarray:
    clf = found["theme"][value] if kind == "theme" else found[kind]
    return clf.probability(poems, True if kind == "theme" else value)


def restyle_row(model, found, test_poems: list[str], kind: str, value: str, strength: float) -> dict:
    """Restyle each test poem toward the target (greedy): characters kept in place, and the text classifier's
    mean probability of the target for the restyled poems against the reconstructions."""
    steering = steering_for(kind, value, strength)
    restyled = [restyle(model, poem, steering) for poem in test_poems]
    rebuilt = [out[0] for out in reconstruct(model, test_poems)]
    after, before = probability(found, kind, value, restyled), probability(found, kind, value, rebuilt)
    return dict(kind=kind, value=value, strength=strength, poems=len(test_poems),
                kept=statistics.mean(kept_in_place(p, r) for p, r in zip(test_poems, restyled)),
                target_probability=float(after.mean()), reconstruction_probability=float(before.mean()),
                ratio=float(after.mean() / before.mean()), examples=list(zip(test_poems, restyled))[:3])


KEYWORDS = ("月,江,酒", "春風,明月", "山,水,雲,鳥", "梅")


def keyword_rows(model, judge, args, decoding) -> list[dict]:
    """Samples with each keyword set, with and without meter and rhyme, beside unsteered samples at the same
    settings: the share holding every word within a line, rhyme and tonal rates, judge nats per character."""
    rows = []
    for meter in (False, True):
        options = dict(rhyme=True, meter=True) if meter else {}
        plain = sample(model, args.samples, decoding=decoding, seed=args.seed,
                       constraint=constraint_for(model.tokenizer, "drawn", **options))
        base = statistics.mean(nats_per_character(judge, plain)) if judge else None
        plain_report = text_report(plain, set(), set(), poems=True)
        unsteered = dict(rhyme=plain_report["rhyme"], tonal=plain_report["tonal"], judge_nats=base)
        for words in KEYWORDS:
            started = time.perf_counter()
            poems = sample(model, args.samples, decoding=decoding, seed=args.seed,
                           constraint=constraint_for(model.tokenizer, "auto", keywords=words, **options))
            seconds = time.perf_counter() - started
            report = text_report(poems, set(), set(), poems=True)
            held = statistics.mean(all(any(w in line for line in split_lines(p)) for w in words.split(","))
                                   for p in poems)
            rows.append(dict(keywords=words, meter_rhyme=meter, contain_all=held, rhyme=report["rhyme"],
                             tonal=report["tonal"], form=report["form"], seconds=seconds,
                             judge_nats=statistics.mean(nats_per_character(judge, poems)) if judge else None,
                             unsteered=unsteered, examples=poems[:3]))
            print(f"keywords {words} {'meter+rhyme ' if meter else ''}: all words {held:.1%}, rhyme "
                  f"{report['rhyme']:.1%} (unsteered {unsteered['rhyme']:.1%}), tonal {report['tonal']:.1%} "
                  f"({unsteered['tonal']:.1%}), judge {rows[-1]['judge_nats'] or 0:.3f} ({base or 0:.3f})", flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # the poets' names need a CJK font: an installed one (matplotlib does not list .ttc collections by itself)
    cjk = [path for path in font_manager.findSystemFonts() if "CJK" in path and "Regular" in path]
    families = ["DejaVu Sans"]
    if cjk:
        font_manager.fontManager.addfont(cjk[0])
        families.append(font_manager.FontProperties(fname=cjk[0]).get_name())
    plt.rcParams["font.family"] = families
    steered = [r for r in rows if r["kind"] != "unsteered"]
    labels = [f"{r['kind']}: {r['value']}" for r in steered]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(steered) + 1.5))
    y = np.arange(len(steered))
    ax.barh(y + 0.2, [r["assigned"] for r in steered], height=0.4, label="steered")
    ax.barh(y - 0.2, [r["unsteered"] for r in steered], height=0.4, label="unsteered")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("share of samples the text classifier assigns to the target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a poem model with attribute models (textvae fit-attributes)")
    parser.add_argument("--data", type=Path, default=Path("data/poems"))
    parser.add_argument("--judge", type=Path, help="a model the sampled one never trained with, to read the poems")
    parser.add_argument("--samples", type=int, default=1000, help="poems per row (default 1000)")
    parser.add_argument("--strength", type=float, default=Steering.strength, help="the tilt's strength s")
    parser.add_argument("--only", nargs="+", choices=("era", "author", "theme", "keywords"),
                        default=("era", "author", "theme", "keywords"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restyle-poems", type=int, default=100, help="test poems each restyle row rewrites")
    parser.add_argument("--restyle-strength", type=float, default=RESTYLE_STRENGTH, help="the restyle pull's strength")
    parser.add_argument("--text-poems", type=int, default=100_000,
                        help="real training poems the era and theme text classifiers learn from (a seeded subset)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/steering"))
    args = parser.parse_args()
    check_can_write(args.out, "--out")
    model = load_model(args.model)
    judge = load_model(args.judge) if args.judge else None
    dataset, _ = data.load(args.data)
    train = dataset["train"]
    counts = Counter(train["author"])
    authors = (*[a for a, _ in counts.most_common(10)], *[a for a in FAMOUS if a not in dict(counts.most_common(10))])
    found = classifiers(train, authors, set(args.only), args.text_poems)
    train_texts, train_lines = set(train["text"]), {x for t in train["text"] for x in split_lines(t)}
    decoding = Decoding(strategy="sample", temperature=0.8, top_p=0.9)
    wanted = [("era", v) for v in ("tang", "song") if "era" in args.only]
    wanted += [("author", a) for a in authors if "author" in args.only]
    wanted += [("theme", t) for t in THEMES if "theme" in args.only]
    base, base_poems = row(model, judge, found, train_texts, train_lines, None, None, args, decoding)
    rows = [base]
    for kind, value in wanted:
        print(f"sampling {kind} {value}", flush=True)
        figures, _ = row(model, judge, found, train_texts, train_lines, kind, value, args, decoding)
        figures["unsteered"] = assigned(found, kind, value, base_poems)
        rows.append(figures)
    show(rows)
    test = dataset["test"].shuffle(seed=args.seed).select(range(min(args.restyle_poems, len(dataset["test"]))))
    restyled = [restyle_row(model, found, test["text"], kind, value, args.restyle_strength)
                for kind, value in (("author", "李白"), ("author", "杜甫"), ("era", "song"), ("era", "tang"),
                                    ("theme", "autumn"), ("theme", "farewell")) if kind in args.only]
    for r in restyled:
        print(f"restyle {r['kind']} {r['value']}: kept {r['kept']:.1%}, target probability "
              f"{r['target_probability']:.3f} against {r['reconstruction_probability']:.3f} ({r['ratio']:.1f}x)")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = dict(model=str(args.model), judge=str(args.judge), samples=args.samples, seed=args.seed)
    if len(rows) > 1:
        report = settings | dict(strength=args.strength, rows=rows)
        write_text(args.out / "steering.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        plot(rows, args.out / "steering.png")
        report = dict(settings, poems=len(test), strength=args.restyle_strength, keep=KEEP_BONUS, restyle=restyled)
        write_text(args.out / "restyle.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    if "keywords" in args.only:
        report = settings | dict(keywords=keyword_rows(model, judge, args, decoding))
        write_text(args.out / "keywords.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
