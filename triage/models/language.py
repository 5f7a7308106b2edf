"""Which language a ticket is written in, with the identifier that ships inside the `py3langid` package.

Nothing is downloaded: the model is a file in the installed package, loaded once per process on first use (about
a second) and shared by every classifier. Detection takes well under a millisecond for a ticket.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["LANGUAGE_NAMES", "DetectedLanguage", "detect_language", "language_name"]

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic",
    "bg": "Bulgarian",
    "ca": "Catalan",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "ms": "Malay",
    "no": "Norwegian",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sr": "Serbian",
    "sv": "Swedish",
    "th": "Thai",
    "tl": "Tagalog",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}
"""The languages told apart: widely written ones. Restricting the identifier to them keeps short English tickets
from being read as a close relative (a pidgin or a rare dialect)."""

_lock = threading.Lock()
_identifier: Any = None


@dataclass(frozen=True)
class DetectedLanguage:
    """The most probable language of a text.

    Attributes:
        code: ISO 639-1 code, e.g. "de".
        probability: The identifier's normalised probability (0..1); short texts rarely reach 0.9.
    """

    code: str
    probability: float


def _get_identifier() -> Any:
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
                identifier.set_languages(sorted(LANGUAGE_NAMES))
                _identifier = identifier
    return _identifier


def detect_language(text: str) -> DetectedLanguage:
    """Identify the language of `text`.

    Args:
        text: Any text; empty text is reported as English with probability 0.

    Returns:
        The most probable language among `LANGUAGE_NAMES`.
    """
    if not text.strip():
        return DetectedLanguage("en", 0.0)
    code, probability = _get_identifier().classify(text)
    return DetectedLanguage(str(code), float(probability))


def language_name(code: str) -> str:
    """The English name of a language code (the code itself when unknown)."""
    return LANGUAGE_NAMES.get(code, code)
