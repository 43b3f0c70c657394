"""Simplified and traditional characters: the script a model writes, and conversion into it and out of it.

Input may be in either script. A text written mostly in the other script than the model's is converted whole
by OpenCC, phrase by phrase (后 is 後 in 前不见古人，后不见来者 but stays 后 in 皇后). OpenCC has three
conversions into traditional characters (s2t, s2tw, s2hk) that differ only in variant forms of one character
(床/牀, 爲/為, 裏/裡, 峰/峯); where they disagree, the form the model's vocabulary saw most is kept. On the
chinese-poetry corpus's validation and test poems converted to simplified and back, that restores 98.35 % of
the characters (s2t alone 98.21 %, s2tw 97.85 %, s2hk 97.77 %; the rest are the corpus's own mixed forms,
黄 and 黃 both), and it keeps 床 where s2t alone writes 牀. Output is in the model's script unless another is
asked for.
"""

import functools
from collections import Counter

from textvae.errors import TextVAEError
from textvae.poetry.forms import cjk_mask
from textvae.tokenizer import UNK_ID, Tokenizer

SCRIPTS = {"simplified": "t2s", "traditional": "s2t"}  # a script, and the OpenCC conversion of output into it
# the OpenCC conversions of input into a model's script: the same phrases, other variant forms
INPUT_CONVERSIONS = {"traditional": ("s2t", "s2tw", "s2hk"), "simplified": ("t2s", "tw2s", "hk2s")}


@functools.cache
def _opencc(conversion: str):
    import opencc  # imported on first use: its dictionaries take a moment to load
    return opencc.OpenCC(conversion)


def _each_alone(chars: list[str], conversion: str) -> list[str]:
    """Each character converted alone: one a line, so that no phrase spans two."""
    return _opencc(conversion).convert("\n".join(chars)).split("\n")


def text_script(text: str) -> str | None:
    """The script a text is written in: the one of which it holds more characters that only that script uses
    (舉 only traditional, 举 only simplified: t2s changes the one, s2t the other); None for as many (白日依山,
    English). A character both scripts use (云, 几, 后) counts for neither."""
    counts = Counter(text)
    del counts["\n"]
    chars = list(counts)
    to_simplified, to_traditional = _each_alone(chars, "t2s"), _each_alone(chars, "s2t")
    traditional = sum(counts[c] for c, s in zip(chars, to_simplified) if s != c)
    simplified = sum(counts[c] for c, s, t in zip(chars, to_simplified, to_traditional) if s == c and t != c)
    return None if traditional == simplified else "traditional" if traditional > simplified else "simplified"


@functools.lru_cache(maxsize=8)
def model_script(tokenizer: Tokenizer) -> str | None:
    """The script a model writes: `text_script` of its vocabulary's one-character CJK pieces. Read off the
    vocabulary rather than recorded at training time, so that every model has one, those saved before included,
    and a vocabulary mixing both gets the script it holds more of (data/pretrained: 2,362 of its characters
    only traditional writing uses, 236 only simplified, variants such as 床, which s2t writes 牀, among them)."""
    chars = [tokenizer.id_to_piece(i) for i in cjk_mask(tokenizer).nonzero()[:, 0].tolist()]
    return text_script("".join(chars))


def check_script(script: str | None) -> None:
    if script is not None and script not in SCRIPTS:
        raise TextVAEError(f"script must be {' or '.join(SCRIPTS)} (or None: the model's own), not {script!r}")


def _score(tokenizer: Tokenizer, char: str) -> float:
    """How often the model's vocabulary saw a character: its piece's log-probability, -inf for none."""
    i = tokenizer.piece_to_id(char)
    return float("-inf") if i == UNK_ID else tokenizer.piece_score(i)


def convert(tokenizer: Tokenizer, text: str, script: str) -> str:
    """`text` converted whole into `script` by each of its INPUT_CONVERSIONS; where they write different
    variant forms of a character, the one the vocabulary saw most (ties: the first conversion's)."""
    candidates = [_opencc(conversion).convert(text) for conversion in INPUT_CONVERSIONS[script]]
    if any(len(c) != len(text) for c in candidates):  # OpenCC's character tables keep lengths; were one not to
        return candidates[0]
    return "".join(forms[0] if len(set(forms)) == 1 else max(forms, key=lambda c: _score(tokenizer, c))
                   for forms in zip(*candidates))


def to_model_script(tokenizer: Tokenizer, text: str) -> str:
    """`text` as the model reads it: converted whole when it is written in the other script (see
    text_script and convert); otherwise as typed, but for characters the vocabulary lacks whose form in the
    model's script it has (a traditional model reads a stray 举 in a traditional text as 舉)."""
    if (script := model_script(tokenizer)) is None:
        return text
    if text_script(text) not in (None, script):
        return convert(tokenizer, text, script)
    unknown = set(tokenizer.unknown_characters(text))
    if not unknown:
        return text
    converted = convert(tokenizer, text, script)
    return "".join(new if old in unknown and tokenizer.piece_to_id(new) != UNK_ID else old
                   for old, new in zip(text, converted))


def in_script(texts: list[str], script: str | None, tokenizer: Tokenizer) -> list[str]:
    """Decoded texts, converted when a script is asked for that the model does not write."""
    check_script(script)
    if script is None or script == model_script(tokenizer):
        return texts
    return [_opencc(SCRIPTS[script]).convert(t) for t in texts]


__all__ = ["INPUT_CONVERSIONS", "SCRIPTS", "check_script", "convert", "in_script", "model_script", "text_script",
           "to_model_script"]
