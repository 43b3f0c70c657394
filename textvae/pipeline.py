"""Text in, text out: a saved model and its verbs behind one object, in the Hugging Face habit.

    import textvae
    vae = textvae.load("poem")              # a shipped model's name (poem, faithful) or a model folder
    vae.sample(3, form="7x4", rhyme=True, temperature=0.8)
    z = vae.encode(["床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"])  # (1, D)
    vae.decode(z)

`vae.module` is the `TextVAE` nn.Module (tensors in, tensors out). Keyword arguments carry the names and meanings
of the CLI's flags and the studio's JSON fields (docs/vocabulary.md): n (how many outputs), form, acrostic,
keywords ("月,江,酒" or a tuple of words: each poem holds them), rhyme (True: the CLI's bare --rhyme, the group line 2
ends in; a string names a group or one of its characters; see generate.check_rhyme), meter, prior, seed, script,
the steering settings (like, era, theme, strength, candidates, langevin_steps: textvae.steering) and the decoding
settings (strategy, beam, temperature, top_k, top_p, max_tokens, precision). An unknown keyword is refused, with
the nearest known one named. Shapes: B texts, D latent size.
"""

import dataclasses
import difflib
from pathlib import Path

import torch

from textvae import generate
from textvae.steering import RESTYLE_STRENGTH, Steering
from textvae.errors import TextVAEError
from textvae.vae import TextVAE

POEM_OPTIONS = ("form", "acrostic", "rhyme", "meter", "keywords")
DECODING_OPTIONS = tuple(f.name for f in dataclasses.fields(generate.Decoding))
STEERING_OPTIONS = tuple(f.name for f in dataclasses.fields(Steering))
OPTIONS = (*POEM_OPTIONS, *DECODING_OPTIONS, *STEERING_OPTIONS, "seed", "script")


def _check_known(options: dict) -> None:
    for name in options:
        if name not in OPTIONS:
            near = difflib.get_close_matches(name, OPTIONS, n=1)
            raise TextVAEError(f"unknown option {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                               + f"; the options are {', '.join(OPTIONS)}")


class Pipeline:
    """A loaded model with text-level verbs; see the module docstring. Build it with `textvae.load`."""

    def __init__(self, module: TextVAE):
        if module.tokenizer is None:
            raise TextVAEError("the model has no tokenizer: the text-level verbs need one")
        self.module = module.eval()

    def __repr__(self) -> str:
        c = self.module.config
        return f"Pipeline({c.posterior} posterior, D = {c.latent_dim}, {c.decoder}-{c.decoder_hidden} decoder)"

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _generation(self, options: dict, strategy: str = "greedy") -> dict:
        """generate's keyword arguments (decoding, constraint, seed, script) from the flat options."""
        _check_known(options)
        poem = {k: options[k] for k in POEM_OPTIONS if k in options}
        if "form" in poem and not isinstance(poem["form"], str):
            raise TextVAEError(f"form takes a name such as '7x4' or 'auto', not {poem['form']!r}")
        constraint = generate.constraint_for(self.module.tokenizer, poem.get("form"), poem.get("acrostic", ""),
                                             poem.get("rhyme"), bool(poem.get("meter")), self.device,
                                             keywords=poem.get("keywords", ()))
        decoding = generate.Decoding(**{"strategy": strategy,
                                        **{k: options[k] for k in DECODING_OPTIONS if k in options}})
        return dict(decoding=decoding, constraint=constraint, seed=options.get("seed"), script=options.get("script"))

    @staticmethod
    def _steering(options: dict, **defaults) -> Steering:
        """The steering settings, taken out of the flat options."""
        return Steering(**{**defaults, **{k: options.pop(k) for k in STEERING_OPTIONS if k in options}})

    def sample(self, n: int = 10, *, prior: str = "auto", prior_steps: int | None = None, **options) -> list[str]:
        """n texts decoded from z ~ p(z) (prior: auto, standard, gmm, flow or diffusion; prior_steps: a diffusion
        prior's DDIM steps), sampled token by token unless strategy says otherwise; like, era and theme tilt the
        prior toward a poet, an era or a theme (after `textvae fit-attributes`)."""
        _check_known(options)
        steering = self._steering(options)
        return generate.sample(self.module, n, prior=prior, prior_steps=prior_steps, steering=steering,
                               **self._generation(options, "sample"))

    def restyle(self, text: str, **options) -> str:
        """`text` rewritten in the manner of a poet (like), an era or a theme, in its own form: its code moves
        toward the attribute while staying near it (strength sets how far; 30 by default)."""
        if not isinstance(text, str):
            raise TextVAEError(f"restyle takes one text (a string), not {type(text).__name__}")
        _check_known(options)
        steering = self._steering(options, strength=RESTYLE_STRENGTH)
        return generate.restyle(self.module, text, steering, **self._generation(options))

    def encode(self, texts: str | list[str], *, sample: bool = False, seed: int | None = None) -> torch.Tensor:
        """(B, D) latents of the texts (either script; one string is a batch of one): the posterior modes, or
        one draw z ~ q(z|x) each."""
        q = generate.posterior(self.module, [texts] if isinstance(texts, str) else texts)
        if not sample:
            return q.mode
        with generate.seeded(seed, self.device):
            return q.sample()

    def decode(self, z: torch.Tensor, **options) -> list[str]:
        """Texts decoded from latents z (B, D) or one z (D,), greedily unless strategy says otherwise, each a
        poem of the form the model picks for a poem model unless form says otherwise."""
        generation = self._generation(options)
        with generate.seeded(generation.pop("seed"), self.device):
            return generate.decode(self.module, z, **generation)

    def reconstruct(self, texts: str | list[str], *, n: int = 0, **options):
        """Each text decoded from its posterior mode: one text gives one string, a list a list. With n = k, the
        decodings of k draws z ~ q(z|x) instead: a list for one text, a list of lists for several."""
        one = isinstance(texts, str)
        outputs = generate.reconstruct(self.module, [texts] if one else texts, n=n, **self._generation(options))
        outputs = [out if n else out[0] for out in outputs]
        return outputs[0] if one else outputs

    def interpolate(self, a: str | None = None, b: str | None = None, *, steps: int = 5, prior: str = "auto",
                    prior_steps: int | None = None, path: str = generate.DEFAULT_PATH, **options) -> list[str]:
        """The decodings of `steps` evenly spaced points from z(a) to z(b), both ends included, walked as `path`
        says (crossings, linear, slerp, or prior: see `generate.PATHS`); without a and b, between two draws from
        the prior."""
        return generate.interpolate(self.module, a, b, steps=steps, prior=prior, prior_steps=prior_steps, path=path,
                                    **self._generation(options))

    def vary(self, text: str, n: int = 5, *, spread: float = generate.DEFAULT_SPREAD, **options) -> list[str]:
        """n texts like `text`: decodings of draws from q(z|text) pulled towards its mode by spread (smaller
        keeps more of the text)."""
        if not isinstance(text, str):
            raise TextVAEError(f"vary takes one text (a string), not {type(text).__name__}")
        return generate.vary(self.module, text, n, spread=spread, **self._generation(options))


def load(model: str | Path = "poem", device: str | torch.device = "cpu") -> Pipeline:
    """A saved model as a `Pipeline`: a shipped model's short name ("poem", the default, or "faithful") or a
    folder written by `save_pretrained` (a training run's best/ or last/)."""
    return Pipeline(generate.load_model(model, device=device))


__all__ = ["OPTIONS", "Pipeline", "load"]
