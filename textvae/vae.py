"""The text VAE: encoder -> posterior head q(z|x) -> autoregressive decoder p(x|z), and its config.

Shapes: B batch, T tokens (BOS + text + EOS, padded on the right), V vocab, H encoder output, D latent.
`forward(ids, mask)` returns per-example reconstruction NLL `rec` (summed over predicted tokens, EOS
included, BOS excluded) and `kl` = KL(q(z|x) || p(z)), so the ELBO of a sentence is -(rec + kl).
posterior="none" drops encoder and head: the same decoder as a plain language model (the baseline).
`VAEConfig` is composed of the families' settings: the encoder, the posterior, the decoder and the output
layer each pick a kind, and a kind's own knobs (the GCNN's kernel_size, BN's gamma, ...) live in the
settings dataclass its class names (textvae.fields). Saved folders are read and written by textvae.checkpoint.

References: Bowman et al. 2016 (the text VAE); Kingma & Welling 2014 (reparameterisation).
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.distributions import Distribution, kl_divergence

from textvae import checkpoint
from textvae.decoders import DECODERS, OUTPUT_LAYERS, build_decoder
from textvae.decoders import RECURRENT as RECURRENT_DECODERS
from textvae.encoders import ENCODERS, build_encoder
from textvae.encoders import RECURRENT as RECURRENT_ENCODERS
from textvae.errors import TextVAEError
from textvae.fields import NoSettings, check_choice, check_float, check_int, knobs, setting
from textvae.posteriors import POSTERIORS
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

# the four families: the VAEConfig field that picks a kind, and the kinds by name (each class names its settings)
FAMILIES = {"encoder": ENCODERS, "posterior": POSTERIORS, "decoder": DECODERS, "output_layer": OUTPUT_LAYERS}
NO_LATENT = "none"  # the posterior of a plain language model


def settings_class(family: str, kind: str) -> type:
    """The dataclass of a kind's own knobs."""
    registry = FAMILIES[family]
    return registry[kind].settings if kind in registry else NoSettings


def knob_owners() -> dict[str, list[tuple[str, str]]]:
    """{knob: [(family, kind), ...]}: every kind-specific knob and the kinds whose settings hold it."""
    owners = {}
    for family, registry in FAMILIES.items():
        for kind, cls in registry.items():
            for name in knobs(cls.settings):
                owners.setdefault(name, []).append((family, kind))
    return owners


def _wrong_family(knob: str, owners: list[tuple[str, str]], chosen: dict) -> TextVAEError:
    family = owners[0][0]
    kinds = " or ".join(kind for _, kind in owners)
    return TextVAEError(f"{knob} is a setting of the {kinds} {family.replace('_', ' ')}, and this model's "
                        f"{family.replace('_', ' ')} is {chosen[family]}: drop {knob}, or choose {family} {kinds}")


def override(fields: dict, changes: dict) -> dict:
    """Flat fields with `changes` applied on top: where a change picks another kind, the knobs that only the
    old kind took are dropped, so a preset's gamma does not follow its bn posterior out."""
    kept = dict(fields)
    for family in FAMILIES:
        was = fields.get(family, getattr(VAEConfig, family))  # a kind left out is the default kind
        if family in changes and changes[family] != was:
            for name in set(knobs(settings_class(family, was))) - set(knobs(settings_class(family, changes[family]))):
                kept.pop(name, None)
    return kept | changes

@dataclass(frozen=True)
class VAEConfig:
    vocab_size: int = setting(8000, "tokenizer pieces (set from the tokenizer)")
    max_len: int = setting(128, "longest token sequence the model reads and writes (BOS + text + EOS)")
    embed_dim: int = setting(256, "token embedding size (encoder; GRU/LSTM decoder)")
    latent_dim: int = setting(32, "D")
    latent_slots: int = setting(0, "GRU/LSTM encoder and decoder: z is written and read by place through this many "
                                   "learned slots (SlotPooling, SlotReader; 0 = off)")
    encoder: str = setting("gru", "gru | lstm | gcnn")
    encoder_hidden: int = setting(256, "GRU/LSTM state per direction / GCNN channels")
    encoder_layers: int = setting(1, "GRU/LSTM layers / GCNN gated conv layers")
    encoder_dropout: float = setting(0.0, "dropout inside the encoder")
    posterior: str = setting("gaussian", "gaussian | bn | bn-tau | vmf | none (no latent: a plain language model)")
    decoder: str = setting("gru", "gru | lstm | transformer")
    decoder_hidden: int = setting(512, "GRU/LSTM decoder state / Transformer width")
    decoder_layers: int = setting(1, "GRU/LSTM or Transformer layers")
    decoder_dropout: float = setting(0.0, "dropout inside the decoder")
    word_dropout: float = setting(0.0, "decoder inputs replaced by unk with this probability while training")
    output_layer: str = setting("full", "full (one V-way softmax) | adaptive (Grave et al. 2017: exact, fewer FLOPs) "
                                        "| tied (full, sharing the decoder's input embedding: GRU/LSTM need "
                                        "embed_dim == decoder_hidden; the Transformer's full layer is tied anyway)")
    # each family's chosen kind's own knobs, an instance of the dataclass its class names (None: its defaults)
    encoder_settings: object = setting(None, "the encoder kind's own knobs")
    posterior_settings: object = setting(None, "the posterior kind's own knobs")
    decoder_settings: object = setting(None, "the decoder kind's own knobs")
    output_layer_settings: object = setting(None, "the output layer kind's own knobs")

    def __post_init__(self):
        for family, registry in FAMILIES.items():
            check_choice(self, family, sorted([*registry, NO_LATENT] if family == "posterior" else registry))
            self._settle(family)
        check_int(self, "vocab_size", 1, 10**7)
        for name in ("embed_dim", "encoder_hidden", "decoder_hidden"):
            check_int(self, name, 1, 16384)
        for name in ("encoder_layers", "decoder_layers"):
            check_int(self, name, 1, 64)
        check_int(self, "latent_dim", 2 if self.posterior == "vmf" else 1, 4096)
        check_int(self, "max_len", 3, 65536)
        check_int(self, "latent_slots", 0, 256)
        for name in ("encoder_dropout", "decoder_dropout"):
            check_float(self, name, 0, 0.99)
        check_float(self, "word_dropout", 0, 1)
        self._check_across_families()

    def _settle(self, family: str) -> None:
        """Give the family's chosen kind its default settings, or refuse settings made for another kind."""
        name, expected = f"{family}_settings", settings_class(family, getattr(self, family))
        given = getattr(self, name)
        if given is None:
            object.__setattr__(self, name, expected())
        elif type(given) is not expected:
            raise TextVAEError(f"VAEConfig.{name} must be {expected.__name__} for the {getattr(self, family)} "
                               f"{family.replace('_', ' ')}, not {type(given).__name__}")

    def _check_across_families(self) -> None:
        if self.output_layer == "adaptive":
            cuts, div = self.output_layer_settings.adaptive_cutoffs, self.output_layer_settings.adaptive_div
            if cuts[-1] >= self.vocab_size:
                raise TextVAEError(f"VAEConfig.adaptive_cutoffs {list(cuts)} must lie below vocab_size "
                                   f"{self.vocab_size} (use output_layer 'full' for a small vocabulary)")
            if self.decoder_hidden // div ** len(cuts) < 1:
                raise TextVAEError(f"VAEConfig.adaptive_div {div!r} must leave every tail at least 1 unit of the "
                                   f"decoder's {self.decoder_hidden}")
        if self.output_layer == "tied" and self.decoder in RECURRENT_DECODERS and self.embed_dim != self.decoder_hidden:
            raise TextVAEError(f"VAEConfig.output_layer 'tied' shares the embedding with the output layer, so "
                               f"embed_dim ({self.embed_dim}) must equal decoder_hidden ({self.decoder_hidden})")
        if self.latent_slots and (self.encoder not in RECURRENT_ENCODERS or self.decoder not in RECURRENT_DECODERS):
            raise TextVAEError("VAEConfig.latent_slots needs a GRU or LSTM encoder and decoder")
        if self.decoder == "transformer" and self.decoder_hidden % self.decoder_settings.num_heads:
            raise TextVAEError("VAEConfig.decoder_hidden must be divisible by num_heads for the Transformer")

    @property
    def has_latent(self) -> bool:
        return self.posterior != NO_LATENT

    @property
    def segment_marks(self) -> str:
        """The marks that end a segment for a recurrent decoder ("" for none, and for other decoders)."""
        return getattr(self.decoder_settings, "segment_marks", "")

    def to_dict(self) -> dict:
        """The flat fields: the shared ones and the chosen kinds' own knobs, as config files hold them."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.endswith("_settings")}
        for family in FAMILIES:
            fields |= dataclasses.asdict(getattr(self, f"{family}_settings"))
        return fields

    @classmethod
    def from_dict(cls, fields: dict) -> "VAEConfig":
        """A config from flat fields (a config file, the CLI's flags). A knob of a kind the config does not
        choose is refused: silently ignoring it would train another model than the one asked for."""
        fields, owners = dict(fields), knob_owners()
        shared = {f.name for f in dataclasses.fields(cls) if not f.name.endswith("_settings")}
        unknown = set(fields) - shared - set(owners)
        if unknown:
            raise TextVAEError(f"unknown VAEConfig fields {sorted(unknown)}")
        chosen = {family: fields.get(family, getattr(cls, family)) for family in FAMILIES}
        settings = {}
        for family, kind in chosen.items():
            if kind in FAMILIES[family] or kind == NO_LATENT:
                own = settings_class(family, kind)
                settings[f"{family}_settings"] = own(**{k: fields.pop(k) for k in knobs(own) if k in fields})
        stray = sorted(set(fields) & set(owners))
        if stray:
            raise _wrong_family(stray[0], owners[stray[0]], chosen)
        return cls(**fields, **settings)


class VAEOutput(NamedTuple):
    rec: torch.Tensor  # (B,) reconstruction NLL in nats, summed over predicted tokens
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)); zeros without a latent
    ntokens: torch.Tensor  # (B,) predicted tokens (text + EOS)
    q: Distribution | None  # q(z|x), batch (B,), event (D,)
    z: torch.Tensor | None  # (B, D) the sample the decoder saw


def _build_encoder(c: VAEConfig) -> nn.Module:
    return build_encoder(c.encoder, c.encoder_settings, c.vocab_size, embed_dim=c.embed_dim,
                         hidden_dim=c.encoder_hidden, num_layers=c.encoder_layers, dropout=c.encoder_dropout,
                         pad_id=PAD_ID, slots=c.latent_slots, max_len=c.max_len)


def _build_head(c: VAEConfig, input_dim: int) -> nn.Module:
    return POSTERIORS[c.posterior](input_dim, c.latent_dim, **dataclasses.asdict(c.posterior_settings))


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
    return build_decoder(c.decoder, c.decoder_settings, c.output_layer, c.output_layer_settings, c.vocab_size,
                         embed_dim=c.embed_dim, hidden_dim=c.decoder_hidden,
                         latent_dim=c.latent_dim if c.has_latent else 0, num_layers=c.decoder_layers,
                         dropout=c.decoder_dropout, word_dropout=c.word_dropout, pad_id=PAD_ID, unk_id=UNK_ID,
                         separators=_separator_ids(c.segment_marks, tokenizer), slots=c.latent_slots,
                         max_len=c.max_len)


class TextVAE(nn.Module):
    def __init__(self, config: VAEConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = _build_encoder(config) if config.has_latent else None
        self.head = _build_head(config, self.encoder.output_dim) if config.has_latent else None
        self.decoder = _build_decoder(config, tokenizer)
        # ex-post densities on z fitted to the aggregate posterior (textvae.priors), by kind, and the kind
        # `--prior auto` samples from (None: the standard prior); classifiers of author, era and theme on z
        # (textvae.attributes; None until fitted)
        self.priors, self.default_prior, self.attributes = {}, None, None

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
        """Write config.json, model.safetensors, tokenizer.model and the learned priors to a temporary folder,
        then rename. `dtype` stores the weights in another floating type (fp16 halves the file);
        from_pretrained casts them back to the model's fp32 as it loads."""
        checkpoint.save_model_folder(directory, *self._parts(), self.attributes, dtype=dtype)

    def write_to(self, directory: Path, dtype: torch.dtype | None = None) -> None:
        """The files of a saved model, written into an existing folder (the caller makes it atomic)."""
        checkpoint.write_model(directory, *self._parts(), self.attributes, dtype=dtype)

    def _parts(self) -> tuple:
        return self, self.config.to_dict(), self.tokenizer, self.priors, self.default_prior

    def save_prior(self, kind: str, directory: str | Path) -> None:
        """Add (or replace) the learned prior `kind` in the folder this model was loaded from."""
        checkpoint.add_prior(directory, self.priors[kind], kind, self.config.to_dict(), self.default_prior)

    def save_attributes(self, directory: str | Path) -> None:
        """Add (or replace) the attribute models in the folder this model was loaded from."""
        checkpoint.add_attributes(directory, self.attributes, self.config.to_dict(), self.default_prior)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TextVAE":
        """The model saved in `directory` by `save_pretrained` (config.json, model.safetensors, tokenizer.model,
        and the learned priors fitted to it), each file checked against the checksums config.json
        records; or a shipped model by its short name, "poem" or "faithful" (textvae.shipped). In eval mode,
        on `device`. For text in and text out, see `textvae.load`. A folder that a writer swaps meanwhile (`textvae
        fit-prior`) is read again: the model is one version of it, whole."""
        return checkpoint.read_whole(directory, lambda folder: cls._from_folder(folder, device))

    @classmethod
    def _from_folder(cls, directory: Path, device: str | torch.device) -> "TextVAE":
        """One pass of from_pretrained over the files of a model folder."""
        saved = checkpoint.open_model(directory)
        try:
            config = VAEConfig.from_dict(saved.config.fields)
        except TextVAEError as e:
            raise TextVAEError(f"{saved.directory / 'config.json'}: {e}") from e
        if saved.tokenizer is not None and saved.tokenizer.vocab_size != config.vocab_size:
            raise TextVAEError(f"{saved.directory}: tokenizer.model has {saved.tokenizer.vocab_size} pieces but "
                               f"config.json says vocab_size {config.vocab_size}; the files come from different models")
        model = cls(config, saved.tokenizer)
        checkpoint.load_weights(model, saved.directory, device)
        model.priors, model.default_prior = checkpoint.load_priors(saved.directory, config.latent_dim,
                                                                   saved.config.default_prior)
        model.attributes = checkpoint.load_attributes(saved.directory)
        return model.to(device).eval()


def parameter_count(config: VAEConfig) -> int:
    """Parameters of a model with this config, counted without allocating them (on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in TextVAE(config).parameters())


__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "TextVAE", "VAEConfig", "VAEOutput"]
