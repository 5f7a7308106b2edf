"""The language identifier's cached copy when processes write it at once, or one dies while writing it."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

from triage.models import language

TEXTS = ["Ich möchte mein Geld zurück.", "Could you send me a copy of my invoice?", "商品がまだ届いていません。"]


def _write_at_once(cache: str, barrier: Any, pause_writes: bool) -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(sorted(language.LANGUAGE_NAMES))
    if pause_writes:  # stop for good in the middle of writing the arrays: the parent kills this process there
        import numpy

        real_save = numpy.save

        def save_then_hang(file: Any, array: Any, **kwargs: Any) -> None:
            real_save(file, array, **kwargs)
            barrier.wait()
            signal.pause()

        numpy.save = save_then_hang  # type: ignore[assignment]
    barrier.wait()
    language._write_unpacked(identifier, language._unpacked_path(Path(cache)))


def test_writers_racing_leave_one_whole_copy_and_a_killed_writer_leaves_none(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    cache = tmp_path / "cache"
    barrier = context.Barrier(4)
    racers = [context.Process(target=_write_at_once, args=(str(cache), barrier, False)) for _ in range(3)]
    for racer in racers:
        racer.start()
    barrier.wait(timeout=60)  # all three have unpacked the model: now they write the same copy at once
    for racer in racers:
        racer.join(timeout=60)
    assert [racer.exitcode for racer in racers] == [0, 0, 0], "a writer that lost the race must not fail"
    assert [path.name for path in cache.iterdir()] == [language._unpacked_path(cache).name], "no temporary left"
    unpacked = language._read_unpacked(cache)
    assert unpacked is not None
    packaged = language._read_packaged(None)
    assert [unpacked.classify(text) for text in TEXTS] == [packaged.classify(text) for text in TEXTS]

    fresh = tmp_path / "fresh"
    barrier = context.Barrier(2)
    victim = context.Process(target=_write_at_once, args=(str(fresh), barrier, True))
    victim.start()
    barrier.wait(timeout=60)  # it starts writing
    barrier.wait(timeout=60)  # it has written one array of the copy, and stopped there
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=30)
    assert language._read_unpacked(fresh) is None, "a copy whose writer died is never read"
    assert language._read_packaged(fresh) is not None
    assert language._read_unpacked(fresh) is not None, "the next process writes a whole copy"
    left = [path.name for path in fresh.iterdir()]
    assert left == [language._unpacked_path(fresh).name], "and removes the dead writer's temporary folder"


def test_only_abandoned_temporaries_are_removed(tmp_path: Path) -> None:
    """A live writer's folder stays; a dead one's, an old one's and one of the earlier naming go."""
    path = language._unpacked_path(tmp_path)
    child = multiprocessing.get_context("spawn").Process(target=os.getpid)
    child.start()
    child.join(timeout=60)
    live, dead, old, unnamed = (
        tmp_path / f".{path.name}.{pid}.abcd1234.tmp" for pid in (os.getpid(), child.pid, os.getppid(), "k3j4h5g6")
    )
    for folder in (live, dead, old, unnamed):
        folder.mkdir()
        (folder / "ptc.npy").write_bytes(b"partial")
    os.utime(old, (0, 0))
    language._remove_abandoned(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
