"""The text VAE: encoder -> posterior head q(z|x) -> autoregressive decoder p(x|z), and its config.

Shapes: B batch, T tokens (BOS + text + EOS, padded on the right), V vocab, H encoder output, D latent.
`forward(ids, mask)` returns per-example reconstruction NLL `rec` (summed over predicted tokens, EOS
included, BOS excluded) and `kl` = KL(q(z|x) || p(z)), so the ELBO of a sentence is -(rec + kl).
posterior="none" drops encoder and head: the same decoder as a plain language model (the baseline).
A saved model is a directory: config.json + model.safetensors + tokenizer.model (HF convention).

References: Bowman et al. 2016 (the text VAE); Kingma & Welling 2014 (reparameterisation).
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch.distributions import Distribution, kl_divergence

from textvae.atomic import atomic_directory
from textvae.decoders import DECODERS, OUTPUT_LAYERS
from textvae.encoders import ENCODERS
from textvae.errors import TextVAEError
from textvae.posteriors import POSTERIORS
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer


@dataclass(frozen=True)
class VAEConfig:
    vocab_size: int = 8000  # tokenizer pieces (set from the tokenizer)
    encoder: str = "gru"  # gru | gcnn
    posterior: str = "gaussian"  # gaussian | bn | bn-tau | vmf | none (no latent: a plain language model)
    decoder: str = "gru"  # gru | transformer
    embed_dim: int = 256  # token embedding size (encoder; GRU decoder)
    encoder_hidden: int = 256  # GRU state per direction / GCNN channels
    encoder_layers: int = 1  # GRU layers / GCNN gated conv layers
    kernel_size: int = 3  # GCNN convolution width
    decoder_hidden: int = 512  # GRU decoder state / Transformer width
    decoder_layers: int = 1  # GRU or Transformer layers
    num_heads: int = 4  # Transformer attention heads
    latent_dim: int = 32  # D
    kappa: float = 50.0  # vMF concentration (fixed)
    gamma: float = 0.6  # BN-VAE: fixed scale of the batch-normalised mean
    tau: float = 0.5  # τ-scaled BN: share of the prior variance carried by the mean
    dropout: float = 0.0  # dropout inside encoder and decoder
    word_dropout: float = 0.0  # decoder inputs replaced by unk with this probability while training
    max_len: int = 128  # longest token sequence the Transformer decoder accepts (BOS + text + EOS)
    output_layer: str = "full"  # full (one V-way softmax) | adaptive (Grave et al. 2017: exact, fewer FLOPs)
    adaptive_cutoffs: tuple = (1000, 3000)  # adaptive: band edges; ids below the first are scored by the head
    adaptive_div: int = 4  # adaptive: band i's tail projects H down to H / adaptive_div ** (i + 1)

    def __post_init__(self):
        object.__setattr__(self, "adaptive_cutoffs", tuple(self.adaptive_cutoffs))  # JSON gives a list
        for name, choices in (("encoder", ENCODERS), ("decoder", DECODERS), ("posterior", [*POSTERIORS, "none"]),
                              ("output_layer", OUTPUT_LAYERS)):
            if getattr(self, name) not in choices:
                raise TextVAEError(f"VAEConfig.{name} must be one of {sorted(choices)}, not {getattr(self, name)!r}")
        for name in ("vocab_size", "embed_dim", "encoder_hidden", "encoder_layers", "kernel_size",
                     "decoder_hidden", "decoder_layers", "num_heads", "latent_dim", "max_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise TextVAEError(f"VAEConfig.{name} must be a positive integer, not {getattr(self, name)!r}")
        if self.posterior == "vmf" and self.latent_dim < 2:
            raise TextVAEError("VAEConfig.latent_dim must be at least 2 for the vMF posterior")
        if self.kappa <= 0:
            raise TextVAEError(f"VAEConfig.kappa must be > 0, not {self.kappa}")
        if self.gamma <= 0:
            raise TextVAEError(f"VAEConfig.gamma must be > 0, not {self.gamma}")
        if not 0 < self.tau < 1:
            raise TextVAEError(f"VAEConfig.tau must be in (0, 1), not {self.tau}")
        if not 0 <= self.dropout < 1 or not 0 <= self.word_dropout <= 1:
            raise TextVAEError("VAEConfig.dropout must be in [0, 1) and word_dropout in [0, 1]")
        if self.output_layer == "adaptive":
            self._check_adaptive()
        if self.decoder == "transformer" and self.decoder_hidden % self.num_heads:
            raise TextVAEError("VAEConfig.decoder_hidden must be divisible by num_heads for the Transformer")

    def _check_adaptive(self):
        cuts = self.adaptive_cutoffs
        if not cuts or any(not isinstance(c, int) for c in cuts) or list(cuts) != sorted(set(cuts)) or cuts[0] < 1:
            raise TextVAEError(f"VAEConfig.adaptive_cutoffs must be increasing positive integers, not {list(cuts)}")
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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "VAEConfig":
        fields = json.loads(text)
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
    extra = {"gcnn": dict(kernel_size=c.kernel_size), "gru": {}}[c.encoder]
    return ENCODERS[c.encoder](c.vocab_size, embed_dim=c.embed_dim, hidden_dim=c.encoder_hidden,
                               num_layers=c.encoder_layers, dropout=c.dropout, pad_id=PAD_ID, **extra)


def _build_head(c: VAEConfig, input_dim: int) -> nn.Module:
    extra = {"gaussian": {}, "bn": dict(gamma=c.gamma), "bn-tau": dict(tau=c.tau), "vmf": dict(kappa=c.kappa)}
    return POSTERIORS[c.posterior](input_dim, c.latent_dim, **extra[c.posterior])


def _build_decoder(c: VAEConfig) -> nn.Module:
    latent_dim = c.latent_dim if c.has_latent else 0
    common = dict(latent_dim=latent_dim, num_layers=c.decoder_layers, dropout=c.dropout,
                  word_dropout=c.word_dropout, pad_id=PAD_ID, unk_id=UNK_ID, output=c.output_layer,
                  cutoffs=c.adaptive_cutoffs, div_value=c.adaptive_div)
    if c.decoder == "gru":
        return DECODERS["gru"](c.vocab_size, embed_dim=c.embed_dim, hidden_dim=c.decoder_hidden, **common)
    return DECODERS["transformer"](c.vocab_size, d_model=c.decoder_hidden, num_heads=c.num_heads,
                                   max_len=c.max_len, **common)


class TextVAE(nn.Module):
    def __init__(self, config: VAEConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = _build_encoder(config) if config.has_latent else None
        self.head = _build_head(config, self.encoder.output_dim) if config.has_latent else None
        self.decoder = _build_decoder(config)

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

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, sample: bool = True) -> VAEOutput:
        """ELBO terms; `sample=False` decodes from the posterior mode (μ; for vMF the mean direction, which
        lies on the sphere, unlike the mean A_D(κ)·μ) instead of a sample."""
        ntokens = mask[:, 1:].sum(dim=1)
        if self.head is None:
            rec = self.reconstruction_nll(None, ids)
            return VAEOutput(rec, torch.zeros_like(rec), ntokens, None, None)
        q = self.encode(ids, mask)
        z = q.rsample() if sample else q.mode
        kl = kl_divergence(q, self.prior(ids.size(0)))  # (B,)
        return VAEOutput(self.reconstruction_nll(z, ids), kl, ntokens, q, z)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json, model.safetensors and tokenizer.model to a temporary folder, then rename."""
        with atomic_directory(directory) as tmp:
            self.write_to(tmp)

    def write_to(self, directory: Path) -> None:
        """The files of a saved model, written into an existing folder (the caller makes it atomic)."""
        (directory / "config.json").write_text(self.config.to_json())
        save_model(self, str(directory / "model.safetensors"))
        if self.tokenizer is not None:
            self.tokenizer.save(directory / "tokenizer.model")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TextVAE":
        directory = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise TextVAEError(f"{directory} is not a saved textvae model: {name} is missing "
                                   "(expected config.json, model.safetensors, tokenizer.model).")
        try:
            config = VAEConfig.from_json((directory / "config.json").read_text())
        except (json.JSONDecodeError, TypeError) as e:
            raise TextVAEError(f"{directory}/config.json is corrupt ({e}).") from e
        tokenizer_path = directory / "tokenizer.model"
        tokenizer = Tokenizer.load(tokenizer_path) if tokenizer_path.exists() else None
        if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
            raise TextVAEError(f"{directory}: tokenizer.model has {tokenizer.vocab_size} pieces but config.json "
                               f"says vocab_size {config.vocab_size}; the files come from different models")
        model = cls(config, tokenizer)
        try:
            load_model(model, str(directory / "model.safetensors"), device=str(device))
        except (SafetensorError, RuntimeError, OSError) as e:
            raise TextVAEError(f"{directory}/model.safetensors is corrupt or does not match "
                               f"config.json ({e}).") from e
        return model.to(device).eval()


__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "TextVAE", "VAEConfig", "VAEOutput"]
