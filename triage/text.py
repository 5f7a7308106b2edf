"""Text helpers shared by the rules that read customers' words."""

from __future__ import annotations

import re

_DIGIT = re.compile(r"\d")
_ASCII_FOLDS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})
"""The three letters that a case-insensitive pattern matches to an ASCII letter but `str.lower` does not lower to
it ("İ", which it lowers to two characters, the dotless "ı" and the long "ſ")."""


def fold_case(text: str) -> str:
    """`text` lower-cased so that a lower-case ASCII word is in it wherever `re.IGNORECASE` would find that word.

    `str.lower` alone misses three letters the regular expression engine treats as ASCII ones ("İ", "ı", "ſ");
    they are folded first. The Kelvin sign lowers to "k" by itself.
    """
    return text.translate(_ASCII_FOLDS).lower()


def has_digit(text: str) -> bool:
    r"""Whether `text` has a digit of any script, as `\d` in a pattern reads one."""
    return _DIGIT.search(text) is not None


def digit_count(text: str) -> int:
    r"""How many digits of any script `text` has, as `\d` in a pattern reads them."""
    return len(_DIGIT.findall(text))
