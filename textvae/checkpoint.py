"""Saved models and runs on disk: their files, the format of their settings, checksums and trainer state.

A saved model is a folder (the HF convention): config.json, model.safetensors, tokenizer.model, and the learned
priors (textvae.priors) and attribute models (textvae.attributes) fitted to it. config.json holds the model's
settings as flat fields, the `format` they are written in, the sha256 of every other file and the default learned
prior; loading refuses a file whose checksum does not match. A run folder's run_config.json holds the model's and
the trainer's settings, and its last/ checkpoint adds trainer_state.pt. This is the one place that reads settings
written by older versions (`model_fields`). Nothing here knows the model class: callers pass the module and its
parts.
"""

import copy
import hashlib
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from textvae import attributes, priors
from textvae.atomic import atomic_directory, read_consistently, updated_directory, write_text
from textvae.errors import TextVAEError
from textvae.locking import writer_lock
from textvae.shipped import resolve
from textvae.tokenizer import Tokenizer, load_tokenizer

# 1: every knob of every kind, `dropout` for encoder and decoder and `encoder_dropout` -1 for "the same";
# 2: the knobs of the chosen kinds only, `encoder_dropout` and `decoder_dropout`, and this number
FORMAT = 2

# the floating types a model's weights may be stored in (`textvae export --dtype`)
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# the files config.json checksums
CHECKSUMMED = ("model.safetensors", "tokenizer.model", *priors.ALL_FILES, priors.LEGACY[0], *attributes.FILES)

# format 1: each kind's own knob, the family that picks the kind, the kinds that read it, and its default
_FORMAT_1_KNOBS = {"kernel_size": ("encoder", ("gcnn",), 3), "gamma": ("posterior", ("bn",), 0.6),
                   "tau": ("posterior", ("bn-tau",), 0.5), "kappa": ("posterior", ("vmf",), 50.0),
                   "num_heads": ("decoder", ("transformer",), 4), "segment_marks": ("decoder", ("gru", "lstm"), ""),
                   "adaptive_cutoffs": ("output_layer", ("adaptive",), [1000, 3000]),
                   "adaptive_div": ("output_layer", ("adaptive",), 4)}
_FORMAT_1_KINDS = {"encoder": "gru", "posterior": "gaussian", "decoder": "gru", "output_layer": "full"}


def _from_format_1(fields: dict) -> dict:
    """Format 1 wrote every kind's knobs: those of kinds the model does not use are dropped where they hold the
    default, which is what a saved file carries; any other value was set by hand for the wrong kind, and is
    kept for VAEConfig to refuse."""
    fields = dict(fields)
    dropout, encoder_dropout = fields.pop("dropout", 0.0), fields.pop("encoder_dropout", -1.0)
    fields["decoder_dropout"] = dropout
    fields["encoder_dropout"] = dropout if encoder_dropout == -1 else encoder_dropout
    for knob, (family, kinds, default) in _FORMAT_1_KNOBS.items():
        if fields.get(family, _FORMAT_1_KINDS[family]) not in kinds and _same(fields.get(knob, default), default):
            fields.pop(knob, None)
    return fields


def _same(value, default) -> bool:
    return list(value) == default if isinstance(value, list | tuple) else value == default


def model_fields(fields: dict, version, where: str) -> dict:
    """A model's settings as written in format `version` (None: format 1, which had no number), as today's
    flat VAEConfig fields."""
    if version is None:
        return _from_format_1(fields)
    if version != FORMAT:
        raise TextVAEError(f"{where} is written in settings format {version!r}, which this textvae does not know "
                           f"(it reads formats 1 to {FORMAT}): update textvae")
    return fields

# -----------------------------------------------------------------------------
# run settings: run_config.json and the preset files, {"model": {...}, "train": {...}}


def read_run_config(path: str | Path, extra: tuple[str, ...] = ()) -> dict:
    """{"model": flat VAEConfig fields, "train": TrainConfig fields} of a run_config.json (or a preset file,
    whose `extra` keys such as its description come back as they are)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise TextVAEError(f"config file {path} does not exist") from e
    except IsADirectoryError as e:
        raise TextVAEError(f"config file {path} is a folder: give its run_config.json") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextVAEError(f"config file {path} is not valid JSON ({e})") from e
    except OSError as e:
        raise TextVAEError(f"cannot read config file {path}: {e.strerror or e}") from e
    if not isinstance(config, dict):
        raise TextVAEError(f"config file {path} must hold a JSON object {{'model': {{...}}, 'train': {{...}}}}")
    version = config.pop("format", None)
    sections = {key: config.pop(key) for key in extra if key in config}
    if not all(isinstance(v, dict) for v in config.values()):
        raise TextVAEError(f"config file {path} must hold a JSON object {{'model': {{...}}, 'train': {{...}}}}")
    unknown = set(config) - {"model", "train"}
    if unknown:
        raise TextVAEError(f"config file {path}: unknown sections {sorted(unknown)} (expected 'model' and 'train')")
    model = model_fields(config.get("model", {}), version, str(path))
    return sections | {"model": model, "train": config.get("train", {})}


def run_config_text(model: dict, train: dict) -> str:
    return json.dumps({"format": FORMAT, "model": model, "train": train}, indent=2, ensure_ascii=False) + "\n"

# -----------------------------------------------------------------------------
# a saved model's folder


class SavedConfig(NamedTuple):
    fields: dict  # flat VAEConfig fields in today's format
    checksums: dict | None  # sha256 of the files saved beside it (None: saved before they were recorded)
    default_prior: str | None  # the learned prior `--prior auto` uses (None: the standard one)


def is_saved_model(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_config(path: Path) -> SavedConfig:
    """A saved model's config.json."""
    try:
        fields = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextVAEError(f"{path} is corrupt ({e}).") from e
    if not isinstance(fields, dict):
        raise TextVAEError(f"{path} is corrupt: it holds no JSON object.")
    checksums, default_prior = fields.pop("checksums", None), fields.pop("prior", None)
    if not isinstance(checksums, dict | None):
        raise TextVAEError(f"{path} is corrupt: its checksums should map file names to sha256 digests, not "
                           f"{checksums!r}.")
    if default_prior is not None and default_prior not in priors.KINDS:
        raise TextVAEError(f"{path} is corrupt: its prior should be one of {', '.join(priors.KINDS)}, not "
                           f"{default_prior!r}.")
    version = fields.pop("format", None)
    return SavedConfig(model_fields(fields, version, str(path)), checksums, default_prior)


def verify_files(directory: Path, checksums: dict | None) -> None:
    """Refuse a file whose sha256 is not the one recorded at save time: a bit flipped in the weights, or a
    tokenizer.model from another model of the same vocabulary size, would load and decode gibberish."""
    unverified = []
    for name in CHECKSUMMED:
        path = directory / name
        if not path.is_file():
            if name in (checksums or {}):
                raise TextVAEError(f"{path} is missing: config.json records it as part of the model. Copy the "
                                   "whole model folder again from where it was saved.")
            continue
        if checksums is not None and name not in checksums:
            raise TextVAEError(f"{path} was not saved with this model (config.json records no checksum for it): "
                               "remove it, or fit it here with `textvae fit-prior`")
        if name not in (checksums or {}):
            unverified.append(name)
        elif sha256(path) != checksums[name]:
            raise TextVAEError(f"{path} does not match the checksum recorded when the model was saved: it is "
                               "corrupt, or was copied from another model. Copy the whole model folder again "
                               "from where it was saved.")
    if unverified:
        warnings.warn(f"{directory}: {' and '.join(unverified)} could not be verified: config.json records no "
                      "checksum (the model was saved before textvae recorded them); save it again to add them")


class SavedModel(NamedTuple):
    directory: Path
    config: SavedConfig
    tokenizer: Tokenizer | None


def open_model(directory: str | Path) -> SavedModel:
    """The checked files of the model saved in `directory`, or of a shipped model by its short name."""
    directory = resolve(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise TextVAEError(f"{directory} is not a saved textvae model: {name} is missing "
                               "(expected config.json, model.safetensors, tokenizer.model).")
    config = read_config(directory / "config.json")
    tokenizer_path = directory / "tokenizer.model"
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path.exists() else None
    verify_files(directory, config.checksums)  # after load_tokenizer: a file that is no tokenizer is named so
    return SavedModel(directory, config, tokenizer)


def read_whole(directory: str | Path, read):
    """read(folder) of a saved model's folder (or a shipped model's, by its short name), again where a writer swapped
    the folder meanwhile (atomic.read_consistently): what it returns comes from one version of the folder."""
    folder = resolve(directory)
    return read_consistently(folder, lambda: read(folder))


def load_weights(module: nn.Module, directory: Path, device) -> None:
    """Load model.safetensors into `module`, which was built from config.json. A file safetensors cannot read is
    corrupt; a readable one whose tensors differ from the module's was saved with another config.json."""
    path = directory / "model.safetensors"
    try:
        with safe_open(path, framework="pt") as f:  # the header alone: names and shapes, no tensor is read
            shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
        check_weights_fit(module, shapes, directory)
        load_model(module, str(path), device=str(device))
    except (SafetensorError, RuntimeError, OSError) as e:  # the names and shapes fit: the file is damaged
        raise TextVAEError(f"{path} is corrupt ({e}). Copy the whole model folder again from where it was "
                           "saved.") from e


def check_weights_fit(module: nn.Module, shapes: dict[str, list[int]], directory: Path) -> None:
    """Refuse weights whose names or shapes differ from the module's: config.json (edited, or copied from another
    model) describes another architecture than model.safetensors holds. The checksums cannot tell, as config.json
    records those of the other files only."""
    expected = module.state_dict()
    saved = {t.data_ptr() for name, t in expected.items() if name in shapes}  # a tied weight is saved once
    missing = [name for name, t in expected.items() if name not in shapes and t.data_ptr() not in saved]
    unexpected = [name for name in shapes if name not in expected]
    resized = [f"{name} {shapes[name]} vs {list(t.shape)}" for name, t in expected.items()
               if name in shapes and shapes[name] != list(t.shape)]
    found = [f"{what} {_first(names)}" for what, names in (("missing from the weights:", missing),
                                                           ("not in config.json's model:", unexpected),
                                                           ("shapes in the file vs config.json:", resized)) if names]
    if found:
        raise TextVAEError(f"{directory}: config.json and model.safetensors describe different models "
                           f"({'; '.join(found)}): restore the config.json saved with these weights, or copy the "
                           "whole model folder again from where it was saved.")


def _first(names: list[str], n: int = 2) -> str:
    """The first n names, and how many more: enough to see which part differs on one line."""
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_priors(directory: Path, latent_dim: int, default_prior: str | None) -> tuple[dict, str | None]:
    """The learned priors saved in `directory` by kind, and the kind `--prior auto` uses."""
    learned = priors.load(directory, latent_dim)
    default_prior = default_prior if default_prior is not None else next(iter(learned), None)
    if default_prior is not None and default_prior not in learned:
        raise TextVAEError(f"{directory}/config.json names a {default_prior} prior, but "
                           f"{priors.files(default_prior)[0]} is missing")
    return learned, default_prior


def write_config(directory: Path, fields: dict, default_prior: str | None) -> None:
    """config.json, last: it records the sha256 of the files already written beside it."""
    checksums = {name: sha256(directory / name) for name in CHECKSUMMED if (directory / name).is_file()}
    extra = {} if default_prior is None else {"prior": default_prior}
    text = json.dumps({"format": FORMAT, **fields, "checksums": checksums, **extra}, indent=2) + "\n"
    write_text(directory / "config.json", text)


def write_model(directory: Path, module: nn.Module, fields: dict, tokenizer: Tokenizer | None, learned: dict,
                default_prior: str | None, attribute_models=None, dtype: torch.dtype | None = None) -> None:
    """A saved model's files, written into an existing folder (the caller makes it atomic). `dtype` stores the
    weights in another floating type (fp16 halves the file); loading casts them back to the module's."""
    # on CUDA, cuDNN packs a GRU's weights into one shared buffer, which safetensors refuses to save;
    # on the CPU each weight has its own storage
    on_cpu = module
    if dtype is not None or next(module.parameters()).device.type != "cpu":
        on_cpu = copy.deepcopy(module).to(device="cpu", dtype=dtype)
    save_model(on_cpu, str(directory / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save(directory / "tokenizer.model")
    for prior in learned.values():
        priors.save(prior, directory)
    if attribute_models is not None:
        attributes.save(attribute_models, directory)
    write_config(directory, fields, default_prior)


def save_model_folder(directory: str | Path, *args, **kwargs) -> None:
    """`write_model` into a temporary folder that then replaces `directory` whole."""
    with atomic_directory(directory) as tmp:
        write_model(tmp, *args, **kwargs)


def add_files(directory: str | Path, write, names: tuple[str, ...], fields: dict, default_prior: str | None,
              stale: tuple[str, ...] = ()) -> None:
    """Add (or replace) the files `names`, which `write(folder)` writes, in a saved model's folder, and delete the
    `stale` ones, leaving its other files as they are: the new folder is built whole beside it (the files it keeps
    hard-linked) with its config.json, then swapped in, so that readers find the old folder or the new one and an
    interrupted fit (or a full disk) leaves it as it was. One process at a time writes it."""
    leave_out = {*names, *stale, "config.json"}
    with writer_lock(directory), updated_directory(directory, leave_out) as tmp:
        write(tmp)
        write_config(tmp, fields, default_prior)


def add_prior(directory: str | Path, prior, kind: str, fields: dict, default_prior: str | None) -> None:
    """Add (or replace) one learned prior in a saved model's folder (a lone legacy mixture is removed) and make
    `default_prior` the kind `--prior auto` uses."""
    add_files(directory, lambda folder: priors.save(prior, folder), priors.files(kind), fields, default_prior,
              stale=priors.LEGACY if kind == "gmm" else ())


def add_attributes(directory: str | Path, models, fields: dict, default_prior: str | None) -> None:
    """Add (or replace) the attribute models (textvae.attributes) in a saved model's folder."""
    add_files(directory, lambda folder: attributes.save(models, folder), attributes.FILES, fields, default_prior)


def load_attributes(directory: Path):
    """The attribute models saved beside a model, or None."""
    return attributes.load(directory)

# -----------------------------------------------------------------------------
# trainer state: what a resume needs besides the weights


def write_trainer_state(directory: Path, state: dict) -> None:
    # through a Python file: given a path, torch reports a full disk as "unexpected pos", without its errno
    with open(directory / "trainer_state.pt", "wb") as f:
        torch.save(state, f)


def read_trainer_state(directory: Path, device) -> dict:
    """A run's optimizer state, step and counters; `train_seconds` is 0 in checkpoints written before it was kept."""
    path = directory / "trainer_state.pt"
    if not path.is_file():
        raise TextVAEError(f"cannot resume: {directory} has no checkpoint (trainer_state.pt); start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise TextVAEError(f"{path} is corrupt ({e}); start a new run") from e
    return {"train_seconds": 0.0} | state
