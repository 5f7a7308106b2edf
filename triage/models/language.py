"""Which language a ticket is written in, with the identifier that ships inside the `py3langid` package.

Nothing is downloaded: the model is a file in the installed package, loaded once per process on first use and
shared by every classifier. The packaged file is LZMA-compressed and takes most of a CPU second to unpack, so
`load_identifier(cache_dir)` keeps an unpacked copy of the model, cut down to `LANGUAGE_NAMES`, in the model cache
and maps that into memory (a few milliseconds) in later processes. Detection takes well under a millisecond for a
ticket.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGE_NAMES", "DetectedLanguage", "detect_language", "language_name", "load_identifier"]

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


def load_identifier(cache_dir: Path | None = None) -> None:
    """Load the language model now rather than on the first ticket.

    Args:
        cache_dir: Where to keep (and look for) an unpacked copy of the model; None reads the packaged file.
    """
    _get_identifier(cache_dir)


def _get_identifier(cache_dir: Path | None = None) -> Any:
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                _identifier = _read_unpacked(cache_dir) if cache_dir is not None else None
                if _identifier is None:
                    _identifier = _read_packaged(cache_dir)
    return _identifier


def _read_packaged(cache_dir: Path | None) -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(sorted(LANGUAGE_NAMES))
    if cache_dir is not None:
        with contextlib.suppress(OSError):  # a read-only cache: the next process unpacks the packaged file again
            _write_unpacked(identifier, _unpacked_path(cache_dir))
    return identifier


_ARRAYS = ("ptc", "pc", "classes", "nextmove", "row", "output")
"""The identifier's arrays, one `.npy` file each in the unpacked copy."""


def _unpacked_path(cache_dir: Path) -> Path:
    """The folder of the unpacked copy: one per py3langid version and set of languages."""
    from importlib.metadata import version

    languages = hashlib.sha256(",".join(sorted(LANGUAGE_NAMES)).encode()).hexdigest()[:12]
    return cache_dir / f"langid-{version('py3langid')}-{languages}.npy"


def _write_unpacked(identifier: Any, path: Path) -> None:
    """Write the arrays into a new folder beside `path`, then rename it into place (a reader sees all or none)."""
    import numpy

    arrays = {
        "ptc": numpy.asarray(identifier.nb_ptc),
        "pc": numpy.asarray(identifier.nb_pc),
        "classes": numpy.array(identifier.nb_classes),
        "nextmove": numpy.frombuffer(identifier.tk_nextmove, dtype=identifier.tk_nextmove.typecode),
        "row": numpy.frombuffer(identifier.tk_row, dtype=identifier.tk_row.typecode),
        "output": numpy.asarray(identifier.tk_output, dtype=numpy.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        for name in _ARRAYS:
            numpy.save(folder / f"{name}.npy", arrays[name], allow_pickle=False)
        try:
            os.rename(folder, path)
        except OSError:
            if not path.is_dir():
                raise
            # Another process put its copy there first: that one is kept.
        for stale in path.parent.glob("langid-*.npz"):  # the earlier layout, a 48 MB file read whole
            stale.unlink(missing_ok=True)
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


ABANDONED_SECONDS = 3600
"""A temporary folder this old is abandoned whoever wrote it (writing one takes well under a second)."""


def _remove_abandoned(path: Path) -> None:
    """Remove the temporary folders of writers that died before renaming theirs into place.

    A folder is abandoned when the process named in it is gone, or when it is older than `ABANDONED_SECONDS` (a
    process of that number in another PID namespace sharing the cache is then no reason to keep it). Removing a
    live writer's folder costs only its copy: its rename fails and it goes on with the model it unpacked.
    """
    now = time.time()
    for folder in path.parent.glob(f".{path.name}.*.tmp"):
        pid = folder.name[len(path.name) + 2 :].split(".", 1)[0]
        with contextlib.suppress(OSError):
            if not _alive(pid) or now - folder.stat().st_mtime > ABANDONED_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: str) -> bool:
    """Whether the process numbered `pid` (text from a folder name) exists; False for a name with no number."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, and belongs to someone else
        return True
    return True


def _read_unpacked(cache_dir: Path) -> Any:
    """The identifier over the unpacked copy's arrays, memory-mapped, or None when there is no whole copy.

    Mapped, not read: the tokenizer's transition table is 39 MB, of which a ticket touches a few pages, and
    reading it (with a checksum) took most of the 80-100 ms that loading cost. The copy is never written in place
    (see `_write_unpacked`), so a mapping cannot change under a reader.
    """
    import numpy
    from py3langid.langid import LanguageIdentifier

    folder = _unpacked_path(cache_dir)
    try:
        data = {name: numpy.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
        return LanguageIdentifier(
            numpy.asarray(data["ptc"]),  # the same mapping as a plain array: no memmap bookkeeping per ticket
            numpy.array(data["pc"]),
            data["classes"].tolist(),
            memoryview(data["nextmove"]),  # indexed like the `array.array` py3langid builds: items are ints
            data["output"].tolist(),
            norm_probs=True,
            tk_row=memoryview(data["row"]),
        )
    except Exception:
        # Missing, partly written or from another py3langid layout: unpack the packaged file instead.
        return None


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
