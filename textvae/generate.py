"""Generation: decoding strategies over a constraint object, and the verbs sample / reconstruct / interpolate / vary.

Decoding runs the decoder one token per step through its incremental state (init_state / step /
reorder_state; textvae.decoders.RecurrentState or TransformerState), a whole batch at a time. A constraint
(the protocol `poetry.Constraint`: `poetry.Verse` for poems, `FreeText` here for anything else) only biases
logits, so greedy, beam search and sampling all obey it; where it forces one token the decoder's output layer
is skipped. Without a constraint the verbs give a poem model regular poems of an automatic form
(`constraint_for`). Input may be in simplified or traditional characters (textvae.poetry.writing); output is
in the model's script unless asked. Settings carry the names of docs/vocabulary.md.
Shapes: B batch, K beam width, V vocab, D latent, T output tokens.
References: Bowman et al. 2016 (decoding prior samples, homotopies between sentences); Fan et al. 2018
(top-k sampling); Holtzman et al. 2020 (nucleus, top-p, sampling); White 2016 (slerp for latent paths).
"""

import contextlib
import copy
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from textvae import priors
from textvae.data import pad_batch
from textvae.errors import TextVAEError
from textvae.fields import check_choice, check_float, check_int, setting
from textvae.poetry import (FORMS, Bias, Constraint, ConstraintState, Verse, check_script, find_group, form_of,
                            in_script, is_verse_vocabulary, join_lines, split_lines, to_model_script)
from textvae.poetry.keywords import Keywords
from textvae.poetry.keywords import parse as parse_keywords
from textvae.posteriors import slerp
from textvae.precision import DTYPES, PRECISION_HELP, check_precision, resolve_precision
from textvae.sampling import choose
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, WordTokenizer
from textvae.steering import Steering, langevin, restyled_code, tilted_codes
from textvae.vae import TextVAE

STRATEGIES = ("greedy", "beam", "sample")
# auto: the model picks the form as it writes (poetry.Verse); drawn: each poem's form is drawn from the
# training corpus's form shares; free: no shape at all (FreeText)
FORM_CHOICES = (*FORMS, "auto", "drawn", "free")
DEFAULT_FORM = "auto"  # a poem model's form when none is asked for
MAX_OUTPUTS = 1_000_000  # texts from one call: its latents and texts stay within a few hundred MB
MAX_DRAWS = 10_000  # draws per text (reconstruct -n, vary -n) and points on a path
MAX_SPREAD = 100  # vary's spread is in (0, MAX_SPREAD]
# vary's default: draws halfway between q's own and its mode; data/faithful keeps 58 % of a poem's characters in
# place at 0.5 and 43 % at 1 (scripts/editing_report.py), and a variation that copies the poem is drawn again
DEFAULT_SPREAD = 0.5
KEEP_BONUS = 2.0  # restyle: nats that each of the poem's characters gains at its own place
MAX_REDRAWS = 8  # times vary draws again a variation that decoded to its input (the spread doubling each time)
PRIORS = priors.CHOICES  # where prior samples z come from: see prior_sample
MAX_PRIOR_STEPS = 1000  # a diffusion prior's DDIM steps
# how a path between two latents walks: the posterior's own line (straight for a Gaussian, the great circle for
# vMF), spherical interpolation (White 2016), spherical interpolation in the coordinates of a learned prior
# whose density there is N(0, I) (a flow's base space, a diffusion prior's noise), or through the codes of the two
# poems' crossings, half-line by half-line (two poems of one form; the line otherwise)
PATHS = ("linear", "slerp", "prior", "crossings")
DEFAULT_PATH = "crossings"  # it measured best on data/faithful (docs/smooth-latent.md)
WALKABLE = ("flow", "diffusion")  # the learned priors with such coordinates
_NEG_INF = float("-inf")


@dataclass(frozen=True)
class Decoding:
    strategy: str = setting("greedy", "greedy | beam | sample (`textvae sample` samples unless told otherwise)")
    beam: int = setting(4, "beam width K for the beam strategy")
    temperature: float = setting(1.0, "sampling: logits are divided by it (< 1 sharper, > 1 flatter)")
    top_k: int = setting(0, "sampling: keep only the k most likely tokens (0 keeps all)")
    top_p: float = setting(1.0, "sampling: keep the fewest tokens that hold this much probability (1 keeps all)")
    max_tokens: int = setting(0, "free-form output limit in tokens, EOS included (0: the model's max_len - 1)")
    precision: str = setting("auto", PRECISION_HELP)

    def __post_init__(self):
        check_choice(self, "strategy", STRATEGIES)
        check_int(self, "beam", 1, 64)
        check_int(self, "top_k", 0, 10**7)
        check_int(self, "max_tokens", 0, 1 << 16)
        if self.temperature == 0:
            raise TextVAEError("Decoding.temperature must be > 0, not 0 (use --strategy greedy for 0)")
        check_float(self, "temperature", 0, 100, low_open=True)
        check_float(self, "top_p", 0, 1, low_open=True)
        check_precision(self.precision, "Decoding.precision")
        shaping = [name for name, unset in (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0))
                   if getattr(self, name) != unset]
        if shaping and self.strategy != "sample":
            raise TextVAEError(f"{' and '.join(shaping)} shape sampling, and the {self.strategy} strategy would "
                               "ignore them: set strategy 'sample' (--strategy sample)")


# -----------------------------------------------------------------------------
# constraints


class FreeText:
    """No shape: the model decides, but never writes PAD, BOS or UNK, nor an empty output. A `Constraint` with
    no state; the length limit is the decoding's."""

    steps = None
    form = None

    def __init__(self, tokenizer: Tokenizer, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.relaxed = Counter()  # no rules, none give way
        self.banned = torch.zeros(1, tokenizer.vocab_size, device=self.device)
        self.banned[:, [PAD_ID, BOS_ID, UNK_ID]] = _NEG_INF
        self.banned_first = self.banned.clone()
        self.banned_first[:, EOS_ID] = _NEG_INF

    def init_state(self, batch_size: int) -> None:
        return None

    def forced(self, t: int, state: ConstraintState) -> None:
        return None

    def bias(self, t: int, state: ConstraintState) -> Bias:
        return Bias(self.banned_first if t == 0 else self.banned)

    def update(self, t: int, tokens: torch.Tensor, state: ConstraintState) -> None:
        return None

    def reorder_state(self, state: ConstraintState, index: torch.Tensor) -> None:
        return None

    def for_text(self, text: str) -> "FreeText":
        return self


class Anchored:
    """Another constraint whose allowed tokens at step t gain `bonus` nats where they are token t of an anchor
    text: restyle keeps more of its poem where the model is close to indifferent. A `Constraint`."""

    def __init__(self, inner: Constraint, anchor: list[int], bonus: float):
        self.inner, self.anchor, self.bonus = inner, anchor, bonus
        self.steps, self.device, self.form = inner.steps, inner.device, inner.form
        self.relaxed = inner.relaxed

    def init_state(self, batch_size: int) -> ConstraintState:
        return self.inner.init_state(batch_size)

    def forced(self, t: int, state: ConstraintState) -> int | None:
        return self.inner.forced(t, state)

    def bias(self, t: int, state: ConstraintState) -> Bias:
        bias = self.inner.bias(t, state)
        # -inf stays -inf: a rule the anchor breaks still holds
        return bias.shift(self.anchor[t], self.bonus) if t < len(self.anchor) else bias

    def update(self, t: int, tokens: torch.Tensor, state: ConstraintState) -> ConstraintState:
        return self.inner.update(t, tokens, state)

    def reorder_state(self, state: ConstraintState, index: torch.Tensor) -> ConstraintState:
        return self.inner.reorder_state(state, index)

    def for_text(self, text: str) -> "Anchored":
        return self


def check_rhyme(rhyme: bool | str | None) -> str | None:
    """The rhyme setting as poetry.Verse takes it. True (or "auto"): the level-tone group line 2 ends in; False
    or None: no rhyme steering; a string: a group (下平聲七陽, 七陽, 陽) or a character in it, or "random" (a
    level-tone group drawn per poem). An unknown group is refused here, before any work."""
    if rhyme is True:
        return "auto"
    if rhyme is False or rhyme is None:
        return None
    if not isinstance(rhyme, str) or not rhyme:
        raise TextVAEError(f"rhyme takes True, False, or a group's name or one of its characters, not {rhyme!r}")
    if rhyme not in ("auto", "random"):
        find_group(rhyme)
    return rhyme


def constraint_for(tokenizer: Tokenizer, form: str | None = None, acrostic: str = "",
                   rhyme: bool | str | None = None, meter: bool = False,
                   device: str | torch.device = "cpu", keywords: str | tuple[str, ...] = ()) -> Constraint:
    """The constraint for a form (one of FORM_CHOICES) and the poem options (rhyme as `check_rhyme` takes it):
    `FreeText` for "free", else `poetry.Verse` (for "auto" a form the model picks as it writes, for "drawn" one
    drawn from the corpus's shares), wrapped in `poetry.Keywords` where keywords are given (as "月,江,酒" or a
    tuple; "auto" then draws the form, so that the words' places are known). None means DEFAULT_FORM for a
    vocabulary that can write poems or with any poem option, and "free" for any other vocabulary (an English
    model writes free text)."""
    rhyme = check_rhyme(rhyme)
    words = parse_keywords(keywords) if isinstance(keywords, str) else tuple(keywords)
    poem_options = bool(acrostic) or rhyme is not None or meter or bool(words)
    if form is None:
        form = DEFAULT_FORM if poem_options or is_verse_vocabulary(tokenizer) else "free"
    if form not in FORM_CHOICES:
        raise TextVAEError(f"form must be one of {', '.join(FORM_CHOICES)} (characters x lines), not {form!r}")
    if form == "free" and poem_options:
        raise TextVAEError("an acrostic, keywords, or rhyme or meter steering needs a poem: give a form (or auto), "
                           "not free")
    if form == "free":
        return FreeText(tokenizer, device)
    verse = Verse(tokenizer, form if form in FORMS else None, acrostic, rhyme, meter, device,
                  drawn=form == "drawn" or (form == "auto" and bool(words)))
    return Keywords(verse, words) if words else verse


# -----------------------------------------------------------------------------
# strategies and decoding loops


def _shaping(decoding: Decoding) -> dict:
    return dict(strategy=decoding.strategy, temperature=decoding.temperature, top_k=decoding.top_k,
                top_p=decoding.top_p)


def _decode_stepwise(decoder, z, batch_size: int, steps: int, decoding: Decoding,
                     constraint: Constraint) -> torch.Tensor:
    """Greedy or sampled decoding -> (B, T) token ids, PAD after EOS. Finished rows leave the batch."""
    device = next(decoder.parameters()).device
    state, track = decoder.init_state(z, batch_size), constraint.init_state(batch_size)
    rows = torch.arange(batch_size, device=device)  # the output row of each live row
    tokens = torch.full((batch_size,), BOS_ID, device=device)
    out = torch.full((batch_size, steps), PAD_ID, device=device)
    shaping = _shaping(decoding)
    for t in range(steps):
        features, state = decoder.advance(tokens, state)
        forced = constraint.forced(t, track)
        if forced is not None:  # no output layer where the constraint fixes the token
            tokens = torch.full_like(tokens, forced)
        else:
            tokens = choose(decoder.lm_head, decoder.output_features(features), constraint.bias(t, track), **shaping)
        track = constraint.update(t, tokens, track)
        out[rows, t] = tokens
        done = tokens == EOS_ID
        if done.any():
            keep = (~done).nonzero()[:, 0]
            if not keep.numel():
                break
            rows, tokens = rows[keep], tokens[keep]
            state = decoder.reorder_state(state, keep)
            track = constraint.reorder_state(track, keep)
    return out


def _decode_beam(decoder, z, batch_size: int, steps: int, width: int, constraint: Constraint) -> torch.Tensor:
    """Beam search -> (B, T) the best of K hypotheses per row by total log-probability under the constrained
    (renormalised) distribution. A finished hypothesis stays in its beam, extended by PAD at no cost."""
    B, K = batch_size, width
    device = next(decoder.parameters()).device
    expand = torch.arange(B, device=device).repeat_interleave(K)
    state = decoder.init_state(None if z is None else z[expand], B * K)
    track = constraint.init_state(B * K)
    scores = torch.full((B, K), _NEG_INF, device=device)
    scores[:, 0] = 0  # the K beams start identical: keep one until the first step branches
    tokens = torch.full((B * K,), BOS_ID, device=device)
    out = torch.full((B * K, steps), PAD_ID, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    for t in range(steps):
        logits, state = decoder.step(tokens, state)
        forced = constraint.forced(t, track)
        if forced is not None:
            logp = torch.full(logits.shape, _NEG_INF, device=device)
            logp[:, forced] = 0
        else:
            logp = F.log_softmax(logits + constraint.bias(t, track).dense(), dim=-1)  # (B K, V)
        logp[finished] = _NEG_INF
        logp[finished, PAD_ID] = 0
        scores, flat = (scores.view(-1, 1) + logp).view(B, -1).topk(K, dim=-1)  # (B, K) over K * V candidates
        index = (torch.arange(B, device=device)[:, None] * K + flat // logp.size(-1)).view(-1)
        tokens = (flat % logp.size(-1)).view(-1)
        state = decoder.reorder_state(state, index)
        track = constraint.update(t, tokens, constraint.reorder_state(track, index))
        out = out[index]
        out[:, t] = tokens
        finished = finished[index] | (tokens == EOS_ID)
        if finished.all():
            break
    best = torch.arange(B, device=device) * K + scores.argmax(dim=-1)
    return out[best]


def decode(model: TextVAE, z: torch.Tensor | None, n: int | None = None, *, decoding: Decoding = Decoding(),
           constraint: Constraint | str | None = None, batch_size: int = 1000, script: str | None = None) -> list[str]:
    """Texts decoded from latents z (B, D), or n texts from a model without a latent (z None), `batch_size`
    at a time (beam search: batch_size / K inputs at a time), under one constraint (a `poetry.Constraint`, or a
    form's name; None: free text). The texts are in the model's script unless `script`
    ("simplified" or "traditional") asks for the other."""
    check_script(script)
    if model.tokenizer is None:
        raise TextVAEError("the model has no tokenizer: decoding needs one to turn ids into text")
    if (z is None) == model.config.has_latent or (z is None and not n):
        raise TextVAEError("decode takes latents z (B, D) for a model with a latent, else n, the number of texts")
    z = None if z is None else _check_latents(model, z)
    n = z.size(0) if z is not None else n
    device = next(model.parameters()).device
    constraint = FreeText(model.tokenizer, device) if constraint is None else _default(model, constraint)
    where = torch.device(constraint.device)
    if where.type != device.type or where.index not in (None, device.index):
        raise TextVAEError(f"the constraint's masks are on {where} but the model is on {device}: "
                           "build the constraint with the model's device")
    steps = constraint.steps or decoding.max_tokens or model.config.max_len - 1
    if steps > model.config.max_len - 1:
        raise TextVAEError(f"{steps} output tokens requested but the model takes at most {model.config.max_len - 1}")
    chunk = max(1, batch_size // decoding.beam) if decoding.strategy == "beam" else batch_size
    dtype = DTYPES[resolve_precision(decoding.precision, device)]
    # bf16 decodes with a bf16 copy of the decoder (~1.6x faster on bf16 CPUs; the constraint's fp32 bias
    # hands fp32 logits to the sampling statistics): autocast would re-cast every weight at every step
    decoder = model.decoder if dtype == torch.float32 else copy.deepcopy(model.decoder).to(dtype)
    texts = []
    with torch.inference_mode():
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            zs = None if z is None else z[start:start + size].to(device, dtype)
            if decoding.strategy == "beam":
                ids = _decode_beam(decoder, zs, size, steps, decoding.beam, constraint)
            else:
                ids = _decode_stepwise(decoder, zs, size, steps, decoding, constraint)
            texts += [model.tokenizer.decode(row) for row in ids.tolist()]
    return in_script(texts, script, model.tokenizer)


def _check_latents(model: TextVAE, z) -> torch.Tensor:
    """z as (B, D): one latent (D,) becomes a batch of one; any other shape is refused, naming the one expected."""
    D = model.config.latent_dim
    if not isinstance(z, torch.Tensor):
        raise TextVAEError(f"z must be a tensor of shape (B, {D}), not {type(z).__name__}")
    z = z[None] if z.dim() == 1 else z
    if z.dim() != 2 or z.size(1) != D or not z.is_floating_point():
        raise TextVAEError(f"z must be a float tensor of shape (B, D) = (B, {D}) or ({D},), not "
                           f"{z.dtype} {tuple(z.shape)}")
    return z


def decode_each(model: TextVAE, z: torch.Tensor, constraints: list[Constraint], **options) -> list[str]:
    """decode with row i of z under constraints[i]; the rows that share a constraint decode together."""
    texts = [""] * len(constraints)
    for constraint in dict.fromkeys(constraints):  # distinct, in order of first use
        rows = [i for i, c in enumerate(constraints) if c is constraint]
        for i, text in zip(rows, decode(model, z[rows], constraint=constraint, **options)):
            texts[i] = text
    return texts


# -----------------------------------------------------------------------------
# the verbs


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> TextVAE:
    """A `save_pretrained` directory, checked to hold the tokenizer generation reads and writes text with."""
    model = TextVAE.from_pretrained(directory, device=device)
    if model.tokenizer is None:
        raise TextVAEError(f"{directory} has no tokenizer.model: generation needs it to read and write text")
    return model


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Seed every random draw inside, and leave the global random state as it was."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _check_count(name: str, value: int, low: int, high: int) -> None:
    """Counts are bounded so that the latents and the texts of one call fit in memory."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TextVAEError(f"{name} must be >= {low:,} and <= {high:,}, not {value!r}")


def _require_latent(model: TextVAE, verb: str) -> None:
    if model.head is None:
        raise TextVAEError(f"{verb} needs a latent variable, but this model is a plain language model "
                           "(posterior 'none'): only sampling works with it")


def _check_texts(model: TextVAE, texts: list[str]) -> list[str]:
    """The texts as the model reads them (stripped, in its script: see to_model_script), checked."""
    if isinstance(texts, str):
        raise TextVAEError("texts must be a list of strings, not one string (it would be read one character at a "
                           "time): pass [text]")
    odd = next((t for t in texts if not isinstance(t, str)), None)
    if odd is not None:
        raise TextVAEError(f"texts must be a list of strings, not a list holding {type(odd).__name__}")
    texts = [to_model_script(model.tokenizer, t.strip()) for t in texts]
    if not texts or not all(texts):
        raise TextVAEError("empty text: give a sentence or a poem")
    unknown = sorted({c for t in texts for c in model.tokenizer.unknown_characters(t)})
    if unknown:
        how = "as <unk>" if isinstance(model.tokenizer, WordTokenizer) else "as raw bytes the model has hardly seen"
        warnings.warn(f"not in the model's vocabulary, read {how}: {' '.join(unknown)}")
    return texts


def posterior(model: TextVAE, texts: list[str]):
    """q(z|x) for texts in either script, batch (B,), checked as `reconstruct` checks them."""
    _require_latent(model, "encoding")
    with torch.inference_mode():
        return _posterior(model, _check_texts(model, texts))


def _posterior(model: TextVAE, texts: list[str]):
    """q(z|x) for the checked texts, batch (B,); over-long texts are cut to what the model takes, with a warning."""
    ids = model.tokenizer.encode_batch(texts)
    limit = model.config.max_len - 2
    for text, seq in zip(texts, ids):
        if len(seq) > limit:
            warnings.warn(f"{text[:20]!r}... has {len(seq)} tokens; the model reads only the first {limit}")
    ids, mask = pad_batch(ids, model.config.max_len)
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model.encode(ids.to(device), mask.to(device))


def _default(model: TextVAE, constraint: Constraint | str | None) -> Constraint:
    """The constraint given (a form's name such as "7x4" stands for `constraint_for` that form), or the model's
    own: an automatic form for a poem model, free text otherwise."""
    if constraint is None or isinstance(constraint, str):
        return constraint_for(model.tokenizer, constraint, device=next(model.parameters()).device)
    if not isinstance(constraint, Constraint):
        raise TextVAEError(f"constraint must be a form's name ({', '.join(FORM_CHOICES)}) or a constraint object "
                           f"such as constraint_for(...) builds, not {type(constraint).__name__}")
    return constraint


def check_prior(model: TextVAE, prior: str) -> str:
    """The kind `prior` names for this model: auto is the model's default learned prior, else standard; aggregate
    is gmm. A kind the model has not fitted is refused."""
    kind = priors.canonical(prior)
    if kind == "auto":
        return model.default_prior or "standard"
    if kind != "standard" and kind not in model.priors:
        raise TextVAEError(f"this model has no {kind} prior: fit one with `textvae fit-prior MODEL --kind {kind}`, "
                           f"or sample from {' or '.join([*model.priors, 'standard'])} (--prior)")
    return kind


def check_prior_steps(steps: int | None) -> None:
    if steps is not None:
        _check_count("prior_steps", steps, 1, MAX_PRIOR_STEPS)


def prior_sample(model: TextVAE, n: int, prior: str = "auto", prior_steps: int | None = None,
                 form: str | None = None) -> torch.Tensor:
    """(n, D) draws of z from the model's prior: the learned one `prior` names (textvae.priors), given the form
    where one is fixed and the prior learned p(z | form), or the standard one (N(0, I), or uniform on the sphere
    for vMF). prior_steps: a diffusion prior's DDIM steps."""
    kind = check_prior(model, prior)
    if kind == "standard":
        return model.head.sample_prior(n)
    device = next(model.parameters()).device
    options = {} if kind != "diffusion" or prior_steps is None else dict(steps=prior_steps)
    return model.priors[kind].to(device).sample(n, condition=form, **options)


def sample(model: TextVAE, n: int = 10, *, decoding: Decoding = Decoding(strategy="sample"),
           constraint: Constraint | str | None = None, seed: int | None = None, batch_size: int = 1000,
           script: str | None = None, prior: str = "auto", prior_steps: int | None = None,
           steering: Steering = Steering()) -> list[str]:
    """n texts decoded from z ~ p(z) (`prior_sample`; prior_steps: a diffusion prior's DDIM steps), or with a
    `steering` from the prior tilted toward a poet, an era or a theme (textvae.steering); a model without a
    latent samples as a plain language model. Options as for `decode`; the constraint defaults to the model's
    own (`constraint_for`: a poem model writes regular poems of an automatic form); a fixed form also
    conditions a learned prior that knows forms."""
    _check_count("the number of samples", n, 1, MAX_OUTPUTS)
    constraint = _default(model, constraint)
    device = next(model.parameters()).device
    if model.head is not None:
        check_prior(model, prior)
        check_prior_steps(prior_steps)
    elif steering.active:
        raise TextVAEError("steering by poet, era or theme needs a latent: this model is a plain language model")
    wanted = steering.wanted(model) | _keyword_chars(model, constraint)
    with seeded(seed, device), torch.inference_mode():
        if model.head is None:
            z = None
        elif wanted:
            z = _steered(model, n, wanted, steering, prior, prior_steps, constraint.form)
        else:
            z = prior_sample(model, n, prior, prior_steps, constraint.form)
        return decode(model, z, n, decoding=decoding, constraint=constraint, batch_size=batch_size, script=script)


def _keyword_chars(model: TextVAE, constraint: Constraint) -> dict:
    """{"char": the keywords' character classes} where the model's attribute models read characters: sampling
    then tilts toward poems that hold the words, so the constraint that places them has little to force."""
    if not isinstance(constraint, Keywords) or model.attributes is None:
        return {}
    chars = model.attributes.chars("".join(model.tokenizer.id_to_piece(i) for word in constraint.words for i in word))
    return {"char": chars} if chars else {}


def _steered(model: TextVAE, n: int, wanted: dict, steering: Steering, prior: str, prior_steps: int | None,
             form: str | None) -> torch.Tensor:
    """n codes from the prior tilted by the attribute models (textvae.steering), Langevin steps after where asked."""
    z = tilted_codes(model, n, wanted, steering, lambda m: prior_sample(model, m, prior, prior_steps, form))
    if not steering.langevin_steps:
        return z
    kind = check_prior(model, prior)
    learned = model.priors.get(kind)
    if learned is not None and not learned.has_log_prob:
        raise TextVAEError(f"Langevin steps need a prior with a log-density, which the {kind} prior lacks: use "
                           "--prior gmm, flow or standard, or no Langevin steps")
    log_prior = learned.log_prob if learned is not None else (lambda point: model.prior(len(point)).log_prob(point))
    with torch.inference_mode(False):
        return langevin(model, z.clone(), wanted, steering.strength, log_prior, steering.langevin_steps)


def reconstruct(model: TextVAE, texts: list[str], *, n: int = 0, decoding: Decoding = Decoding(),
                constraint: Constraint | str | None = None, seed: int | None = None, batch_size: int = 1000,
                script: str | None = None) -> list[list[str]]:
    """For each text, [its decoding from the posterior mode q.mode] (μ; for vMF the mean direction, on the
    sphere), or with n = k the decodings of k draws z ~ q(z|x). The texts may be in either script. Each
    text decodes under `constraint.for_text(text)`: without a form of its own, a poem keeps its form."""
    _require_latent(model, "reconstruct")
    check_script(script)
    _check_count("n", n, 0, MAX_DRAWS)
    _check_count("texts x n", len(texts) * max(1, n), 1, MAX_OUTPUTS)
    texts = _check_texts(model, texts)
    fitted = [_default(model, constraint).for_text(t) for t in texts]
    device = next(model.parameters()).device
    with seeded(seed, device), torch.inference_mode():
        q = _posterior(model, texts)
        z = q.mode[None] if n == 0 else q.sample((n,))  # (S, B, D)
        k = z.size(0)
        flat = decode_each(model, z.transpose(0, 1).reshape(-1, z.size(-1)), [c for c in fitted for _ in range(k)],
                            decoding=decoding, batch_size=batch_size, script=script)
    return [flat[i * k:(i + 1) * k] for i in range(len(texts))]


def vary(model: TextVAE, text: str, n: int = 5, *, spread: float = DEFAULT_SPREAD, decoding: Decoding = Decoding(),
         constraint: Constraint | str | None = None, seed: int | None = None, batch_size: int = 1000,
         script: str | None = None) -> list[str]:
    """"Texts like this one": decodings of n draws z ~ q(z|text), each pulled towards the posterior mode by
    `spread`: z = mode + spread (draw - mode), put back on the sphere for vMF. spread 1 decodes q's own draws;
    a smaller one keeps more of the text (a high-rate model such as data/faithful needs about 0.5 to keep half
    its characters). A draw that decodes to the text itself is drawn again with its spread doubled, up to
    MAX_REDRAWS times, so that a variation is not the input verbatim. Other options as for reconstruct."""
    _require_latent(model, "vary")
    _check_count("the number of variations", n, 1, MAX_DRAWS)
    check_spread(spread)
    check_script(script)
    [text] = _check_texts(model, [text])
    fitted = _default(model, constraint).for_text(text)
    device = next(model.parameters()).device
    texts, todo = [None] * n, list(range(n))
    with seeded(seed, device), torch.inference_mode():
        q = _posterior(model, [text])
        for redraw in range(MAX_REDRAWS + 1):
            z = _pulled_draws(model, q, len(todo), spread * 2 ** redraw)  # (k, D)
            for i, out in zip(todo, decode_each(model, z, [fitted] * len(todo), decoding=decoding,
                                                batch_size=batch_size)):
                texts[i] = out
            todo = [i for i in todo if texts[i] == text]
            if not todo:
                break
    if todo:
        warnings.warn(f"{len(todo)} of {n} variations are the text itself after {MAX_REDRAWS} redraws: "
                      "the model hardly reads z")
    return in_script(texts, script, model.tokenizer)


def restyle(model: TextVAE, text: str, steering: Steering, *, decoding: Decoding = Decoding(),
            constraint: Constraint | str | None = None, seed: int | None = None, script: str | None = None,
            steps: int = 200, keep: float = KEEP_BONUS) -> str:
    """`text` rewritten toward the poet, era or theme `steering` asks for: its code z0 moves to the maximum of
    s log p(y|z) - ½‖(z - z0)/σ‖² (textvae.steering.restyled_code) and decodes in the text's own form, each of
    the text's characters raised by `keep` nats at its own place (Anchored)."""
    _require_latent(model, "restyle")
    if not steering.active:
        raise TextVAEError("restyle needs a target: give a poet (--like), an era (--era) or a theme (--theme)")
    wanted = steering.wanted(model)
    texts = _check_texts(model, [text])
    fitted = _default(model, constraint).for_text(texts[0])
    if keep:
        fitted = Anchored(fitted, model.tokenizer.encode(texts[0]), keep)
    with seeded(seed, next(model.parameters()).device):
        z0 = _posterior(model, texts).mode
        z = restyled_code(model, z0, wanted, steering.strength, steps)
        with torch.inference_mode():
            return decode_each(model, z, [fitted], decoding=decoding, script=script)[0]


def check_spread(spread: float) -> None:
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not 0 < spread <= MAX_SPREAD:
        raise TextVAEError(f"spread must be a number in (0, {MAX_SPREAD}], not {spread!r}")


def _pulled_draws(model: TextVAE, q, k: int, spread: float) -> torch.Tensor:
    """k draws from q (batch (1,)) moved towards its mode by `spread`: (k, D)."""
    mode = q.mode  # (1, D)
    z = mode + spread * (q.sample((k,))[:, 0] - mode)
    return F.normalize(z, dim=-1) if model.config.posterior == "vmf" else z


def latent_path(model: TextVAE, a: str | None = None, b: str | None = None, steps: int = 5,
                prior: str = "auto", path: str = DEFAULT_PATH) -> torch.Tensor:
    """(steps, D) points from z(a) to z(b), the posterior modes, walked as `path` says (PATHS); without a and b,
    between two prior samples."""
    _check_path(model, a, b, steps, prior, path)
    return _path(model, None if a is None else _check_texts(model, [a, b]), steps, prior, path=path)


def _check_path(model: TextVAE, a: str | None, b: str | None, steps: int, prior: str, path: str) -> None:
    _require_latent(model, "interpolate")
    if (a is None) != (b is None):
        raise TextVAEError("interpolate needs two texts, or none (to walk between two prior samples)")
    _check_count("steps", steps, 2, MAX_DRAWS)  # the two endpoints included
    check_prior(model, prior)
    if path not in PATHS:
        raise TextVAEError(f"path must be one of {', '.join(PATHS)}, not {path!r}")
    if path == "prior":
        walked_prior(model, prior)


def walked_prior(model: TextVAE, prior: str = "auto") -> str:
    """The learned prior whose coordinates `--path prior` walks: the one `prior` names, or with auto the default
    where it is a flow or diffusion prior, else the first of those the model has."""
    kind = check_prior(model, prior)
    if kind in WALKABLE:
        return kind
    if prior == "auto":
        kind = next((k for k in (model.default_prior, *WALKABLE) if k in WALKABLE and k in model.priors), None)
        if kind is not None:
            return kind
    has = f"the {kind} prior" if prior != "auto" else \
        f"this model's {' and '.join(model.priors)} prior" if model.priors else "this model, which has no learned prior"
    raise TextVAEError(f"path 'prior' walks the coordinates of a flow or diffusion prior, which {has} lacks: fit "
                       "one with `textvae fit-prior MODEL --kind flow`, or use path linear or slerp")


def _end_labels(prior, texts: list[str] | None, steps: int, device) -> torch.Tensor:
    """(steps,) the class each point is mapped with: A's form up to the midpoint, B's after it (as the points
    decode); the prior's commonest class where a text has no form it knows, or for two prior samples."""
    commonest = int(prior.class_log_probs.argmax()) if prior.classes else 0
    known = lambda form: prior.classes.index(form) if form in prior.classes else commonest  # noqa: E731
    ends = [commonest] * 2 if texts is None else [known(form_of(split_lines(t)) or "other") for t in texts]
    return torch.tensor([ends[2 * i > steps - 1] for i in range(steps)], device=device)


def _halves(line: str) -> list[str]:
    """A line cut at its caesura: 2 + 3 characters for five, 4 + 3 for seven (others in the middle)."""
    cut = {5: 2, 7: 4}.get(len(line), len(line) // 2)
    return [line[:cut], line[cut:]]


def crossing(a: str, b: str, k: int) -> str:
    """B's first k half-lines followed by A's others: poems of one form, in canonical punctuation."""
    pieces = [(x, y) for la, lb in zip(split_lines(a), split_lines(b)) for x, y in zip(_halves(la), _halves(lb))]
    halves = [y if i < k else x for i, (x, y) in enumerate(pieces)]
    return join_lines(["".join(halves[i:i + 2]) for i in range(0, len(halves), 2)])


def _crossing_codes(model: TextVAE, texts: list[str], steps: int) -> torch.Tensor | None:
    """(steps - 2, D) the posterior modes of evenly spaced crossings of two poems of one form, or None where the
    poems' forms differ (no crossing of theirs is a regular poem)."""
    a, b = texts
    lines = split_lines(a)
    form = form_of(lines)
    if form is None or form != form_of(split_lines(b)):
        return None
    count = 2 * len(lines)  # half-lines
    ks = [min(max(round(i * count / (steps - 1)), 1), count - 1) for i in range(1, steps - 1)]
    return _posterior(model, [crossing(a, b, k) for k in ks]).mode


def _walk(model: TextVAE, z0: torch.Tensor, z1: torch.Tensor, steps: int, path: str, prior: str,
          texts: list[str] | None, prior_steps: int | None) -> torch.Tensor:  # (D,), (D,) -> (steps, D)
    if path == "crossings" and texts is not None and steps > 2:
        middle = _crossing_codes(model, texts, steps)
        if middle is not None:
            return torch.cat([z0[None], middle, z1[None]])
    if path in ("linear", "crossings"):
        return model.head.interpolate(z0, z1, steps)
    if path == "slerp":
        return slerp(z0, z1, steps)
    kind = walked_prior(model, prior)
    walked = model.priors[kind].to(z0.device)
    options = dict(steps=prior_steps) if kind == "diffusion" and prior_steps is not None else {}
    labels = _end_labels(walked, texts, steps, z0.device)
    base = walked.to_base(torch.stack([z0, z1]), labels[[0, -1]], **options)  # (2, D)
    return walked.from_base(slerp(base[0], base[1], steps), labels, **options)


def _path(model: TextVAE, texts: list[str] | None, steps: int, prior: str, prior_steps: int | None = None,
          form: str | None = None, path: str = DEFAULT_PATH) -> torch.Tensor:
    with torch.inference_mode():
        z0, z1 = prior_sample(model, 2, prior, prior_steps, form) if texts is None else _posterior(model, texts).mode
        return _walk(model, z0, z1, steps, path, prior, texts, prior_steps)


def interpolate(model: TextVAE, a: str | None = None, b: str | None = None, *, steps: int = 5,
                decoding: Decoding = Decoding(), constraint: Constraint | str | None = None, seed: int | None = None,
                script: str | None = None, prior: str = "auto", prior_steps: int | None = None,
                path: str = DEFAULT_PATH) -> list[str]:
    """Decodings of the points of `latent_path(model, a, b, steps, path=path)`: the first and last are the
    reconstructions of a and b (with path prior through a diffusion prior, up to its inversion's error). The
    points up to the midpoint decode under `constraint.for_text(a)`, the rest under `constraint.for_text(b)`:
    without a form of their own, poems of two forms give A's form up to the midpoint and B's after it. Without a
    and b the path joins two draws from `prior`."""
    check_script(script)
    _check_path(model, a, b, steps, prior, path)
    check_prior_steps(prior_steps)
    constraint = _default(model, constraint)
    texts = None if a is None else _check_texts(model, [a, b])
    ends = [constraint] * 2 if texts is None else [constraint.for_text(t) for t in texts]
    device = next(model.parameters()).device
    with seeded(seed, device):
        points = _path(model, texts, steps, prior, prior_steps, constraint.form, path)
        return decode_each(model, points, [ends[2 * i > steps - 1] for i in range(steps)], decoding=decoding,
                            script=script)


__all__ = ["DEFAULT_FORM", "DEFAULT_PATH", "DEFAULT_SPREAD", "Decoding", "FORM_CHOICES", "FreeText", "MAX_SPREAD",
           "PATHS", "PRIORS", "STRATEGIES", "check_prior", "check_prior_steps", "check_rhyme", "check_spread",
           "constraint_for",
           "crossing", "decode", "interpolate", "latent_path", "load_model", "posterior", "prior_sample", "reconstruct",
           "sample", "seeded", "vary", "walked_prior"]
