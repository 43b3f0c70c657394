"""Generation: decoding strategies, poem-form constraints, and the verbs sample / reconstruct / interpolate / vary.

Decoding runs the decoder one token per step through its incremental state (init_state / step /
reorder_state), a whole batch at a time. Constraints only mask logits, so greedy, beam search and sampling
all obey them: with a form, each position admits a known set (a CJK character piece, exactly ，or 。 at a
line end, EOS after the last 。), an acrostic pins a line's first character, and rhyme steering narrows the
last character of every even line to one 平水韻 group. Input may be in simplified or traditional characters:
OpenCC converts what the vocabulary lacks into the model's script; output is in that script unless asked.
Shapes: B batch, K beam width, V vocab, D latent, T output tokens.
References: Bowman et al. 2016 (decoding prior samples, homotopies between sentences); Fan et al. 2018
(top-k sampling); Holtzman et al. 2020 (nucleus, top-p, sampling); White 2016 (slerp for latent paths).
"""

import contextlib
import copy
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from textvae.corpus.poems import FORMS, form_of, is_cjk, split_lines
from textvae.data import pad_batch
from textvae.errors import TextVAEError
from textvae.fields import check_choice, check_float, check_int, setting
from textvae.precision import DTYPES, PRECISION_HELP, check_precision, resolve_precision
from textvae.rhyme import LEVEL, find_group, rhyme_groups, rhyme_table, tone_of
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from textvae.vae import TextVAE

STRATEGIES = ("greedy", "beam", "sample")
MAX_OUTPUTS = 1_000_000  # texts from one call: its latents and texts stay within a few hundred MB
MAX_DRAWS = 10_000  # draws per text (reconstruct --samples, vary -n) and points on a path
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


# -----------------------------------------------------------------------------
# scripts: simplified and traditional characters

SCRIPTS = {"simplified": "t2s", "traditional": "s2t"}  # a script, and the OpenCC conversion into it


@functools.cache
def _opencc(conversion: str):
    import opencc  # imported on first use: its dictionaries take a moment to load
    return opencc.OpenCC(conversion)


def _changed(chars: list[str], conversion: str) -> int:
    """How many of the characters an OpenCC conversion changes, each read alone."""
    converted = _opencc(conversion).convert("\n".join(chars)).split("\n")  # one a line: no phrase spans two
    return sum(a != b for a, b in zip(chars, converted))


@functools.lru_cache(maxsize=8)
def model_script(tokenizer: Tokenizer) -> str | None:
    """The script a model writes: "traditional" when t2s would change more of its vocabulary's one-character
    CJK pieces (characters only traditional writing uses) than s2t would (simplified-only ones), "simplified"
    when fewer, None when as many (no Chinese). Detected from the vocabulary rather than recorded at training
    time, so that every model has one, those saved before included, and a vocabulary mixing both gets the
    script it holds more of (data/pretrained: t2s changes 2,362 of its characters, s2t 242, variants such as
    床 -> 牀 among them)."""
    chars = [tokenizer.id_to_piece(i) for i in _cjk_mask(tokenizer).nonzero()[:, 0].tolist()]
    traditional, simplified = _changed(chars, "t2s"), _changed(chars, "s2t")
    return None if traditional == simplified else "traditional" if traditional > simplified else "simplified"


def check_script(script: str | None) -> None:
    if script is not None and script not in SCRIPTS:
        raise TextVAEError(f"script must be {' or '.join(SCRIPTS)} (or None: the model's own), not {script!r}")


def to_model_script(tokenizer: Tokenizer, text: str) -> str:
    """`text` with each character the vocabulary lacks replaced by its form in the model's script when the
    vocabulary has that (a traditional model reads 举头 as 舉頭); characters it has stay as typed (s2t would
    turn 床 into the variant 牀, which a model trained on 床 has hardly seen)."""
    script, unknown = model_script(tokenizer), set(tokenizer.unknown_characters(text))
    if script is None or not unknown:
        return text
    convert = _opencc(SCRIPTS[script]).convert
    converted = convert(text)  # the whole text: its phrases pick between candidates (发 -> 發 or 髮)
    if len(converted) != len(text):  # OpenCC's s2t and t2s tables keep lengths; were one not to, stay aligned
        converted = "".join(convert(c) for c in text)
    return "".join(new if old in unknown and tokenizer.piece_to_id(new) != UNK_ID else old
                   for old, new in zip(text, converted))


def _in_script(texts: list[str], script: str | None, tokenizer: Tokenizer) -> list[str]:
    """Decoded texts, converted when a script is asked for that the model does not write."""
    if script is None or script == model_script(tokenizer):
        return texts
    return [_opencc(SCRIPTS[script]).convert(t) for t in texts]


# -----------------------------------------------------------------------------
# poem-form constraints


@functools.lru_cache(maxsize=8)
def _cjk_mask(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) True for the pieces that are one CJK character: no bytes, specials, space or punctuation."""
    return torch.tensor([not tokenizer.is_byte(i) and len(p := tokenizer.id_to_piece(i)) == 1 and is_cjk(p)
                         for i in range(tokenizer.vocab_size)])


@functools.lru_cache(maxsize=8)
def _rhyme_masks(tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(G + 1, V) membership of each vocabulary character in the G rhyme groups, whose last row is every
    CJK piece (the "no group" fallback, so that group -1 indexes it), and (V,) the first level-tone group
    of each piece (-1: none)."""
    names, cjk = list(rhyme_table()), _cjk_mask(tokenizer)
    members = torch.zeros(len(names) + 1, tokenizer.vocab_size, dtype=torch.bool)
    first_level = torch.full((tokenizer.vocab_size,), -1)
    for i in cjk.nonzero()[:, 0].tolist():
        groups = sorted(names.index(g) for g in rhyme_groups(tokenizer.id_to_piece(i)))
        members[groups, i] = True
        first_level[i] = next((g for g in groups if tone_of(names[g]) == LEVEL), -1)
    members[-1] = cjk
    return members, first_level


def _first_nonempty(*masks: torch.Tensor) -> torch.Tensor:
    """Per row, the first of the (B, V) masks that allows anything: a constraint relaxes, never deadlocks."""
    out = masks[-1]
    for mask in reversed(masks[:-1]):
        out = torch.where(mask.any(dim=-1, keepdim=True), mask, out)
    return out


def _bias(allowed: torch.Tensor) -> torch.Tensor:
    """A mask as an additive fp32 logit bias, 0 or -inf: on CPU adding it costs a quarter of a masked_fill
    with a broadcast mask, and it turns bf16 logits into fp32 for the softmax on the way."""
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill_(~allowed, _NEG_INF)


def resolve_form(form: str | None, acrostic: str = "", rhyme: str | None = None) -> str | None:
    """The form to decode in. An acrostic or rhyme steering without a form gets 7-character lines, the
    corpus's most common, and 4 lines (or one per acrostic character)."""
    if form is not None and form not in FORMS:
        raise TextVAEError(f"form must be one of {', '.join(FORMS)} (characters x lines), not {form!r}")
    if acrostic:
        lines = int(form.split("x")[1]) if form else len(acrostic)
        if len(acrostic) != lines:
            raise TextVAEError(f"the acrostic {acrostic!r} has {len(acrostic)} characters but a {form} poem has "
                               f"{lines} lines: give one character per line")
        if lines not in (4, 8):
            raise TextVAEError(f"the acrostic {acrostic!r} has {len(acrostic)} characters but a poem has 4 or 8 "
                               "lines: give one character per line")
        return form or f"7x{lines}"
    return form or ("7x4" if rhyme is not None else None)


class PoemForm:
    """
    Logit biases that make every output a poem of one form, for one tokenizer. Position t of the output
    (0-based, line i = t // (c + 1) for c characters per line) admits a CJK piece, or exactly ，/。 at a
    line end, or EOS at the end. Rhyme steering ("auto": the level-tone group line 2 ends in, whose last
    character is then drawn from level-tone characters; "random": a random level-tone group per poem; or a
    group / a character in it, see rhyme.find_group) narrows the last character of each even line, avoiding
    rhyme characters already used. The per-batch state, like the decoders', is a dict {"group": (B,) rhyme
    group index (-1: none yet), "rhymes": (B, r) rhyme characters so far}, or None without rhyme steering.
    """

    def __init__(self, tokenizer: Tokenizer, form: str | None, acrostic: str = "", rhyme: str | None = None,
                 device: str | torch.device = "cpu"):
        self.form, self.rhyme = resolve_form(form, acrostic, rhyme), rhyme
        self.chars, self.lines = (int(x) for x in self.form.split("x"))
        self.length = self.lines * (self.chars + 1) + 1  # T: characters, punctuation, EOS
        self.cjk = _cjk_mask(tokenizer).to(device)
        self.cjk_bias = _bias(self.cjk)
        self.forced = self._forced_tokens(tokenizer, acrostic)
        self.rhyme_positions = [i * (self.chars + 1) + self.chars - 1 for i in range(1, self.lines, 2)]
        if rhyme is not None:
            self._setup_rhyme(tokenizer, rhyme, device)

    def _forced_tokens(self, tokenizer: Tokenizer, acrostic: str) -> dict[int, int]:
        forced = {self.length - 1: EOS_ID}
        for mark in "，。":
            if tokenizer.piece_to_id(mark) == UNK_ID:
                raise TextVAEError(f"the tokenizer has no piece for {mark}: form-constrained decoding needs "
                                   "a poem tokenizer (`textvae prepare poems`)")
        for line in range(self.lines):
            forced[line * (self.chars + 1) + self.chars] = tokenizer.piece_to_id("，" if line % 2 == 0 else "。")
        for line, char in enumerate(to_model_script(tokenizer, acrostic)):
            i = tokenizer.piece_to_id(char)
            if i == UNK_ID or not self.cjk[i]:
                raise TextVAEError(f"the acrostic character {char!r} is not a Chinese character in this model's "
                                   "vocabulary (is the model traditional and the acrostic simplified, or the "
                                   "other way round?)")
            forced[line * (self.chars + 1)] = i
        return forced

    def _setup_rhyme(self, tokenizer: Tokenizer, rhyme: str, device) -> None:
        members, first_level = _rhyme_masks(tokenizer)
        self.members, self.first_level = members.to(device), first_level.to(device)
        names = list(rhyme_table())
        usable = members[:-1].any(dim=1)
        self.level_groups = torch.tensor([g for g, n in enumerate(names) if tone_of(n) == LEVEL and usable[g]],
                                         dtype=torch.long, device=device)
        self.group = None if rhyme in ("auto", "random") else names.index(find_group(rhyme))
        if self.group is not None and not usable[self.group]:
            warnings.warn(f"no character of the rhyme group {names[self.group]} is in this model's vocabulary; "
                          "the rhymes are left to the model")
        if not self.level_groups.numel():
            warnings.warn("no level-tone rhyme character is in this model's vocabulary; rhymes are left to "
                          "the model")

    def init_state(self, batch_size: int) -> dict | None:
        if self.rhyme is None:
            return None
        device = self.cjk.device
        group = torch.full((batch_size,), -1 if self.group is None else self.group, device=device)
        if self.rhyme == "random" and self.level_groups.numel():
            group = self.level_groups[torch.randint(len(self.level_groups), (batch_size,), device=device)]
        return {"group": group, "rhymes": torch.empty(batch_size, 0, dtype=torch.long, device=device)}

    def bias(self, t: int, state: dict | None) -> int | torch.Tensor:
        """The one token forced at position t, or the logit bias of the allowed ones (0, else -inf), (V,)
        or (B, V)."""
        if t in self.forced:
            return self.forced[t]
        if state is None or t not in self.rhyme_positions:
            return self.cjk_bias
        if self.rhyme == "auto" and t == self.rhyme_positions[0]:
            return _bias(_first_nonempty((self.first_level >= 0)[None], self.cjk[None])[0])
        in_group = self.members[state["group"]]  # (B, V); group -1 is the all-CJK row
        fresh = in_group.scatter(1, state["rhymes"], False)
        return _bias(_first_nonempty(fresh, in_group, self.cjk.expand_as(in_group)))

    def update(self, t: int, tokens: torch.Tensor, state: dict | None) -> dict | None:
        if state is None or t not in self.rhyme_positions:
            return state
        group = state["group"]
        if self.rhyme == "auto" and t == self.rhyme_positions[0]:
            group = self.first_level[tokens]
        return {"group": group, "rhymes": torch.cat([state["rhymes"], tokens[:, None]], dim=1)}

    def reorder_state(self, state: dict | None, index: torch.Tensor) -> dict | None:
        return None if state is None else {k: v[index] for k, v in state.items()}


# -----------------------------------------------------------------------------
# strategies and decoding loops


def _draw(weights: torch.Tensor) -> torch.Tensor:
    """One index per row of (B, N) nonnegative weights by inverse CDF, from one uniform each."""
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:]
    # u < total strictly, so the first cdf entry above u exists, and its weight is > 0
    u = (torch.rand_like(total) * total).minimum(total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True)[:, 0]


def _inverse_cdf(probs: torch.Tensor, block: int = 64) -> torch.Tensor:
    """One draw per row of (B, V) unnormalised probabilities: a block of `block` tokens by its mass, then
    a token within it. Exact, and on CPU about 10x cheaper than torch.multinomial or Gumbel noise over the
    vocabulary; the two levels replace a sequential V-long cumsum by a vectorised sum."""
    B, V = probs.shape
    blocks = (F.pad(probs, (0, -V % block)) if V % block else probs).view(B, -1, block)  # padding: p = 0
    first = _draw(blocks.sum(dim=-1))  # (B,)
    return first * block + _draw(blocks[torch.arange(B, device=probs.device), first])


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, _NEG_INF)
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the tokens before these already hold top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), _NEG_INF)
    return logits


def _choose(logits: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """(B, V) masked logits -> (B,) next tokens, greedily or by sampling."""
    if decoding.strategy == "greedy":
        return logits.max(dim=-1).indices  # several times faster than argmax on CPU, bf16 especially
    if decoding.temperature != 1 or decoding.top_k or decoding.top_p < 1:
        logits = _filter_top_k_top_p(logits / decoding.temperature, decoding.top_k, decoding.top_p)
    return _inverse_cdf(torch.softmax(logits, dim=-1))


def _mask(t: int, logits: torch.Tensor, poem: PoemForm | None, track) -> torch.Tensor | int:
    """fp32 logits with the disallowed tokens at -inf, or the forced token."""
    if poem is None:  # free form: the model decides, but never pad/bos/unk, nor an empty output
        banned = [PAD_ID, BOS_ID, UNK_ID] + ([EOS_ID] if t == 0 else [])
        return logits.float().index_fill_(-1, torch.tensor(banned, device=logits.device), _NEG_INF)
    bias = poem.bias(t, track)
    return bias if isinstance(bias, int) else logits + bias


def _decode_stepwise(decoder, z, batch_size: int, steps: int, decoding: Decoding, poem) -> torch.Tensor:
    """Greedy or sampled decoding -> (B, T) token ids, PAD after EOS. Finished rows leave the batch."""
    device = next(decoder.parameters()).device
    state, track = decoder.init_state(z, batch_size), poem.init_state(batch_size) if poem else None
    rows = torch.arange(batch_size, device=device)  # the output row of each live row
    tokens = torch.full((batch_size,), BOS_ID, device=device)
    out = torch.full((batch_size, steps), PAD_ID, device=device)
    for t in range(steps):
        features, state = decoder.advance(tokens, state)
        forced = poem.forced.get(t) if poem else None
        if forced is not None:  # no output layer where the form fixes the token
            tokens = torch.full_like(tokens, forced)
        else:
            tokens = _choose(_mask(t, decoder.output(features), poem, track), decoding)
        track = poem.update(t, tokens, track) if poem else None
        out[rows, t] = tokens
        done = tokens == EOS_ID
        if done.any():
            keep = (~done).nonzero()[:, 0]
            if not keep.numel():
                break
            rows, tokens = rows[keep], tokens[keep]
            state = decoder.reorder_state(state, keep)
            track = poem.reorder_state(track, keep) if poem else None
    return out


def _decode_beam(decoder, z, batch_size: int, steps: int, width: int, poem) -> torch.Tensor:
    """Beam search -> (B, T) the best of K hypotheses per row by total log-probability under the constrained
    (renormalised) distribution. A finished hypothesis stays in its beam, extended by PAD at no cost."""
    B, K = batch_size, width
    device = next(decoder.parameters()).device
    expand = torch.arange(B, device=device).repeat_interleave(K)
    state = decoder.init_state(None if z is None else z[expand], B * K)
    track = poem.init_state(B * K) if poem else None
    scores = torch.full((B, K), _NEG_INF, device=device)
    scores[:, 0] = 0  # the K beams start identical: keep one until the first step branches
    tokens = torch.full((B * K,), BOS_ID, device=device)
    out = torch.full((B * K, steps), PAD_ID, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    for t in range(steps):
        logits, state = decoder.step(tokens, state)
        masked = _mask(t, logits, poem, track)
        if isinstance(masked, int):
            logp = torch.full(logits.shape, _NEG_INF, device=device)
            logp[:, masked] = 0
        else:
            logp = F.log_softmax(masked, dim=-1)  # (B K, V)
        logp[finished] = _NEG_INF
        logp[finished, PAD_ID] = 0
        scores, flat = (scores.view(-1, 1) + logp).view(B, -1).topk(K, dim=-1)  # (B, K) over K * V candidates
        index = (torch.arange(B, device=device)[:, None] * K + flat // logp.size(-1)).view(-1)
        tokens = (flat % logp.size(-1)).view(-1)
        state = decoder.reorder_state(state, index)
        track = poem.update(t, tokens, poem.reorder_state(track, index)) if poem else None
        out = out[index]
        out[:, t] = tokens
        finished = finished[index] | (tokens == EOS_ID)
        if finished.all():
            break
    best = torch.arange(B, device=device) * K + scores.argmax(dim=-1)
    return out[best]


def decode(model: TextVAE, z: torch.Tensor | None, n: int | None = None, *, decoding: Decoding = Decoding(),
           form: str | None = None, acrostic: str = "", rhyme: str | None = None,
           batch_size: int = 1000, script: str | None = None) -> list[str]:
    """Texts decoded from latents z (B, D), or n texts from a model without a latent (z None), `batch_size`
    at a time (beam search: batch_size / K inputs at a time). With a form, an acrostic or rhyme steering,
    every text is a poem: see PoemForm and resolve_form. The texts are in the model's script unless `script`
    ("simplified" or "traditional") asks for the other."""
    check_script(script)
    if model.tokenizer is None:
        raise TextVAEError("the model has no tokenizer: decoding needs one to turn ids into text")
    if (z is None) == model.config.has_latent or (z is None and not n):
        raise TextVAEError("decode takes latents z (B, D) for a model with a latent, else n, the number of texts")
    n = z.size(0) if z is not None else n
    poem = None
    device = next(model.parameters()).device
    if resolve_form(form, acrostic, rhyme) is not None:
        poem = PoemForm(model.tokenizer, form, acrostic, rhyme, device=device)
    steps = poem.length if poem else decoding.max_tokens or model.config.max_len - 1
    if steps > model.config.max_len - 1:
        raise TextVAEError(f"{steps} output tokens requested but the model takes at most {model.config.max_len - 1}")
    chunk = max(1, batch_size // decoding.beam) if decoding.strategy == "beam" else batch_size
    dtype = DTYPES[resolve_precision(decoding.precision, device)]
    # bf16 decodes with a bf16 copy of the decoder (~1.6x faster on bf16 CPUs; _mask hands fp32 logits to the
    # sampling statistics): autocast would re-cast every weight at every step
    decoder = model.decoder if dtype == torch.float32 else copy.deepcopy(model.decoder).to(dtype)
    texts = []
    with torch.inference_mode():
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            zs = None if z is None else z[start:start + size].to(device, dtype)
            if decoding.strategy == "beam":
                ids = _decode_beam(decoder, zs, size, steps, decoding.beam, poem)
            else:
                ids = _decode_stepwise(decoder, zs, size, steps, decoding, poem)
            texts += [model.tokenizer.decode(row) for row in ids.tolist()]
    return _in_script(texts, script, model.tokenizer)


# -----------------------------------------------------------------------------
# the verbs


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> TextVAE:
    """A `save_pretrained` directory, checked to hold the tokenizer generation reads and writes text with."""
    model = TextVAE.from_pretrained(directory, device=device)
    if model.tokenizer is None:
        raise TextVAEError(f"{directory} has no tokenizer.model: generation needs it to read and write text")
    return model


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
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


def _check_texts(model: TextVAE, texts: list[str], form: str | None) -> list[str]:
    """The texts as the model reads them (stripped, in its script: see to_model_script), checked."""
    texts = [to_model_script(model.tokenizer, t.strip()) for t in texts]
    if not texts or not all(texts):
        raise TextVAEError("empty text: give a sentence or a poem")
    for text in texts:
        lines = split_lines(text)
        if form is not None and form_of(lines) != form:
            raise TextVAEError(f"{text!r} does not fit the form {form} ({FORMS[form]}: {form[-1]} lines of "
                               f"{form[0]} characters); it has {len(lines)} lines of "
                               f"{', '.join(str(len(line)) for line in lines) or 'no'} characters")
    unknown = sorted({c for t in texts for c in model.tokenizer.unknown_characters(t)})
    if unknown:
        warnings.warn(f"not in the model's vocabulary, read as raw bytes the model has hardly seen: "
                      f"{' '.join(unknown)}")
    return texts


def _posterior(model: TextVAE, texts: list[str], form: str | None):
    """q(z|x) for the texts, batch (B,); over-long texts are cut to what the model takes, with a warning."""
    texts = _check_texts(model, texts, form)
    ids = model.tokenizer.encode_batch(texts)
    limit = model.config.max_len - 2
    for text, seq in zip(texts, ids):
        if len(seq) > limit:
            warnings.warn(f"{text[:20]!r}... has {len(seq)} tokens; the model reads only the first {limit}")
    ids, mask = pad_batch(ids, model.config.max_len)
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model.encode(ids.to(device), mask.to(device))


def sample(model: TextVAE, n: int = 10, *, decoding: Decoding = Decoding(strategy="sample"), form: str | None = None,
           acrostic: str = "", rhyme: str | None = None, seed: int | None = None, batch_size: int = 1000,
           script: str | None = None) -> list[str]:
    """n texts decoded from z ~ p(z) (N(0, I), or uniform on the sphere for vMF); a model without a
    latent samples as a plain language model. Options as for `decode`."""
    _check_count("the number of samples", n, 1, MAX_OUTPUTS)
    device = next(model.parameters()).device
    with _seeded(seed, device), torch.inference_mode():
        z = model.head.sample_prior(n) if model.head is not None else None
        return decode(model, z, n, decoding=decoding, form=form, acrostic=acrostic, rhyme=rhyme,
                      batch_size=batch_size, script=script)


def reconstruct(model: TextVAE, texts: list[str], *, samples: int = 0, decoding: Decoding = Decoding(),
                form: str | None = None, acrostic: str = "", rhyme: str | None = None, seed: int | None = None,
                batch_size: int = 1000, script: str | None = None) -> list[list[str]]:
    """For each text, [its decoding from the posterior mode q.mode] (μ; for vMF the mean direction, on the
    sphere), or with samples = k the decodings of k draws z ~ q(z|x). The texts may be in either script."""
    _require_latent(model, "reconstruct")
    check_script(script)
    _check_count("samples", samples, 0, MAX_DRAWS)
    _check_count("texts x samples", len(texts) * max(1, samples), 1, MAX_OUTPUTS)
    device = next(model.parameters()).device
    with _seeded(seed, device), torch.inference_mode():
        q = _posterior(model, texts, form)
        z = q.mode[None] if samples == 0 else q.sample((samples,))  # (S, B, D)
        k = z.size(0)
        flat = decode(model, z.transpose(0, 1).reshape(-1, z.size(-1)), decoding=decoding, form=form,
                      acrostic=acrostic, rhyme=rhyme, batch_size=batch_size, script=script)
    return [flat[i * k:(i + 1) * k] for i in range(len(texts))]


def vary(model: TextVAE, text: str, n: int = 5, **options) -> list[str]:
    """"Texts like this one": decodings of n draws from q(z|text). Options as for reconstruct."""
    _require_latent(model, "vary")
    _check_count("the number of variations", n, 1, MAX_DRAWS)
    return reconstruct(model, [text], samples=n, **options)[0]


def latent_path(model: TextVAE, a: str | None = None, b: str | None = None, steps: int = 5,
                form: str | None = None) -> torch.Tensor:
    """(steps, D) evenly spaced points from z(a) to z(b), the posterior modes, on a straight line for
    Gaussian posteriors and along the great circle for vMF; without a and b, between two prior samples."""
    _require_latent(model, "interpolate")
    if (a is None) != (b is None):
        raise TextVAEError("interpolate needs two texts, or none (to walk between two prior samples)")
    _check_count("steps", steps, 2, MAX_DRAWS)  # the two endpoints included
    with torch.inference_mode():
        z0, z1 = model.head.sample_prior(2) if a is None else _posterior(model, [a, b], form).mode
        return model.head.interpolate(z0, z1, steps)


def interpolate(model: TextVAE, a: str | None = None, b: str | None = None, *, steps: int = 5,
                decoding: Decoding = Decoding(), form: str | None = None, acrostic: str = "",
                rhyme: str | None = None, seed: int | None = None, script: str | None = None) -> list[str]:
    """Decodings of the points of `latent_path(model, a, b, steps)`: the first and last are the
    reconstructions of a and b."""
    check_script(script)
    device = next(model.parameters()).device
    with _seeded(seed, device):
        path = latent_path(model, a, b, steps, form)
        return decode(model, path, decoding=decoding, form=form, acrostic=acrostic, rhyme=rhyme, script=script)


__all__ = ["Decoding", "PoemForm", "SCRIPTS", "STRATEGIES", "check_script", "decode", "interpolate", "latent_path",
           "load_model", "model_script", "reconstruct", "resolve_form", "sample", "to_model_script", "vary"]
