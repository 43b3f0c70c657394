"""The regular forms of 近體詩: 五言/七言 × 絕句 (4 lines) / 律詩 (8 lines), as lines of characters.

A poem's text is its lines, each followed by ，(the first line of a couplet) or 。(the second); a form is
named characters x lines ("5x4"). `cjk_mask` says which pieces of a vocabulary can stand in a line.
Shapes: V vocabulary.
"""

import functools
import re

import torch

from textvae.tokenizer import Tokenizer

FORMS = {"5x4": "五言绝句", "7x4": "七言绝句", "5x8": "五言律诗", "7x8": "七言律诗"}
MARKS = "，。"  # the line ends of the canonical text: after the first and the second line of a couplet

_LINE_END = re.compile(r"[，。？！；]")
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def split_lines(text: str) -> list[str]:
    """Split at the line-ending punctuation ，。？！；, dropping empty pieces."""
    return [line for line in _LINE_END.split(text) if line]


def join_lines(lines: list[str]) -> str:
    """Canonical text: ，after the first line of each couplet, 。after the second."""
    return "".join(line + MARKS[i % 2] for i, line in enumerate(lines))


def form_of(lines: list[str]) -> str | None:
    """'5x4', '7x4', '5x8' or '7x8' when the lines make a regular form, else None."""
    lengths = {len(line) for line in lines}
    if len(lengths) != 1 or len(lines) not in (4, 8):
        return None
    form = f"{lengths.pop()}x{len(lines)}"
    return form if form in FORMS else None


def form_compliance(poems) -> float:
    """Share of poems (each a list of lines) of a regular form: 4 or 8 lines, all of 5 or all of 7
    characters (`form_of`)."""
    return sum(form_of(list(lines)) is not None for lines in poems) / len(poems) if poems else 0.0


@functools.lru_cache(maxsize=8)
def cjk_mask(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) True for the pieces that are one CJK character: no bytes, specials, space or punctuation."""
    return torch.tensor([not tokenizer.is_byte(i) and len(p := tokenizer.id_to_piece(i)) == 1 and is_cjk(p)
                         for i in range(tokenizer.vocab_size)])


__all__ = ["FORMS", "MARKS", "cjk_mask", "form_compliance", "form_of", "is_cjk", "join_lines", "split_lines"]
