"""A damaged store is refused with a message naming the file and the fix; it is never re-created or re-seeded."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import rows
from triage import TriageApp
from triage.errors import DamagedStoreError, StoreError
from triage.settings import Settings
from triage.storefiles import check_sqlite_file

DUPLICATE_CHARGE = {
    "customer_id": "cus_mid_dup",
    "subject": "Charged twice",
    "body": "You charged me twice for the same order, please refund one.",
}


@pytest.fixture(scope="module")
def used_home(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """A home with history: one run paused on a refund approval."""
    home = tmp_path_factory.mktemp("used") / "home"
    with TriageApp(Settings(home=home, cache_home=model_cache)) as app:
        assert app.run(DUPLICATE_CHARGE).status == "awaiting_approval"
    return home


@pytest.fixture
def home(used_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(used_home, copy)
    return copy


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"these are not the bytes of a database\n" * 100)


def _foreign(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (_empty, "is empty"),
    "truncated": (_truncated, "is truncated"),
    "garbage": (_garbage, "is not an SQLite database"),
    "foreign": (_foreign, "not a"),
}


def _snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir()) if p.is_file()}


@pytest.mark.parametrize("store", ["helpdesk.sqlite", "checkpoints.sqlite"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_store_is_refused_and_left_untouched(home: Path, model_cache: Path, store: str, damage: str) -> None:
    harm, problem = DAMAGE[damage]
    harm(home / store)
    before = _snapshot(home)
    with TriageApp(Settings(home=home, cache_home=model_cache)) as app, pytest.raises(DamagedStoreError) as caught:
        app.customers()
    message = str(caught.value)
    assert str(home / store) in message
    assert problem in message
    assert "restore it from a backup" in message and "move the home's store files aside" in message
    assert _snapshot(home) == before


def test_missing_checkpoint_store_beside_a_helpdesk_is_refused(home: Path, model_cache: Path) -> None:
    (home / "checkpoints.sqlite").unlink()
    before = _snapshot(home)
    with (
        TriageApp(Settings(home=home, cache_home=model_cache)) as app,
        pytest.raises(DamagedStoreError, match="missing"),
    ):
        app.customers()
    assert _snapshot(home) == before


def test_checkpoint_store_missing_beside_a_helpdesk_without_requests_is_created(
    tmp_path: Path, model_cache: Path
) -> None:
    # A seeded helpdesk copied into a new home (as the eval runner does for each case) makes a new home.
    settings = Settings(home=tmp_path / "fresh", cache_home=model_cache)
    with TriageApp(settings) as app:
        app.customers()
    settings.checkpoints_path.unlink()
    with TriageApp(settings) as app:
        assert app.threads() == []


def test_missing_helpdesk_beside_history_is_not_reseeded(home: Path, model_cache: Path) -> None:
    (home / "helpdesk.sqlite").unlink()
    before = _snapshot(home)
    with (
        TriageApp(Settings(home=home, cache_home=model_cache)) as app,
        pytest.raises(DamagedStoreError, match="refundable again"),
    ):
        app.customers()
    assert _snapshot(home) == before


def test_helpdesk_missing_beside_an_empty_checkpoint_store_is_created(tmp_path: Path, model_cache: Path) -> None:
    # A process that died between creating the two stores of a new home leaves this; it is still a new home.
    settings = Settings(home=tmp_path / "home", cache_home=model_cache)
    with TriageApp(settings) as app:
        app.customers()
    settings.helpdesk_path.unlink()
    with TriageApp(settings) as app:
        assert any(c["id"] == "cus_mid_dup" for c in app.customers())


def test_home_that_is_a_file_is_refused(tmp_path: Path, model_cache: Path) -> None:
    file = tmp_path / "home"
    file.write_text("not a folder")
    for home, words in ((file, "is a file"), (file / "below", "inside a file")):
        with TriageApp(Settings(home=home, cache_home=model_cache)) as app, pytest.raises(StoreError, match=words):
            app.customers()
    assert file.read_text() == "not a folder"


def _open_fresh_home(home: str, cache: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    from triage import TriageApp
    from triage.settings import Settings

    barrier.wait(timeout=60)
    with TriageApp(Settings(home=Path(home), cache_home=Path(cache))) as app:
        app.customers()


@pytest.mark.slow
def test_four_processes_create_one_fresh_home_together(tmp_path: Path, model_cache: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    home = tmp_path / "home"
    workers = [context.Process(target=_open_fresh_home, args=(str(home), str(model_cache), barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert rows(home / "helpdesk.sqlite", "SELECT COUNT(*) AS n FROM customers WHERE id = 'cus_mid_dup'")[0]["n"] == 1
    assert sorted(p.name for p in home.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "checkpoints.sqlite",
        "helpdesk.sqlite",
    ]


def _page_one_from_wal(wal: bytes, page_size: int) -> bytes:
    """The newest copy of page 1 in a write-ahead log (32-byte header, then frames of a 24-byte header and a page)."""
    newest = b""
    for offset in range(32, len(wal) - page_size - 23, 24 + page_size):
        if int.from_bytes(wal[offset : offset + 4], "big") == 1:
            newest = wal[offset + 24 : offset + 24 + page_size]
    assert newest, "the log holds no copy of page 1"
    return newest


def test_a_store_killed_in_the_middle_of_a_checkpoint_opens_with_all_its_rows(tmp_path: Path) -> None:
    # A checkpoint copies the log's pages into the file in page order: a kill after page 1 (whose header declares
    # the new size) and before the file has grown leaves a short file whose log holds every page. SQLite replays
    # the log, so the store is intact and must not be refused as truncated.
    source = tmp_path / "live.sqlite"
    conn = sqlite3.connect(source)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.executemany("INSERT INTO t (text) VALUES (?)", [("x" * 200,)] * 2000)
    conn.commit()
    store, wal = tmp_path / "checkpoints.sqlite", tmp_path / "checkpoints.sqlite-wal"
    shutil.copyfile(source, store)  # copied while the writer is open: the log is not folded in
    shutil.copyfile(source.with_name("live.sqlite-wal"), wal)
    conn.close()
    page_size = int.from_bytes(store.read_bytes()[16:18], "big")
    short = bytearray(store.read_bytes())
    short[:page_size] = _page_one_from_wal(wal.read_bytes(), page_size)
    store.write_bytes(bytes(short))
    declared = int.from_bytes(short[28:32], "big") * page_size
    assert store.stat().st_size < declared

    check_sqlite_file(store, what="checkpoint store")
    with sqlite3.connect(store) as reopened:
        assert reopened.execute("SELECT count(*) FROM t").fetchone() == (2000,)

    wal.unlink()  # the same short file without its log really is truncated
    with pytest.raises(DamagedStoreError, match="is truncated"):
        check_sqlite_file(store, what="checkpoint store")
