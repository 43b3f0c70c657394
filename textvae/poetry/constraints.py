"""Decoding constraints that make every output a poem: its form (given, or chosen as it is written), an
acrostic, 平水韻 rhyme steering and meter (格律) steering, all in one object, `Verse`.

Constraints only mask logits, so every decoding strategy obeys them. `Constraint` is the protocol the decoding
loops (textvae.generate) call; generate.FreeText follows it too. Its state is per-row tensors in a dict (or
None), carried beside the decoder's own generation state. Shapes: B rows, V vocabulary, G rhyme groups, S slot
kinds.
"""

import functools
import warnings
from collections import Counter
from typing import NamedTuple, Protocol, runtime_checkable

import torch

from textvae.errors import TextVAEError
from textvae.poetry.forms import FORMS, MARKS, cjk_mask, form_of, split_lines
from textvae.poetry.rhyme import LEVEL, OBLIQUE, find_group, rhyme_groups, rhyme_table, tone_of
from textvae.poetry.writing import to_model_script
from textvae.poetry.tones import fixed_tones
from textvae.tokenizer import EOS_ID, PAD_ID, UNK_ID, Tokenizer

_NEG_INF = float("-inf")
LINE_COUNTS = (4, 8)
LINE_LENGTHS = (5, 7)
TONES = (None, LEVEL, OBLIQUE)  # a position's required tone, by index: free, 平, 仄
# what a step may write, by slot kind; an acrostic line's first character is slot _ACROSTIC + line
_CHAR, _COMMA, _PERIOD, _EOS, _CHAR_OR_COMMA, _ACROSTIC = range(6)
# the rules at a rhyme position, strongest first: relaxation drops the weakest it must (see _relax)
RELAXATION_ORDER = ("rhyme", "meter", "rhyme repeat")
# poems per form in the chinese-poetry corpus as `textvae prepare poems` keeps it (data/poems/manifest.json)
CORPUS_FORMS = {"5x4": 17_269, "7x4": 83_461, "5x8": 60_800, "7x8": 68_781}


ConstraintState = dict[str, torch.Tensor] | None  # per-row tensors, each (B, ...); None for a stateless one


class Bias(NamedTuple):
    """The logit bias of one step for B rows, each distinct row stored once: row b's (V,) bias is
    table[index[b]]; without an index, table[b], or table[0] for every row when the table has one row. Rows
    sharing a bias share its statistics (the band-first draw of textvae.sampling reads them per table row)."""

    table: torch.Tensor  # (M, V) fp32: 0 where a token is allowed, -inf where not, other values add nats
    index: torch.Tensor | None = None  # (B,) long

    def dense(self) -> torch.Tensor:
        """(B, V), or (1, V) where one row serves every row: the bias to add to logits."""
        return self.table if self.index is None else self.table[self.index]

    def row_index(self, batch_size: int) -> torch.Tensor:
        """(B,) the table row of each row."""
        if self.index is not None:
            return self.index
        if len(self.table) == 1:
            return torch.zeros(batch_size, dtype=torch.long, device=self.table.device)
        return torch.arange(batch_size, device=self.table.device)

    def shift(self, column: int, nats: float) -> "Bias":
        """The bias with `nats` added to one column of every row (-inf stays -inf)."""
        table = self.table.clone()
        table[:, column] += nats
        return Bias(table, self.index)


@runtime_checkable
class Constraint(Protocol):
    """What the decoding loops read and call on a constraint, step t = 0, 1, ... of B rows."""

    steps: int | None  # the most output tokens (EOS included), or None for the decoding's own limit
    device: torch.device  # where its biases are: the model's device
    form: str | None  # the form every output has (a learned prior conditions on it), or None
    relaxed: Counter  # positions at which each rule gave way so far, over every row decoded

    def init_state(self, batch_size: int) -> ConstraintState:
        """The state before the first step."""

    def forced(self, t: int, state: ConstraintState) -> int | None:
        """The one token every row takes at step t (the decoder's output layer is skipped), or None."""

    def bias(self, t: int, state: ConstraintState) -> Bias:
        """The logit bias of each row at step t: 0 where a token is allowed, -inf elsewhere."""

    def update(self, t: int, tokens: torch.Tensor, state: ConstraintState) -> ConstraintState:
        """The state after the tokens (B,) of step t are chosen."""

    def reorder_state(self, state: ConstraintState, index: torch.Tensor) -> ConstraintState:
        """The state of the rows `index` (beam search, finished rows leaving)."""

    def for_text(self, text: str) -> "Constraint":
        """The constraint to decode a text's latent under (a poem keeps its form)."""


def _bias(allowed: torch.Tensor) -> torch.Tensor:
    """A mask as an additive fp32 logit bias, 0 or -inf: on CPU adding it costs a quarter of a masked_fill
    with a broadcast mask, and it turns bf16 logits into fp32 for the softmax on the way."""
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill_(~allowed, _NEG_INF)


def is_verse_vocabulary(tokenizer: Tokenizer) -> bool:
    """Whether a vocabulary can write poems: pieces for ，and 。and for Chinese characters."""
    return all(tokenizer.piece_to_id(m) != UNK_ID for m in MARKS) and bool(cjk_mask(tokenizer).any())


@functools.lru_cache(maxsize=8)
def rhyme_masks(tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(G + 1, V) membership of each vocabulary character in the G rhyme groups, whose last row is every
    CJK piece (the "no group" fallback, so that group -1 indexes it), and (V,) the first level-tone group
    of each piece (-1: none)."""
    names, cjk = list(rhyme_table()), cjk_mask(tokenizer)
    members = torch.zeros(len(names) + 1, tokenizer.vocab_size, dtype=torch.bool)
    first_level = torch.full((tokenizer.vocab_size,), -1)
    for i in cjk.nonzero()[:, 0].tolist():
        groups = sorted(names.index(g) for g in rhyme_groups(tokenizer.id_to_piece(i)))
        members[groups, i] = True
        first_level[i] = next((g for g in groups if tone_of(names[g]) == LEVEL), -1)
    members[-1] = cjk
    return members, first_level


@functools.lru_cache(maxsize=8)
def tone_masks(tokenizer: Tokenizer) -> torch.Tensor:
    """(3, V): row k allows the pieces that may stand where TONES[k] is required: anything (free), or a
    character one of whose readings has that tone (多音字 fit both), or a piece that is no character (line
    ends are not the meter's business). Characters of unknown tone fit neither 平 nor 仄."""
    members, _ = rhyme_masks(tokenizer)
    level = torch.tensor([tone_of(g) == LEVEL for g in rhyme_table()])
    other = ~cjk_mask(tokenizer)
    return torch.stack([torch.ones_like(other), other | members[:-1][level].any(0),
                        other | members[:-1][~level].any(0)])


def _relax(base: torch.Tensor, rules: list[tuple[str, torch.Tensor]], relaxed: Counter) -> torch.Tensor:
    """(R, V) allowed tokens under `base` and the rules [(name, (R, V) or (V,) mask)], strongest first. A
    row where all of them leave nothing gets the largest subset in lexicographic order of strength (drop
    the weakest; if still nothing, the next weakest but keep the weakest; ...), down to `base` alone; the
    rules dropped are counted in `relaxed`. Constraints relax, never deadlock."""
    n = len(rules)
    out = need = None
    for keep in range(2 ** n - 1, -1, -1):  # bit n-1-i keeps rule i: the strongest rule is the top bit
        kept = [i for i in range(n) if keep >> (n - 1 - i) & 1]
        mask = base
        for i in kept:
            mask = mask & rules[i][1]
        if out is None:
            out = mask.clone()
            need = ~out.any(dim=-1)
        else:
            take = need & mask.any(dim=-1)
            out[take] = mask.expand_as(out)[take]
            for i in set(range(n)) - set(kept):
                relaxed[rules[i][0]] += int(take.sum())
            need &= ~take
        if not need.any():
            break
    return out


class Verse:
    """
    Logit biases that make every output a regular poem, for one tokenizer: a `Constraint`.

    Form: "5x4", "7x4", "5x8" or "7x8", or None for an automatic one: the model picks the line length as it
    writes (the first line's ，is allowed only after 5 characters, and forced after 7), every later line
    keeps it, ，and 。alternate, and the line count is drawn per poem from the corpus's shares for that
    length (CORPUS_FORMS). Left to choose between ending after line 4 and going on, poem-v2 ended 64 % of
    its 7-character poems there, against the corpus's 55 %, and its form shares missed the corpus's by up to
    10 points. With `drawn`, the whole form is drawn from the corpus's shares. An acrostic pins each line's
    first character and fixes the line count.

    Rhyme steering ("auto": the level-tone group line 2 ends in, whose last character is drawn from
    level-tone characters; "random": a random level-tone group per poem; or a group / a character in it,
    see rhyme.find_group) narrows the last character of each even line, avoiding rhyme characters already
    used. Meter steering (格律) holds each poem to the 近體詩 tonal pattern of a start drawn per poem (平起
    or 仄起): positions 2, 4 (and 6) and the line ends take the tone of tones.fixed_tones (二四六分明, 對,
    黏, even lines end 平, odd lines after the first end 仄); a character fits when one of its readings has
    the tone (多音字 fit both), one of unknown tone fits neither.

    Where a position's rules leave no character, the weakest rule gives way, in the order of
    RELAXATION_ORDER read backwards: a repeated rhyme character first, then the meter, then the rhyme
    group (the form and the acrostic never give way). `relaxed` counts the positions each rule gave way at,
    over all rows decoded (beam search: all K hypotheses).
    """

    def __init__(self, tokenizer: Tokenizer, form: str | None = None, acrostic: str = "", rhyme: str | None = None,
                 meter: bool = False, device: str | torch.device = "cpu", drawn: bool = False):
        if form is not None and form not in FORMS:
            raise TextVAEError(f"form must be one of {', '.join(FORMS)} (characters x lines), not {form!r}")
        for mark in MARKS:
            if tokenizer.piece_to_id(mark) == UNK_ID:
                raise TextVAEError(f"the tokenizer has no piece for {mark}: form-constrained decoding needs "
                                   "a poem tokenizer (`textvae prepare poems`)")
        self.tokenizer, self.device = tokenizer, torch.device(device)
        self.form, self.rhyme, self.meter, self.drawn = form, rhyme, meter, drawn and form is None
        self.chars, self.lines = (int(x) for x in form.split("x")) if form else (0, 0)
        self.acrostic = self._acrostic_ids(tokenizer, acrostic)
        self.lines = self.lines or len(self.acrostic)
        self.steps = (self.lines or max(LINE_COUNTS)) * ((self.chars or max(LINE_LENGTHS)) + 1) + 1
        self.relaxed = Counter()
        self.cjk = cjk_mask(tokenizer).to(self.device)
        self.comma, self.period = (tokenizer.piece_to_id(m) for m in MARKS)
        self._build_tables(tokenizer)
        if rhyme is not None:
            self._setup_rhyme(tokenizer, rhyme)
        self.stateless = bool(self.chars and self.lines) and rhyme is None and not meter
        self.fixed = self._fixed_tokens() if self.chars and self.lines else dict(enumerate(self.acrostic[:1]))
        self._fitted = {}  # form -> the same constraints in that form

    def _acrostic_ids(self, tokenizer: Tokenizer, acrostic: str) -> list[int]:
        if acrostic and len(acrostic) != (self.lines or len(acrostic)):
            raise TextVAEError(f"the acrostic {acrostic!r} has {len(acrostic)} characters but a {self.form} poem "
                               f"has {self.lines} lines: give one character per line")
        if acrostic and len(acrostic) not in LINE_COUNTS:
            raise TextVAEError(f"the acrostic {acrostic!r} has {len(acrostic)} characters but a poem has 4 or 8 "
                               "lines: give one character per line")
        ids, cjk = [], cjk_mask(tokenizer)
        for char in to_model_script(tokenizer, acrostic):
            i = tokenizer.piece_to_id(char)
            if i == UNK_ID or not cjk[i]:
                raise TextVAEError(f"the acrostic character {char!r} is not a Chinese character in this model's "
                                   "vocabulary (is the model traditional and the acrostic simplified, or the "
                                   "other way round?)")
            ids.append(i)
        return ids

    def _build_tables(self, tokenizer: Tokenizer) -> None:
        """Precomputed biases of every (slot kind, required tone) pair, (S * 3, V), and which of them had to
        drop the tone; the required tone of every (start, line length, line, position)."""
        cjk = self.cjk
        self.tones = tones = tone_masks(tokenizer).to(self.device)

        def one(i: int) -> torch.Tensor:
            return torch.zeros_like(cjk).index_fill_(0, torch.tensor([i], device=self.device), True)

        slots = [cjk, one(self.comma), one(self.period), one(EOS_ID), cjk | one(self.comma),
                 *(one(i) for i in self.acrostic)]
        table, relaxed = [], []
        for kind, slot in enumerate(slots):
            for tone in tones:  # only characters the model chooses have a tone to keep
                keeps = kind not in (_CHAR, _CHAR_OR_COMMA) or bool((slot & tone & cjk).any())
                table.append(slot & tone if keeps else slot)
                relaxed.append(not keeps)
        self.table = _bias(torch.stack(table))
        self.table_relaxed = torch.tensor(relaxed, device=self.device)
        self.meter_may_relax = self.meter and any(relaxed)
        required = [[[[TONES.index(tone) for tone in line] + [0] * (7 - chars)
                      for line in fixed_tones(chars, max(LINE_COUNTS), start)]
                     for chars in LINE_LENGTHS] for start in (LEVEL, OBLIQUE)]
        self.required = torch.tensor(required, device=self.device)  # (2 starts, 2 lengths, 8 lines, 7)

    def _setup_rhyme(self, tokenizer: Tokenizer, rhyme: str) -> None:
        members, first_level = rhyme_masks(tokenizer)
        self.members, self.first_level = members.to(self.device), first_level.to(self.device)
        names = list(rhyme_table())
        usable = members[:-1].any(dim=1)
        self.level_groups = torch.tensor([g for g, n in enumerate(names) if tone_of(n) == LEVEL and usable[g]],
                                         dtype=torch.long, device=self.device)
        self.group = None if rhyme in ("auto", "random") else names.index(find_group(rhyme))
        if self.group is not None and not usable[self.group]:
            warnings.warn(f"no character of the rhyme group {names[self.group]} is in this model's vocabulary; "
                          "the rhymes are left to the model")
        if not self.level_groups.numel():
            warnings.warn("no level-tone rhyme character is in this model's vocabulary; rhymes are left to "
                          "the model")

    def _fixed_tokens(self) -> dict[int, int]:
        """The tokens a fixed form pins, by step: line ends, EOS, acrostic characters."""
        width = self.chars + 1
        fixed = {self.lines * width: EOS_ID}
        for line in range(self.lines):
            fixed[line * width + self.chars] = self.comma if line % 2 == 0 else self.period
        for line, i in enumerate(self.acrostic):
            fixed[line * width] = i
        return fixed

    def with_form(self, form: str) -> "Verse":
        """The same constraints in a fixed form (one object per form, so that rows sharing it decode together)."""
        if form == self.form:
            return self
        if form not in self._fitted:
            acrostic = "".join(self.tokenizer.id_to_piece(i) for i in self.acrostic)
            self._fitted[form] = Verse(self.tokenizer, form, acrostic, self.rhyme, self.meter, self.device, self.drawn)
            self._fitted[form].relaxed = self.relaxed  # one tally
        return self._fitted[form]

    def for_text(self, text: str) -> "Verse":
        """The constraints to decode a text's latent under: a fixed form must fit the text; an automatic one
        becomes the text's form when it is a regular poem, and stays automatic otherwise."""
        lines = split_lines(text)
        form = form_of(lines)
        if self.form is not None and form != self.form:
            raise TextVAEError(f"{text!r} does not fit the form {self.form} ({FORMS[self.form]}: {self.lines} lines "
                               f"of {self.chars} characters); it has {len(lines)} lines of "
                               f"{', '.join(str(len(line)) for line in lines) or 'no'} characters")
        return self if form is None else self.with_form(form)

    # -- the Constraint protocol -------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> ConstraintState:
        """Per row: the line and the position in it of the next token, the line length and count (0 while
        the model has not chosen them), for an automatic form whether a poem of each line length is a
        quatrain, the meter's start (0 平起, 1 仄起), the rhyme group (-1: none yet) and the rhyme characters
        so far (PAD: none)."""
        if self.stateless:
            return None
        full = lambda value: torch.full((batch_size,), value, device=self.device)  # noqa: E731
        state = dict(line=full(0), col=full(0), chars=full(self.chars), lines=full(self.lines))
        if self.drawn:  # each row's form drawn from the corpus's shares (of the acrostic's line count)
            forms = [f for f in CORPUS_FORMS if not self.lines or f.endswith(f"x{self.lines}")]
            shares = torch.tensor([float(CORPUS_FORMS[f]) for f in forms], device=self.device)
            pick = torch.multinomial(shares, batch_size, replacement=True)
            state["chars"], state["lines"] = (torch.tensor([int(f.split("x")[k]) for f in forms],
                                                           device=self.device)[pick] for k in (0, 1))
        elif not self.chars and not self.lines:  # the corpus's odds of a quatrain, per line length
            odds = [CORPUS_FORMS[f"{n}x4"] / (CORPUS_FORMS[f"{n}x4"] + CORPUS_FORMS[f"{n}x8"]) for n in LINE_LENGTHS]
            state["quatrain"] = torch.rand(batch_size, len(LINE_LENGTHS), device=self.device) < torch.tensor(
                odds, device=self.device)
        if self.meter:
            state["start"] = torch.randint(2, (batch_size,), device=self.device)
        if self.rhyme is not None:
            group = full(-1 if self.group is None else self.group)
            if self.rhyme == "random" and self.level_groups.numel():
                group = self.level_groups[torch.randint(len(self.level_groups), (batch_size,), device=self.device)]
            state |= dict(group=group, rhymes=full(PAD_ID)[:, None].repeat(1, max(LINE_COUNTS) // 2))
        return state

    def forced(self, t: int, state: ConstraintState) -> int | None:
        return self.fixed.get(t)

    def _slots(self, state: dict) -> torch.Tensor:
        """(B,) the slot kind of each row's next token."""
        line, col, chars, lines = state["line"], state["col"], state["chars"], state["lines"]
        slot = torch.full_like(line, _CHAR)
        slot = torch.where((chars == 0) & (col == 5), _CHAR_OR_COMMA, slot)
        slot = torch.where(((chars == 0) & (col == 7)) | ((chars > 0) & (col == chars)), _COMMA + line % 2, slot)
        if self.acrostic:
            slot = torch.where((col == 0) & (line < len(self.acrostic)), _ACROSTIC + line, slot)
        return torch.where((lines > 0) & (line == lines), _EOS, slot)

    def _tones(self, state: dict, slot: torch.Tensor) -> torch.Tensor:
        """(B,) the tone each row's next character must take (an index into TONES; 0: free)."""
        if not self.meter:
            return torch.zeros_like(slot)
        line, col, chars = state["line"], state["col"], state["chars"]
        tone = self.required[state["start"], (chars != 5).long(), line.clamp(max=7), col.clamp(max=6)]
        return torch.where((slot == _CHAR) | (slot == _CHAR_OR_COMMA), tone, 0)

    def _at_rhyme(self, state: dict, slot: torch.Tensor) -> torch.Tensor:
        """(B,) whether each row's next character ends an even line, where it rhymes."""
        return (slot == _CHAR) & (state["col"] == state["chars"] - 1) & (state["line"] % 2 == 1)

    def bias(self, t: int, state: ConstraintState) -> Bias:
        """Rows of the precomputed table, by slot kind and tone; a row at a rhyme position gets a row of its own."""
        if state is None:  # a fixed form without rhyme or meter: every row is at the same kind of step
            return Bias(self.table[3 * _CHAR, None])
        slot = self._slots(state)
        index = 3 * slot + self._tones(state, slot)  # (B,)
        if self.meter_may_relax:
            self.relaxed["meter"] += int(self.table_relaxed[index].sum())
        rows = self._at_rhyme(state, slot).nonzero()[:, 0] if self.rhyme is not None else index[:0]
        if not rows.numel():
            return Bias(self.table[index[:1]]) if bool((index == index[0]).all()) else Bias(self.table, index)
        index = index.clone()
        index[rows] = len(self.table) + torch.arange(len(rows), device=self.device)
        return Bias(torch.cat([self.table, _bias(self._rhyme_mask(state, rows))]), index)

    def _rhyme_mask(self, state: dict, rows: torch.Tensor) -> torch.Tensor:
        """(R, V) the characters the rows at a rhyme position may take: their group, unused, of the tone."""
        group, line = state["group"][rows], state["line"][rows]
        in_group = self.members[group]  # (R, V); group -1 is the all-CJK row
        if self.rhyme == "auto":  # the first rhyme sets the group: any character with a level-tone group
            in_group = torch.where((line == 1)[:, None], (self.first_level >= 0)[None], in_group)
        rules = [("rhyme", in_group)]
        if self.meter:
            rules.append(("meter", self.tones[TONES.index(LEVEL)][None]))
        rules.append(("rhyme repeat", torch.ones_like(in_group).scatter_(1, state["rhymes"][rows], False)))
        return _relax(self.cjk[None], rules, self.relaxed)

    def update(self, t: int, tokens: torch.Tensor, state: ConstraintState) -> ConstraintState:
        if state is None:
            return None
        line, col, chars, lines = state["line"], state["col"], state["chars"], state["lines"]
        state = dict(state)
        if self.rhyme is not None:
            at = ((col == chars - 1) & (line % 2 == 1))[:, None]  # a character that ends an even line
            slot = torch.arange(state["rhymes"].size(1), device=self.device) == (line // 2)[:, None]  # (B, 4)
            state["rhymes"] = torch.where(at & slot, tokens[:, None], state["rhymes"])
            if self.rhyme == "auto":
                state["group"] = torch.where(at[:, 0] & (line == 1), self.first_level[tokens], state["group"])
        mark = (tokens == self.comma) | (tokens == self.period)
        first = (chars == 0) & mark  # the model ended its first line: the line length is chosen
        state["chars"] = torch.where(first, col, chars)
        if "quatrain" in state:
            quatrain = torch.where(col == LINE_LENGTHS[0], state["quatrain"][:, 0], state["quatrain"][:, 1])
            state["lines"] = torch.where(first, torch.where(quatrain, 4, 8), lines)
        state["line"], state["col"] = line + mark.long(), torch.where(mark, 0, col + 1)
        return state

    def reorder_state(self, state: ConstraintState, index: torch.Tensor) -> ConstraintState:
        return None if state is None else {k: v[index] for k, v in state.items()}


__all__ = ["Bias", "Constraint", "ConstraintState", "LINE_COUNTS", "LINE_LENGTHS", "RELAXATION_ORDER", "TONES", "Verse",
           "is_verse_vocabulary", "rhyme_masks", "tone_masks"]
