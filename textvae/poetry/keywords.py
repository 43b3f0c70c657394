"""Given words: a constraint that writes each of 1-4 keywords (1-3 characters) contiguously within one line of
every poem, around a `Verse` that keeps the form, rhyme and meter.

Lexically constrained decoding in the spirit of Post & Vilar 2018: the model chooses where each word goes. At every
character position a row may write anything the verse allows as long as the words it has not placed yet still fit
in what is left of the poem, the first characters of the words that can start there raised by `boost` nats so that
the words come where the model finds room for them rather than all at the end; where they would no longer fit, only
those first characters are allowed; once a word's first character is written, the rest of it is forced. A word fits
at a place when it stays within the line, keeps the meter's tones there (with meter), and covers no rhyme position
(with rhyme: the last character of an even line). Where meter and rhyme are not asked for, words still go only
where their tones fit one of the two regular patterns and not at the end of an even line, so that the poem can keep
the tones and rhymes it would have had, unless the words fit no such place. Whether the unplaced words still fit is
an exact search over the places left, memoised per (form, meter start, words, place). Shapes: B rows, V vocabulary,
W keywords.
"""

import functools

import torch

from textvae.errors import TextVAEError
from textvae.poetry.constraints import Bias, Verse, _bias, tone_masks
from textvae.poetry.forms import FORMS
from textvae.poetry.writing import to_model_script
from textvae.tokenizer import UNK_ID

MAX_WORDS, MAX_CHARS = 4, 3


def parse(text: str) -> tuple[str, ...]:
    """Keywords from `月,江,酒` (commas, either width, or spaces between them)."""
    return tuple(w for w in text.replace("，", ",").replace(" ", ",").split(",") if w)


class Keywords:
    """A `Constraint`: the verse's rules, and every keyword written once, contiguously, within one line."""

    def __init__(self, verse: Verse, words: tuple[str, ...], boost: float = 2.0):
        if verse.acrostic:
            raise TextVAEError("keywords and an acrostic both pin characters to places: use one of them")
        self.verse, self.device, self.steps = verse, verse.device, verse.steps
        self.words, self.boost = self._check(verse, words), boost
        self.relaxed = verse.relaxed
        forms = [verse.form] if verse.form else list(FORMS)
        starts = (0, 1) if verse.meter else (None,)
        self.fitting = True  # also where no rule asks it: tones that fit the regular patterns, no rhyme place
        self._memoise()
        self.usable = self._usable(forms, starts)
        if not any(self.usable.values()) and not (verse.meter and verse.rhyme is not None):
            self.fitting = False  # the words fit no regular place: only the rules asked for bind them
            self._memoise()
            self.usable = self._usable(forms, starts)
        if not any(self.usable.values()):
            raise TextVAEError(self._impossible(forms))

    def _memoise(self) -> None:
        """Fresh memo tables of this object's place search, whose answers depend on `fitting` (kept per object,
        so that they go with it)."""
        self._places = functools.cache(self._list_places)
        self._can_start = functools.cache(self._word_fits_at)
        self._fits = functools.cache(self._words_fit_from)

    def _usable(self, forms: list[str], starts: tuple) -> dict:
        return {(f, s): self._fits(f, s, frozenset(range(len(self.words))), 0) for f in forms for s in starts}

    @property
    def form(self) -> str | None:
        return self.verse.form

    def _check(self, verse: Verse, words: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        if not 1 <= len(words) <= MAX_WORDS:
            raise TextVAEError(f"give 1 to {MAX_WORDS} keywords, not {len(words)}")
        ids = []
        for word in words:
            if not 1 <= len(word) <= MAX_CHARS:
                raise TextVAEError(f"the keyword {word!r} has {len(word)} characters; a keyword has 1 to {MAX_CHARS}")
            chars = to_model_script(verse.tokenizer, word)
            found = tuple(verse.tokenizer.piece_to_id(c) for c in chars)
            missing = [c for c, i in zip(chars, found) if i == UNK_ID or not verse.cjk[i]]
            if missing:
                raise TextVAEError(f"the keyword {word!r} has {''.join(missing)!r}, which is not a Chinese character "
                                   "in this model's vocabulary")
            ids.append(found)
        return tuple(ids)

    def _impossible(self, forms: list[str]) -> str:
        """The one-line reason no poem can hold the words, naming the first word that fits nowhere alone."""
        rules = " and ".join(r for r, on in (("the meter's tones (平仄)", self.verse.meter),
                                              ("the rhyme positions", self.verse.rhyme is not None)) if on)
        for w, word in enumerate(self.words):
            if not any(self._fits(f, s, frozenset([w]), 0) for f, s in self.usable):
                text = "".join(self.verse.tokenizer.id_to_piece(i) for i in word)
                return f"the keyword {text!r} fits no place of a {' or '.join(forms)} poem under {rules or 'the form'}"
        return f"the keywords fit no {' or '.join(forms)} poem together under {rules or 'the form'}"

    # -- where a word may go ------------------------------------------------------------------------------

    def _list_places(self, form: str, start: int | None) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
        """Every character place of the form in reading order, as (line, col, the tone index a character there
        must have under each pattern the word may follow: the meter start's, or while fitting either start's;
        (0,) for any)."""
        chars, lines = (int(x) for x in form.split("x"))
        places = []
        for line in range(lines):
            for col in range(chars):
                required = self.verse.required[:, int(chars != 5), line, col].tolist()  # by start
                tones = (required[start],) if start is not None else tuple(required) if self.fitting else (0,)
                places.append((line, col, tones))
        return tuple(places)

    def _word_fits_at(self, form: str, start: int | None, w: int, p: int) -> bool:
        """Whether word w may occupy the places p, p + 1, ... of the form."""
        chars = int(form.split("x")[0])
        places, word = self._places(form, start), self.words[w]
        line, col, _ = places[p]
        if col + len(word) > chars:
            return False
        if (self.verse.rhyme is not None or self.fitting) and line % 2 == 1 and col + len(word) == chars:
            return False
        masks = tone_masks(self.verse.tokenizer)
        patterns = zip(*(places[p + k][2] for k in range(len(word))))  # each pattern's tones over the word
        return any(all(masks[tone, i] for tone, i in zip(tones, word)) for tones in patterns)

    def _words_fit_from(self, form: str, start: int | None, left: frozenset, p: int) -> bool:
        """Whether the words `left` can still be placed from place p on."""
        if not left:
            return True
        if p >= len(self._places(form, start)):
            return False
        return self._fits(form, start, left, p + 1) or any(
            self._can_start(form, start, w, p) and self._fits(form, start, left - {w}, p + len(self.words[w]))
            for w in left)

    # -- the Constraint protocol ----------------------------------------------------------------------

    def init_state(self, batch_size: int) -> dict:
        """The verse's state, each row's form and meter start moved to ones that can hold the words where the
        verse drew others, and per row the words placed (B, W), the word being written (-1: none) and how much
        of it is written."""
        state = self.verse.init_state(batch_size)
        state = dict(state) if state is not None else {}
        usable = [key for key, ok in self.usable.items() if ok]
        for b in range(batch_size):
            key = self._key(state, b)
            if not self.usable.get(key):
                form, start = usable[int(torch.randint(len(usable), ()))]
                self._set_row(state, b, form, start)
        full = lambda value: torch.full((batch_size,), value, device=self.device)  # noqa: E731
        return state | dict(placed=torch.zeros(batch_size, len(self.words), dtype=torch.bool, device=self.device),
                            word=full(-1), written=full(0), place=full(0))

    def _key(self, state: dict, b: int) -> tuple[str, int | None]:
        form = self.verse.form or f"{int(state['chars'][b])}x{int(state['lines'][b])}"
        return form, int(state["start"][b]) if self.verse.meter else None

    def _set_row(self, state: dict, b: int, form: str, start: int | None) -> None:
        if not self.verse.form:
            state["chars"][b], state["lines"][b] = (int(x) for x in form.split("x"))
        if start is not None:
            state["start"][b] = start

    def forced(self, t: int, state: dict) -> int | None:
        return self.verse.forced(t, self._inner(state))

    def _inner(self, state: dict) -> dict | None:
        inner = {k: v for k, v in state.items() if k not in ("placed", "word", "written", "place")}
        return inner or None

    def _at_character(self, t: int, state: dict) -> torch.Tensor:
        """(B,) whether each row's next token is a character of a line."""
        if "col" in state:
            return (state["col"] < state["chars"]) & (state["line"] < state["lines"])
        width = self.verse.chars + 1
        return torch.full_like(state["word"], (t % width) < self.verse.chars and t < self.verse.lines * width,
                               dtype=torch.bool)

    def bias(self, t: int, state: dict) -> Bias:
        inner = self.verse.bias(t, self._inner(state))
        at_char = self._at_character(t, state)
        choices = {b: self._allowed(state, b) for b in at_char.nonzero()[:, 0].tolist()}
        choices = {b: c for b, c in choices.items() if c[0]}
        if not choices:
            return inner
        bias = inner.dense().expand(len(at_char), -1)  # (B, V)
        words = torch.zeros(bias.shape, dtype=torch.bool, device=self.device)  # (B, V) the word tokens of each row
        pairs = [(b, i) for b, (ids, _) in choices.items() for i in ids]
        words[[b for b, _ in pairs], [i for _, i in pairs]] = True
        must = torch.zeros(len(at_char), dtype=torch.bool, device=self.device)
        must[[b for b, (_, forced) in choices.items() if forced]] = True
        kept = words & (bias == 0)
        give_way = must & ~kept.any(dim=-1)  # the verse's rules give way to the word, which is guaranteed
        if give_way.any():
            self.relaxed["keyword"] += int(give_way.sum())
        kept = torch.where(give_way[:, None], words, kept)
        # rows that must start or go on with a word write only its tokens; the others find them likelier
        return Bias(torch.where(must[:, None], _bias(kept), bias + self.boost * kept))

    def _allowed(self, state: dict, b: int) -> tuple[set[int], bool]:
        """The keyword tokens row b may write at its next character place, and whether it must write one."""
        word = int(state["word"][b])
        if word >= 0:
            return {self.words[word][int(state["written"][b])]}, True
        form, start = self._key(state, b)
        left = frozenset(w for w in range(len(self.words)) if not state["placed"][b, w])
        p = int(state["place"][b])
        starts = {self.words[w][0] for w in left if self._can_start(form, start, w, p)
                  and self._fits(form, start, left - {w}, p + len(self.words[w]))}
        return starts, bool(left) and not self._fits(form, start, left, p + 1)

    def update(self, t: int, tokens: torch.Tensor, state: dict) -> dict:
        at_char = self._at_character(t, state)
        inner = self.verse.update(t, tokens, self._inner(state))
        state = dict(state, **(inner or {}))
        placed, word, written = state["placed"].clone(), state["word"].clone(), state["written"].clone()
        for b in at_char.nonzero()[:, 0].tolist():
            token = int(tokens[b])
            if word[b] < 0:
                form, start = self._key(state, b)
                left = frozenset(w for w in range(len(self.words)) if not placed[b, w])
                p = int(state["place"][b])
                word[b] = next((w for w in sorted(left, key=lambda w: -len(self.words[w]))
                                if self.words[w][0] == token and self._can_start(form, start, w, p)
                                and self._fits(form, start, left - {w}, p + len(self.words[w]))), -1)
                written[b] = 0
            if word[b] >= 0:
                written[b] += 1
                if written[b] == len(self.words[word[b]]):
                    placed[b, word[b]], word[b], written[b] = True, -1, 0
        state |= dict(placed=placed, word=word, written=written, place=state["place"] + at_char.long())
        return state

    def reorder_state(self, state: dict, index: torch.Tensor) -> dict:
        return {k: v[index] for k, v in state.items()}

    def for_text(self, text: str) -> "Keywords":
        return Keywords(self.verse.for_text(text), tuple("".join(self.verse.tokenizer.id_to_piece(i) for i in word)
                                                         for word in self.words))
