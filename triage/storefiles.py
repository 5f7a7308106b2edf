"""The files a home holds: checked before they are opened, created whole or not at all.

A store file that exists is opened only if it is intact; an empty, truncated or foreign file is refused with a
`DamagedStoreError` and left untouched (re-creating it would silently drop history, the effects ledger and pending
approvals). A missing store is built in a temporary file beside it and linked into place atomically, so a
half-created store never exists under its real name and two processes creating one home at once agree on one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from triage.errors import DamagedStoreError, StoreError

T = TypeVar("T")

SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100


def prepare_home(home: Path) -> None:
    """Create `home` if it is missing; refuse one that is a file, sits under a file, or cannot be written.

    Raises:
        StoreError: saying what is wrong with the folder and what to do.
    """
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"home {home} is a file, not a folder; choose another --home (or TRIAGE_HOME)") from None
    except NotADirectoryError:
        raise StoreError(
            f"home {home} is inside a file, not a folder; choose another --home (or TRIAGE_HOME)"
        ) from None
    except PermissionError:
        raise StoreError(f"cannot create home {home}: permission denied; choose a folder you can write to") from None
    except OSError as exc:
        raise StoreError(f"cannot create home {home}: {exc.strerror}; choose another --home") from None
    if not home.is_dir():
        raise StoreError(f"home {home} is not a folder; choose another --home (or TRIAGE_HOME)")
    if not os.access(home, os.W_OK | os.X_OK):
        raise StoreError(
            f"home {home} is read-only: triage keeps its stores and their write-ahead logs there; make it writable "
            "(chmod u+w) or choose another --home"
        )


def check_sqlite_file(path: Path, *, what: str) -> None:
    """Refuse an existing file that is not an intact SQLite database (empty, foreign or truncated).

    Only the header and the size are read, so this costs the same for any size of store. A file shorter than its
    header declares is intact when its write-ahead log holds frames: a checkpoint copies the log's pages into the
    file in page order, so the header (page 1) grows before the file does, and a writer in another process, or one
    killed in the middle, leaves exactly that; SQLite replays the log on open. Without a log it is re-read a few
    times first (a checkpoint that ends by truncating the log may be finishing in another process).

    Raises:
        DamagedStoreError: the file is empty, not SQLite, or truncated.
        StoreError: the file cannot be read.
    """
    for attempt in range(4):
        try:
            size = path.stat().st_size
            with path.open("rb") as file:
                header = file.read(_HEADER_BYTES)
        except IsADirectoryError:
            raise StoreError(f"the {what} {path} is a folder, not a file; move it aside") from None
        except PermissionError:
            raise StoreError(f"cannot read the {what} {path}: permission denied; fix its permissions") from None
        except OSError as exc:
            raise StoreError(f"cannot read the {what} {path}: {exc.strerror}") from None
        if size == 0:
            raise DamagedStoreError(path, f"is empty (0 bytes), so it is not a usable {what}")
        if len(header) < _HEADER_BYTES or not header.startswith(SQLITE_MAGIC):
            raise DamagedStoreError(
                path, f"is not an SQLite database (its first bytes are not an SQLite header): not a {what}"
            )
        declared = _declared_size(header)
        if declared is None or size >= declared or _has_wal_frames(path):
            return
        if attempt < 3:
            time.sleep(0.05)
    raise DamagedStoreError(path, f"is truncated: {size} bytes of the {declared} its header declares")


def _has_wal_frames(path: Path) -> bool:
    """Whether the database's write-ahead log holds frames past its 32-byte header (SQLite replays them on open)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 32
    except OSError:
        return False


def _declared_size(header: bytes) -> int | None:
    """The database size an SQLite header declares, when that field is valid (version-valid-for matches)."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages == 0 or header[24:28] != header[92:96]:
        return None
    return page_size * pages


class LoopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose statements run on the event loop's own thread: it has no thread of its own.

    For a home one process uses alone with `synchronous = OFF` (`Settings.sqlite_on_loop`, the eval's homes): no
    statement there waits for the disk, and the hop to a connection's thread and back (a queue, a wake-up of the
    loop) cost more than the statement it carried, a fifth of a case's time. Every aiosqlite call on it, and
    `on_connection_thread`, runs at once and in order, so its statements never overlap. A statement that waits for
    another connection's lock (up to the busy timeout) or for the disk stalls every task of the loop meanwhile.
    """

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()

    _opened_on: int | None = None
    """The thread that opened the sqlite3 connection (the loop's): the only one its `close` may be called on."""

    async def _connect(self) -> aiosqlite.Connection:
        if self._connection is None:
            self._connection = self._connector()
            self._opened_on = threading.get_ident()
        return self

    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    def stop(self) -> None:
        """Close the sqlite3 connection now (there is no thread to stop).

        On another thread than the loop's, it is only let go: that is aiosqlite's `__del__` for a connection never
        closed (an app a script did not close), run where the object was collected, often as the process exits. The
        sqlite3 connection refuses `close` off its own thread, and closes itself once it is garbage.
        """
        self._running = False
        connection, self._connection = self._connection, None
        if connection is not None and threading.get_ident() == self._opened_on:
            connection.close()


def connect(path: Path, *, on_loop: bool = False, **kwargs: Any) -> aiosqlite.Connection:
    """An aiosqlite connection to `path` (await it to open): a `LoopConnection` when `on_loop`, else aiosqlite's.

    `kwargs` go to `sqlite3.connect`, as with `aiosqlite.connect`.
    """
    if on_loop:
        return LoopConnection(partial(sqlite3.connect, str(path), **kwargs), iter_chunk_size=64)
    return aiosqlite.connect(path, **kwargs)


async def on_connection_thread(
    conn: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T], *, writes: bool = False
) -> T:
    """Run `work` with the sqlite3 connection behind `conn`, on that connection's own thread, in one hop.

    Every aiosqlite call is a hop to that thread and a wake-up of the event loop on the way back: a query read with
    `execute`, `fetchall` and the cursor's close takes three, and the hops were the largest share of a ticket's CPU
    time. `Connection._execute` is aiosqlite's own way to queue a call on that thread (private, but what every
    public method of it uses). The caller serialises use of the connection as it does for aiosqlite's own calls.

    `writes` says that `work` is a whole write transaction: it then runs holding the file's `WriterLock`, when the
    connection has one (`hold_writes_in_turn`).
    """
    lock = _writer_locks.get(conn) if writes else None
    if lock is None:
        result: T = await conn._execute(lambda: work(conn._conn))  # type: ignore[no-untyped-call]
    else:
        result = await conn._execute(lambda: lock.run(work, conn._conn))  # type: ignore[no-untyped-call]
    return result


class WriterLock:
    """A lock file beside an SQLite file (`<file>-writer`) that the processes writing to it take in turn.

    SQLite lets one writer at a time into a file; a process that finds it taken sleeps in SQLite's busy handler
    (1, 2, 5, 10 ms ...), far longer than a commit holds it (0.2-0.4 ms here). Two worker processes on one home
    then spent their time asleep and together did what one did alone. Taken around a write transaction (`flock`),
    this lock queues the writers at a finer grain: a writer that finds it held tries again after 50 us, doubling up
    to `MAX_NAP`. SQLite's own locking still decides: a writer that does not take this lock (another version, a
    tool, a transaction of several hops) is waited for as before.

    `wait` is the connection's busy timeout, and a write waits no longer in all: what it spent waiting for this
    lock is taken off SQLite's wait, and a writer that waited all of it (a holder stopped, say) tries SQLite once
    and fails as busy if SQLite's lock is held too. After giving up, a writer tries the lock once without waiting
    until it gets it again, so a stopped holder costs one wait, not one each write. The kernel drops the lock of a
    process that dies. A lock file that cannot be opened, or a file system without `flock`, leaves writes to
    SQLite's locking alone.
    """

    MAX_NAP = 0.001
    """Longest sleep between two tries while another process holds the lock (seconds)."""
    WAITED = 0.05
    """A wait for the lock this long (seconds) is taken off SQLite's busy timeout for the write; shorter ones are not
    worth the two statements."""

    def __init__(self, path: Path, *, wait: float = 10.0) -> None:
        self.path = Path(f"{path}-writer")
        self.wait = wait
        self._fd: int | None = None
        self._gave_up = False
        self._held = False
        self._shortened = False

    def run(self, work: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> T:
        """`work(db)` holding the lock, on the connection's thread (it waits there while another process holds it)."""
        entered = self.enter(db)
        try:
            return work(db)
        finally:
            if entered:
                self.leave(db)

    def enter(self, db: sqlite3.Connection) -> bool:
        """Take the lock before a write transaction on `db`'s thread; whether there is anything for `leave` to end.

        `leave` ends it after the transaction's COMMIT or ROLLBACK (`run` does both around one hop's work).
        """
        fd = self._open()
        if fd is None or db.in_transaction or self._held:  # no lock file, or in a transaction: SQLite's lock holds
            return False
        started = time.monotonic()
        self._held = self._take(fd)
        waited = time.monotonic() - started
        if waited >= self.WAITED:
            db.execute(f"PRAGMA busy_timeout = {round(max(0.0, self.wait - waited) * 1000)}")
            self._shortened = True
        return self._held or self._shortened

    def leave(self, db: sqlite3.Connection) -> None:
        """Release what `enter` took, after the transaction's COMMIT or ROLLBACK; nothing when it took nothing."""
        try:
            if self._shortened:
                self._shortened = False
                db.execute(f"PRAGMA busy_timeout = {round(self.wait * 1000)}")
        finally:
            if self._held and self._fd is not None:
                self._held = False
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _take(self, fd: int) -> bool:
        nap, deadline = 0.00005, time.monotonic() + (0.0 if self._gave_up else self.wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._gave_up = False
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._gave_up = True
                    return False
                time.sleep(nap)
                nap = min(nap * 2, self.MAX_NAP)
            except OSError:  # no flock here: SQLite's locking alone
                return False

    def _open(self) -> int | None:
        if self._fd is None:
            try:  # read-only is enough for flock: a lock file another user created serves as well
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:  # tried again at the next write: a full table of open files passes
                return None
        return self._fd

    def close(self) -> None:
        """Close the lock file (the lock is not held between calls of `run`)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_writer_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, WriterLock] = weakref.WeakKeyDictionary()


def writer_lock_of(conn: aiosqlite.Connection) -> WriterLock | None:
    """The `WriterLock` the write transactions on `conn` take (`hold_writes_in_turn`), if any."""
    return _writer_locks.get(conn)


def hold_writes_in_turn(conn: aiosqlite.Connection, path: Path, *, wait: float = 10.0) -> None:
    """Make the write transactions on `conn` (`on_connection_thread(..., writes=True)`) take `path`'s `WriterLock`.

    `path` is the file `conn` is open on; `wait` is how long a writer waits for the lock before it goes on without
    it (the connection's busy timeout). The lock file is closed once the connection is gone.
    """
    lock = WriterLock(path, wait=wait)
    _writer_locks[conn] = lock
    weakref.finalize(conn, lock.close)


SYNCHRONOUS_MODES = ("full", "normal", "off")
"""SQLite `synchronous` settings a store may run with (`Settings.sqlite_synchronous` says what each risks)."""


def commit_unsynced(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run `work` (statements and their COMMIT) with `synchronous = NORMAL`, when the connection's level is stricter.

    In WAL mode a commit that is not synced survives the process being killed (it is in the log file); on a power
    loss it is lost with whatever was written after the last synced commit on the file. For writes that nothing
    needs after a power loss (a lease: its holder died with the machine), or that the next synced commit on the same
    connection covers, this spares the disk a sync (0.1-0.2 ms here).
    """
    (level,) = conn.execute("PRAGMA synchronous").fetchone()
    if level <= _NORMAL:
        return work()
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        return work()
    finally:
        try:
            if conn.in_transaction:  # a COMMIT that failed without undoing: the level cannot change in one
                conn.rollback()
        finally:
            conn.execute(f"PRAGMA synchronous = {level}")


_NORMAL = 1
"""SQLite's `synchronous` level NORMAL (OFF 0, FULL 2, EXTRA 3)."""


def synchronous_pragma(mode: str) -> str:
    """The statement that sets SQLite's `synchronous` for a connection: `mode` is full, normal or off."""
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {mode!r}")
    return f"PRAGMA synchronous = {mode.upper()}"


def describe_open_error(path: Path, what: str, exc: sqlite3.Error) -> StoreError:
    """Turn an SQLite error raised while opening a store into a typed error that says what to do."""
    if not isinstance(exc, sqlite3.OperationalError):  # SQLITE_CORRUPT, SQLITE_NOTADB and kin
        return DamagedStoreError(path, f"is damaged ({exc}): not a usable {what}")
    message = str(exc).lower()
    if "readonly" in message or "read-only" in message or "unable to open" in message:
        return StoreError(
            f"cannot write the {what} {path} ({exc}): make the file and its folder writable, or choose another --home"
        )
    if "locked" in message or "busy" in message:
        return StoreError(f"the {what} {path} is locked by another process ({exc}); wait for it, then try again")
    return StoreError(f"cannot open the {what} {path}: {exc}; check the folder's permissions and free space")


async def create_atomically(path: Path, build: Callable[[aiosqlite.Connection], Awaitable[None]]) -> bool:
    """Build a new SQLite store with `build` in a temporary file and link it to `path` unless one appeared there.

    Returns whether this call created the file (False: another process created it first; theirs is kept).

    Raises:
        StoreError: the folder cannot be written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        conn = await aiosqlite.connect(temporary, isolation_level=None)
    except sqlite3.Error as exc:
        raise describe_open_error(path, "store", exc) from None
    try:
        try:
            await build(conn)
        finally:
            await conn.close()
        try:
            await asyncio.to_thread(os.link, temporary, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise StoreError(f"cannot create {path}: {exc.strerror}; check the folder") from None
            # No hard links on this filesystem: fall back to a rename, which replaces only if still absent.
            if await asyncio.to_thread(path.exists):
                return False
            await asyncio.to_thread(os.replace, temporary, path)
        return True
    except sqlite3.Error as exc:
        raise describe_open_error(path, "store", exc) from None
    finally:
        await asyncio.to_thread(_remove_leftovers, temporary)


def _remove_leftovers(temporary: Path) -> None:
    for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm"), Path(f"{temporary}-journal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
