"""The text VAE: encoder -> posterior head q(z|x) -> autoregressive decoder p(x|z), and its config.

Shapes: B batch, T tokens (BOS + text + EOS, padded on the right), V vocab, H encoder output, D latent.
`forward(ids, mask)` returns per-example reconstruction NLL `rec` (summed over predicted tokens, EOS
included, BOS excluded) and `kl` = KL(q(z|x) || p(z)), so the ELBO of a sentence is -(rec + kl).
posterior="none" drops encoder and head: the same decoder as a plain language model (the baseline).
A saved model is a directory: config.json + model.safetensors + tokenizer.model (HF convention);
config.json records the sha256 of the other two, and loading refuses a file that does not match.

References: Bowman et al. 2016 (the text VAE); Kingma & Welling 2014 (reparameterisation).
"""

import copy
import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch.distributions import Distribution, kl_divergence

from textvae import priors
from textvae.atomic import atomic_directory, set_default_modes, write_text
from textvae.decoders import DECODERS, OUTPUT_LAYERS
from textvae.encoders import ENCODERS
from textvae.errors import TextVAEError
from textvae.fields import check_choice, check_float, check_int, setting
from textvae.posteriors import POSTERIORS
from textvae.shipped import resolve
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, load_tokenizer


@dataclass(frozen=True)
class VAEConfig:
    vocab_size: int = setting(8000, "tokenizer pieces (set from the tokenizer)")
    encoder: str = setting("gru", "gru | lstm | gcnn")
    posterior: str = setting("gaussian", "gaussian | bn | bn-tau | vmf | none (no latent: a plain language model)")
    decoder: str = setting("gru", "gru | lstm | transformer")
    embed_dim: int = setting(256, "token embedding size (encoder; GRU/LSTM decoder)")
    encoder_hidden: int = setting(256, "GRU/LSTM state per direction / GCNN channels")
    encoder_layers: int = setting(1, "GRU/LSTM layers / GCNN gated conv layers")
    kernel_size: int = setting(3, "GCNN convolution width")
    decoder_hidden: int = setting(512, "GRU/LSTM decoder state / Transformer width")
    decoder_layers: int = setting(1, "GRU/LSTM or Transformer layers")
    num_heads: int = setting(4, "Transformer attention heads")
    latent_dim: int = setting(32, "D")
    kappa: float = setting(50.0, "vMF concentration (fixed)")
    gamma: float = setting(0.6, "BN-VAE: fixed scale of the batch-normalised mean")
    tau: float = setting(0.5, "τ-scaled BN: share of the prior variance carried by the mean")
    dropout: float = setting(0.0, "dropout inside encoder and decoder")
    encoder_dropout: float = setting(-1.0, "dropout inside the encoder instead (-1: the same as dropout; public "
                                           "sentence-VAE code for PTB uses none)")
    word_dropout: float = setting(0.0, "decoder inputs replaced by unk with this probability while training")
    max_len: int = setting(128, "longest token sequence the model reads and writes (BOS + text + EOS)")
    output_layer: str = setting("full", "full (one V-way softmax) | adaptive (Grave et al. 2017: exact, fewer FLOPs) "
                                        "| tied (full, sharing the decoder's input embedding: GRU/LSTM need "
                                        "embed_dim == decoder_hidden; the Transformer's full layer is tied anyway)")
    adaptive_cutoffs: tuple = setting((1000, 3000), "adaptive: band edges; ids below the first are scored by the head")
    adaptive_div: int = setting(4, "adaptive: band i's tail projects H down to H / adaptive_div ** (i + 1)")
    segment_marks: str = setting("", "tokens that end a segment, e.g. a poem's line-end marks ，。: the recurrent "
                                     "decoder is told each input's segment and place in it (\"\" = off)")
    latent_slots: int = setting(0, "GRU/LSTM encoder and decoder: z is written and read by place through this many "
                                   "learned slots (SlotPooling, SlotReader; 0 = off)")

    def __post_init__(self):
        if isinstance(self.adaptive_cutoffs, list):  # JSON gives a list
            object.__setattr__(self, "adaptive_cutoffs", tuple(self.adaptive_cutoffs))
        for name, choices in (("encoder", ENCODERS), ("decoder", DECODERS), ("posterior", [*POSTERIORS, "none"]),
                              ("output_layer", OUTPUT_LAYERS)):
            check_choice(self, name, sorted(choices))
        check_int(self, "vocab_size", 1, 10**7)
        for name in ("embed_dim", "encoder_hidden", "decoder_hidden"):
            check_int(self, name, 1, 16384)
        for name in ("encoder_layers", "decoder_layers", "kernel_size"):
            check_int(self, name, 1, 64)
        check_int(self, "num_heads", 1, 256)
        check_int(self, "latent_dim", 2 if self.posterior == "vmf" else 1, 4096)
        check_int(self, "max_len", 3, 65536)
        check_float(self, "kappa", 0, 1e6, low_open=True)
        check_float(self, "gamma", 0, 100, low_open=True)
        check_float(self, "tau", 0, 1, low_open=True)
        if self.tau == 1:
            raise TextVAEError("VAEConfig.tau must be in (0, 1), not 1 (the mean would carry all the variance)")
        check_float(self, "dropout", 0, 0.99)
        check_float(self, "encoder_dropout", -1, 0.99)
        if -1 < self.encoder_dropout < 0:
            raise TextVAEError(f"VAEConfig.encoder_dropout must be -1 (the same as dropout) or in [0, 0.99], not "
                               f"{self.encoder_dropout!r}")
        check_float(self, "word_dropout", 0, 1)
        if self.output_layer == "adaptive":
            self._check_adaptive()
        if self.output_layer == "tied" and self.decoder != "transformer" and self.embed_dim != self.decoder_hidden:
            raise TextVAEError(f"VAEConfig.output_layer 'tied' shares the embedding with the output layer, so "
                               f"embed_dim ({self.embed_dim}) must equal decoder_hidden ({self.decoder_hidden})")
        if not isinstance(self.segment_marks, str) or len(self.segment_marks) > 16:
            raise TextVAEError(f"VAEConfig.segment_marks must be a string of at most 16 characters, not "
                               f"{self.segment_marks!r}")
        if self.segment_marks and self.decoder == "transformer":
            raise TextVAEError("VAEConfig.segment_marks needs a recurrent decoder (the Transformer has positions "
                               "of its own)")
        check_int(self, "latent_slots", 0, 256)
        if self.latent_slots and (self.encoder == "gcnn" or self.decoder == "transformer"):
            raise TextVAEError("VAEConfig.latent_slots needs a GRU or LSTM encoder and decoder")
        if self.decoder == "transformer" and self.decoder_hidden % self.num_heads:
            raise TextVAEError("VAEConfig.decoder_hidden must be divisible by num_heads for the Transformer")

    def _check_adaptive(self):
        cuts = self.adaptive_cutoffs
        if not isinstance(cuts, tuple) or not cuts or any(type(c) is not int for c in cuts) \
                or list(cuts) != sorted(set(cuts)) or cuts[0] < 1:
            raise TextVAEError(f"VAEConfig.adaptive_cutoffs must be increasing positive integers, not {cuts!r}")
        if cuts[-1] >= self.vocab_size:
            raise TextVAEError(f"VAEConfig.adaptive_cutoffs {list(cuts)} must lie below vocab_size {self.vocab_size} "
                               "(use output_layer 'full' for a small vocabulary)")
        if not isinstance(self.adaptive_div, int) or self.adaptive_div < 1 or \
                self.decoder_hidden // self.adaptive_div ** len(cuts) < 1:
            raise TextVAEError(f"VAEConfig.adaptive_div {self.adaptive_div!r} must be a positive integer that leaves "
                               f"every tail at least 1 unit of the decoder's {self.decoder_hidden}")

    @property
    def has_latent(self) -> bool:
        return self.posterior != "none"

    def to_json(self, checksums: dict[str, str] | None = None, extra: dict | None = None) -> str:
        """The config as JSON; a saved model's config.json adds the sha256 of its files under "checksums" and
        the `extra` keys (the default learned prior)."""
        saved = {} if checksums is None else {"checksums": checksums}
        return json.dumps(dataclasses.asdict(self) | saved | (extra or {}), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "VAEConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, fields: dict) -> "VAEConfig":
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TextVAEError(f"unknown VAEConfig fields {sorted(unknown)}")
        return cls(**fields)


class VAEOutput(NamedTuple):
    rec: torch.Tensor  # (B,) reconstruction NLL in nats, summed over predicted tokens
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)); zeros without a latent
    ntokens: torch.Tensor  # (B,) predicted tokens (text + EOS)
    q: Distribution | None  # q(z|x), batch (B,), event (D,)
    z: torch.Tensor | None  # (B, D) the sample the decoder saw


def _build_encoder(c: VAEConfig) -> nn.Module:
    extra = dict(kernel_size=c.kernel_size) if c.encoder == "gcnn" else dict(slots=c.latent_slots, max_len=c.max_len)
    return ENCODERS[c.encoder](c.vocab_size, embed_dim=c.embed_dim, hidden_dim=c.encoder_hidden,
                               num_layers=c.encoder_layers, pad_id=PAD_ID, **extra,
                               dropout=c.dropout if c.encoder_dropout == -1 else c.encoder_dropout)


def _build_head(c: VAEConfig, input_dim: int) -> nn.Module:
    extra = {"gaussian": {}, "bn": dict(gamma=c.gamma), "bn-tau": dict(tau=c.tau), "vmf": dict(kappa=c.kappa)}
    return POSTERIORS[c.posterior](input_dim, c.latent_dim, **extra[c.posterior])


def _separator_ids(marks: str, tokenizer: Tokenizer | None) -> tuple[int, ...] | None:
    """The token ids of the segment marks (None: off). Without a tokenizer (a model built to count its
    parameters) there are none to look up."""
    if not marks:
        return None
    if tokenizer is None:
        return ()
    ids = tuple(tokenizer.piece_to_id(mark) for mark in marks)
    missing = [mark for mark, i in zip(marks, ids) if i == UNK_ID]
    if missing:
        raise TextVAEError(f"VAEConfig.segment_marks {missing} have no piece of their own in the tokenizer: "
                           "give marks the corpus uses, or '' to turn segment positions off")
    return ids


def _build_decoder(c: VAEConfig, tokenizer: Tokenizer | None) -> nn.Module:
    latent_dim = c.latent_dim if c.has_latent else 0
    common = dict(latent_dim=latent_dim, num_layers=c.decoder_layers, dropout=c.dropout,
                  word_dropout=c.word_dropout, pad_id=PAD_ID, unk_id=UNK_ID, output=c.output_layer,
                  cutoffs=c.adaptive_cutoffs, div_value=c.adaptive_div)
    if c.decoder in ("gru", "lstm"):
        return DECODERS[c.decoder](c.vocab_size, embed_dim=c.embed_dim, hidden_dim=c.decoder_hidden,
                               separators=_separator_ids(c.segment_marks, tokenizer), slots=c.latent_slots,
                               max_len=c.max_len, **common)
    return DECODERS["transformer"](c.vocab_size, d_model=c.decoder_hidden, num_heads=c.num_heads,
                                   max_len=c.max_len, **common)


# the floating types a model's weights may be stored in (`textvae export --dtype`)
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# the files config.json checksums
_CHECKSUMMED = ("model.safetensors", "tokenizer.model", *priors.ALL_FILES, priors.LEGACY[0])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_config(path: Path) -> tuple[VAEConfig, dict | None, str | None]:
    """A saved model's config.json: the VAEConfig, the checksums of the files saved beside it (None in a model
    saved before they were recorded), and the kind of learned prior `--prior auto` uses (None: the standard one)."""
    try:
        fields = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextVAEError(f"{path} is corrupt ({e}).") from e
    if not isinstance(fields, dict):
        raise TextVAEError(f"{path} is corrupt: it holds no JSON object.")
    checksums, default_prior = fields.pop("checksums", None), fields.pop("prior", None)
    try:
        config = VAEConfig.from_dict(fields)
    except TextVAEError as e:
        raise TextVAEError(f"{path}: {e}") from e
    if not isinstance(checksums, dict | None):
        raise TextVAEError(f"{path} is corrupt: its checksums should map file names to sha256 digests, not "
                           f"{checksums!r}.")
    if default_prior is not None and default_prior not in priors.KINDS:
        raise TextVAEError(f"{path} is corrupt: its prior should be one of {', '.join(priors.KINDS)}, not "
                           f"{default_prior!r}.")
    return config, checksums, default_prior


def _verify_files(directory: Path, checksums: dict | None) -> None:
    """Refuse a file whose sha256 is not the one recorded at save time: a bit flipped in the weights, or a
    tokenizer.model from another model of the same vocabulary size, would load and decode gibberish."""
    unverified = []
    for name in _CHECKSUMMED:
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
        elif _sha256(path) != checksums[name]:
            raise TextVAEError(f"{path} does not match the checksum recorded when the model was saved: it is "
                               "corrupt, or was copied from another model. Copy the whole model folder again "
                               "from where it was saved.")
    if unverified:
        warnings.warn(f"{directory}: {' and '.join(unverified)} could not be verified: config.json records no "
                      "checksum (the model was saved before textvae recorded them); save it again to add them")


class TextVAE(nn.Module):
    def __init__(self, config: VAEConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = _build_encoder(config) if config.has_latent else None
        self.head = _build_head(config, self.encoder.output_dim) if config.has_latent else None
        self.decoder = _build_decoder(config, tokenizer)
        # ex-post densities on z fitted to the aggregate posterior (textvae.priors), by kind, and the kind
        # `--prior auto` samples from (None: the standard prior)
        self.priors, self.default_prior = {}, None

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> Distribution:
        """q(z|x) for a batch, batch shape (B,), event shape (D,). The head runs in fp32 even under bf16
        autocast: log q, the KL and the MI estimates are computed from its parameters."""
        features = self.encoder(ids, mask)  # (B, H)
        with torch.autocast(ids.device.type, enabled=False):
            return self.head(features.float())

    def prior(self, batch_size: int = 1) -> Distribution | None:
        if self.head is None:
            return None
        weight = next(self.parameters())
        return self.head.prior((batch_size,), device=weight.device, dtype=weight.dtype)

    def reconstruction_nll(self, z: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per example (B,) by teacher forcing: inputs ids[:, :-1], targets ids[:, 1:]."""
        targets = ids[:, 1:]
        nll = self.decoder.lm_head.nll(self.decoder.features(z, ids[:, :-1]), targets)  # (B, T-1), fp32
        return nll.masked_fill(targets == PAD_ID, 0.0).sum(dim=1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, sample: bool = True,
                encoder_input: tuple[torch.Tensor, torch.Tensor] | None = None) -> VAEOutput:
        """ELBO terms; `sample=False` decodes from the posterior mode (μ; for vMF the mean direction, which
        lies on the sphere, unlike the mean A_D(κ)·μ) instead of a sample. `encoder_input` (ids, mask) is what
        the encoder reads instead of the text itself (a corrupted copy, textvae.corruption): the decoder still
        writes `ids`."""
        ntokens = mask[:, 1:].sum(dim=1)
        if self.head is None:
            rec = self.reconstruction_nll(None, ids)
            return VAEOutput(rec, torch.zeros_like(rec), ntokens, None, None)
        q = self.encode(*(encoder_input or (ids, mask)))
        z = q.rsample() if sample else q.mode
        kl = kl_divergence(q, self.prior(ids.size(0)))  # (B,)
        return VAEOutput(self.reconstruction_nll(z, ids), kl, ntokens, q, z)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write config.json, model.safetensors and tokenizer.model to a temporary folder, then rename. `dtype`
        stores the weights in another floating type (fp16 halves the file); from_pretrained casts them back
        to the model's fp32 as it loads."""
        with atomic_directory(directory) as tmp:
            self.write_to(tmp, dtype)

    def write_to(self, directory: Path, dtype: torch.dtype | None = None) -> None:
        """The files of a saved model, written into an existing folder (the caller makes it atomic).
        config.json comes last: it records the sha256 of the others, which from_pretrained checks."""
        # on CUDA, cuDNN packs a GRU's weights into one shared buffer, which safetensors refuses to save;
        # on the CPU each weight has its own storage
        on_cpu = self
        if dtype is not None or next(self.parameters()).device.type != "cpu":
            on_cpu = copy.deepcopy(self).to(device="cpu", dtype=dtype)
        save_model(on_cpu, str(directory / "model.safetensors"))
        if self.tokenizer is not None:
            self.tokenizer.save(directory / "tokenizer.model")
        for prior in self.priors.values():
            priors.save(prior, directory)
        self._write_config(directory)

    def _write_config(self, directory: Path) -> None:
        checksums = {name: _sha256(directory / name) for name in _CHECKSUMMED if (directory / name).is_file()}
        extra = {} if self.default_prior is None else {"prior": self.default_prior}
        write_text(directory / "config.json", self.config.to_json(checksums, extra))

    def save_prior(self, kind: str, directory: str | Path) -> None:
        """Add (or replace) one learned prior in the folder this model was loaded from, leaving its other files
        as they are: the prior's files by rename (a lone legacy mixture is removed), then config.json with the
        checksums and the default kind. An interrupted fit leaves the folder as it was."""
        directory = Path(directory)
        with tempfile.TemporaryDirectory(prefix=".prior-", dir=directory) as tmp:
            priors.save(self.priors[kind], Path(tmp))
            set_default_modes(Path(tmp))
            for name in priors.files(kind):
                os.replace(Path(tmp) / name, directory / name)
        if kind == "gmm":
            for name in priors.LEGACY:
                (directory / name).unlink(missing_ok=True)
        self._write_config(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TextVAE":
        """The model saved in `directory` by `save_pretrained` (config.json, model.safetensors, tokenizer.model,
        and the learned priors fitted to it), each file checked against the checksums config.json
        records; or a shipped model by its short name, "poem" or "faithful" (textvae.shipped). In eval mode,
        on `device`. For text in and text out, see `textvae.load`."""
        directory = resolve(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise TextVAEError(f"{directory} is not a saved textvae model: {name} is missing "
                                   "(expected config.json, model.safetensors, tokenizer.model).")
        config, checksums, default_prior = _read_config(directory / "config.json")
        tokenizer_path = directory / "tokenizer.model"
        tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path.exists() else None
        _verify_files(directory, checksums)  # after load_tokenizer: a file that is no tokenizer at all is named so
        if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
            raise TextVAEError(f"{directory}: tokenizer.model has {tokenizer.vocab_size} pieces but config.json "
                               f"says vocab_size {config.vocab_size}; the files come from different models")
        model = cls(config, tokenizer)
        try:
            load_model(model, str(directory / "model.safetensors"), device=str(device))
        except (SafetensorError, RuntimeError, OSError) as e:
            raise TextVAEError(f"{directory}/model.safetensors is corrupt or does not match "
                               f"config.json ({e}).") from e
        model.priors = priors.load(directory, config.latent_dim)
        model.default_prior = default_prior if default_prior is not None else next(iter(model.priors), None)
        if model.default_prior is not None and model.default_prior not in model.priors:
            raise TextVAEError(f"{directory}/config.json names a {model.default_prior} prior, but "
                               f"{priors.files(model.default_prior)[0]} is missing")
        return model.to(device).eval()


def parameter_count(config: VAEConfig) -> int:
    """Parameters of a model with this config, counted without allocating them (on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in TextVAE(config).parameters())


def is_saved_model(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "TextVAE", "VAEConfig", "VAEOutput"]
