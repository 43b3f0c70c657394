"""Simplified and traditional characters: the script a model writes, and conversion into it and out of it.

Input may be in either script: OpenCC converts what the vocabulary lacks into the model's script. Output is
in the model's script unless another is asked for.
"""

import functools

from textvae.errors import TextVAEError
from textvae.poetry.forms import cjk_mask
from textvae.tokenizer import UNK_ID, Tokenizer

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
    chars = [tokenizer.id_to_piece(i) for i in cjk_mask(tokenizer).nonzero()[:, 0].tolist()]
    traditional, simplified = _changed(chars, "t2s"), _changed(chars, "s2t")
    return None if traditional == simplified else "traditional" if traditional > simplified else "simplified"


def check_script(script: str | None) -> None:
    if script is not None and script not in SCRIPTS:
        raise TextVAEError(f"script must be {' or '.join(SCRIPTS)} (or None: the model's own), not {script!r}")


def to_model_script(tokenizer: Tokenizer, text: str) -> str:
    """`text` with each character the vocabulary lacks replaced by its form in the model's script when the
    vocabulary has that (a traditional model reads 举头 as 舉頭); characters it has stay as typed (s2t would
    turn 床 into the variant 牀, which a model trained on 床 has hardly seen)."""
    unknown = set(tokenizer.unknown_characters(text))
    if not unknown or (script := model_script(tokenizer)) is None:
        return text
    convert = _opencc(SCRIPTS[script]).convert
    converted = convert(text)  # the whole text: its phrases pick between candidates (发 -> 發 or 髮)
    if len(converted) != len(text):  # OpenCC's s2t and t2s tables keep lengths; were one not to, stay aligned
        converted = "".join(convert(c) for c in text)
    return "".join(new if old in unknown and tokenizer.piece_to_id(new) != UNK_ID else old
                   for old, new in zip(text, converted))


def in_script(texts: list[str], script: str | None, tokenizer: Tokenizer) -> list[str]:
    """Decoded texts, converted when a script is asked for that the model does not write."""
    check_script(script)
    if script is None or script == model_script(tokenizer):
        return texts
    return [_opencc(SCRIPTS[script]).convert(t) for t in texts]


__all__ = ["SCRIPTS", "check_script", "in_script", "model_script", "to_model_script"]
