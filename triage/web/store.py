"""The web app's own SQLite file, `<home>/web.sqlite`: passwords, sessions, login links, throttling, intake keys.

Secrets are never stored in the clear: passwords as scrypt hashes, session ids and login links as SHA-256 digests
(what the browser or the link holds is the only copy of the secret). The session cookie is also signed (HMAC-SHA256
with a random key kept in this file): a cookie that was not issued here is refused before any lookup. Every method
opens its own short connection, so the CLI (setting a password) and a running server can share the file.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passwords (
    approver_id TEXT PRIMARY KEY,
    hash        TEXT NOT NULL,
    set_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_digest   TEXT PRIMARY KEY,
    approver_id TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_links (
    token_digest TEXT PRIMARY KEY,
    approver_id  TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT
);
CREATE TABLE IF NOT EXISTS login_failures (
    id          INTEGER PRIMARY KEY,
    approver_id TEXT NOT NULL,
    address     TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_who ON login_failures(approver_id, at);
CREATE INDEX IF NOT EXISTS login_failures_by_address ON login_failures(address, at);
CREATE TABLE IF NOT EXISTS intake_keys (
    key         TEXT PRIMARY KEY,
    thread_id   TEXT NOT NULL,
    body_digest TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_key (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    key TEXT NOT NULL
);
"""

# Columns added to intake_keys after its first release (ALTER TABLE on files that lack them): the ticket as posted,
# when a server last took the run on, when it started (wrote its thread) or was given up, how many tries, and why
# it was given up.
_INTAKE_COLUMNS = {
    "body": "BLOB",
    "claimed_at": "TEXT",
    "started_at": "TEXT",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "failure": "TEXT",
}

# scrypt with n=2**14, r=8, p=1 (RFC 7914's interactive figure; about 16 MiB and 50 ms per hash).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 12


def hash_password(password: str) -> str:
    """A salted scrypt hash in the form `scrypt$n$r$p$salt$hash` (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a hash from `hash_password` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected) // 2
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UnstartedIntake:
    """A ticket intake accepted whose run never wrote its thread (the server stopped, or the run could not start)."""

    key: str
    thread_id: str
    body: bytes
    claimed_at: str
    attempts: int


@dataclass(frozen=True)
class WebSession:
    """A signed-in person's session: who, the CSRF token of their forms, and when it ends."""

    approver_id: str
    csrf: str
    expires_at: datetime


class WebStore:
    """Password hashes, sessions, login links, sign-in failures and intake keys in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False
        self._key = b""

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            if not self._ready:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                self._migrate(conn)
                self._key = self._signing_key(conn)
                self._ready = True
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        have = {row[1] for row in conn.execute("PRAGMA table_info(intake_keys)")}
        for name, kind in _INTAKE_COLUMNS.items():
            if name not in have:
                try:
                    conn.execute(f"ALTER TABLE intake_keys ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
        if "started_at" not in have:
            # Keys accepted before the ticket was kept cannot be run again: count them as started.
            conn.execute("UPDATE intake_keys SET started_at = created_at WHERE body IS NULL")

    @staticmethod
    def _signing_key(conn: sqlite3.Connection) -> bytes:
        conn.execute("INSERT OR IGNORE INTO signing_key (id, key) VALUES (1, ?)", (secrets.token_hex(32),))
        return bytes.fromhex(conn.execute("SELECT key FROM signing_key WHERE id = 1").fetchone()[0])

    def _sign(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def _unsign(self, cookie: str) -> str | None:
        """The session token inside a cookie value, or None when its signature is not ours."""
        token, dot, signature = cookie.rpartition(".")
        if not dot or not token:
            return None
        return token if hmac.compare_digest(self._sign(token), signature) else None

    # -- passwords -------------------------------------------------------------------------------------------

    def set_password(self, approver_id: str, password: str) -> None:
        """Store a new password hash for `approver_id` and end their existing sessions."""
        hashed = hash_password(password)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO passwords (approver_id, hash, set_at) VALUES (?, ?, ?) "
                "ON CONFLICT(approver_id) DO UPDATE SET hash = excluded.hash, set_at = excluded.set_at",
                (approver_id, hashed, _now().isoformat(timespec="seconds")),
            )
            conn.execute("DELETE FROM sessions WHERE approver_id = ?", (approver_id,))
            conn.execute("COMMIT")

    def has_password(self, approver_id: str) -> bool:
        """Whether `approver_id` has a password set."""
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM passwords WHERE approver_id = ?", (approver_id,)).fetchone() is not None

    def check_password(self, approver_id: str, password: str) -> bool:
        """Whether `password` is `approver_id`'s; False for someone without a password."""
        with self._connect() as conn:
            row = conn.execute("SELECT hash FROM passwords WHERE approver_id = ?", (approver_id,)).fetchone()
        if row is None:
            verify_password(password, hash_password("not a real password"))  # same work either way
            return False
        return verify_password(password, row[0])

    # -- sign-in throttling ----------------------------------------------------------------------------------

    def recent_failures(self, approver_id: str, address: str, window: timedelta) -> int:
        """Failed sign-ins for this person, or from this address, within `window`."""
        since = (_now() - window).isoformat()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT MAX((SELECT COUNT(*) FROM login_failures WHERE approver_id = ? AND at > ?), "
                "(SELECT COUNT(*) FROM login_failures WHERE address = ? AND at > ?))",
                (approver_id, since, address, since),
            ).fetchone()
        return int(row[0])

    def record_failure(self, approver_id: str, address: str) -> None:
        """Remember a failed sign-in."""
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO login_failures (approver_id, address, at) VALUES (?, ?, ?)",
                (approver_id, address, _now().isoformat()),
            )

    def clear_failures(self, approver_id: str) -> None:
        """Forget a person's failed sign-ins after they signed in."""
        with self._connect() as conn:
            conn.execute("DELETE FROM login_failures WHERE approver_id = ?", (approver_id,))

    # -- sessions --------------------------------------------------------------------------------------------

    def create_session(self, approver_id: str, lifetime: timedelta) -> tuple[str, WebSession]:
        """Start a session; returns the signed session id (the cookie's value) and the session."""
        token = secrets.token_urlsafe(32)
        session = WebSession(approver_id=approver_id, csrf=secrets.token_urlsafe(32), expires_at=_now() + lifetime)
        with self._connect() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (_now().isoformat(),))
            conn.execute(
                "INSERT INTO sessions (id_digest, approver_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (
                    _digest(token),
                    approver_id,
                    session.csrf,
                    _now().isoformat(),
                    session.expires_at.isoformat(),
                ),
            )
        return f"{token}.{self._sign(token)}", session

    def session(self, session_id: str) -> WebSession | None:
        """The live session with this signed id, or None (badly signed, unknown, ended or expired)."""
        with self._connect() as conn:
            token = self._unsign(session_id)
            if token is None:
                return None
            row = conn.execute(
                "SELECT approver_id, csrf, expires_at FROM sessions WHERE id_digest = ? AND expires_at > ?",
                (_digest(token), _now().isoformat()),
            ).fetchone()
        if row is None:
            return None
        return WebSession(approver_id=row[0], csrf=row[1], expires_at=datetime.fromisoformat(row[2]))

    def end_session(self, session_id: str) -> None:
        """Sign out: the session id stops working at once, wherever the cookie was copied to."""
        with self._connect() as conn:
            token = self._unsign(session_id)
            if token is not None:
                conn.execute("DELETE FROM sessions WHERE id_digest = ?", (_digest(token),))

    # -- one-time login links --------------------------------------------------------------------------------

    def create_login_link(self, approver_id: str, lifetime: timedelta) -> str:
        """A token that signs `approver_id` in once before `lifetime` passes."""
        token = secrets.token_urlsafe(32)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO login_links (token_digest, approver_id, expires_at) VALUES (?, ?, ?)",
                (_digest(token), approver_id, (_now() + lifetime).isoformat()),
            )
        return token

    def use_login_link(self, token: str) -> str | None:
        """Spend a login token: its approver id the first time within its lifetime, None ever after."""
        now = _now().isoformat()
        with self._connect() as conn:
            row = conn.execute(
                "UPDATE login_links SET used_at = ? WHERE token_digest = ? AND used_at IS NULL AND expires_at > ? "
                "RETURNING approver_id",
                (now, _digest(token), now),
            ).fetchone()
        return None if row is None else str(row[0])

    # -- intake idempotency ----------------------------------------------------------------------------------

    def claim_intake_key(self, key: str, thread_id: str, body: bytes) -> tuple[str, bool]:
        """Bind an Idempotency-Key to a thread; returns (thread_id, created).

        A key seen before returns its first thread and `created=False`; raises `ValueError` when the key was used
        for a different body.
        """
        body_digest = hashlib.sha256(body).hexdigest()
        now = _now().isoformat()
        with self._connect() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO intake_keys (key, thread_id, body_digest, created_at, body, claimed_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, thread_id, body_digest, now, body, now),
            ).rowcount
            if inserted:
                return thread_id, True
            first, first_digest = conn.execute(
                "SELECT thread_id, body_digest FROM intake_keys WHERE key = ?", (key,)
            ).fetchone()
        if first_digest != body_digest:
            raise ValueError(key)
        return str(first), False

    def intake_started(self, key: str) -> None:
        """The run of the ticket accepted under `key` returned (or its thread exists): no server starts it again."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE intake_keys SET started_at = ? WHERE key = ? AND started_at IS NULL", (_now().isoformat(), key)
            )

    def intake_given_up(self, key: str, reason: str) -> None:
        """The ticket accepted under `key` cannot be run (e.g. its customer is gone): stop trying, and say why.

        Only that submission: a conversation's other follow-ups (they share its thread) are left as they are.
        """
        with self._connect() as conn:
            conn.execute(
                "UPDATE intake_keys SET started_at = ?, failure = ? WHERE key = ? AND started_at IS NULL",
                (_now().isoformat(), reason, key),
            )

    def intake_state(self, thread_id: str) -> tuple[bool, str | None] | None:
        """For a thread intake accepted: whether its latest submission's run returned (or was given up), and why not.

        A conversation's follow-ups share its thread: the latest one is what the thread's status URL answers for.
        None for a thread intake did not accept.
        """
        with self._connect() as conn:
            row = conn.execute(
                "SELECT started_at, failure FROM intake_keys WHERE thread_id = ? ORDER BY created_at DESC, rowid DESC "
                "LIMIT 1",
                (thread_id,),
            ).fetchone()
        return None if row is None else (row[0] is not None, None if row[1] is None else str(row[1]))

    def unstarted_intakes(self, lease: timedelta, limit: int = 100) -> list[UnstartedIntake]:
        """Accepted tickets whose run has not started, and that no server has taken on within `lease`."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key, thread_id, body, claimed_at, attempts FROM intake_keys "
                "WHERE started_at IS NULL AND body IS NOT NULL AND (claimed_at IS NULL OR claimed_at < ?) "
                "ORDER BY created_at LIMIT ?",
                ((_now() - lease).isoformat(), limit),
            ).fetchall()
        return [UnstartedIntake(str(k), str(t), bytes(b), str(c or ""), int(a)) for k, t, b, c, a in rows]

    def keep_intake_claimed(self, key: str) -> None:
        """The run of the intake under `key` goes on here: push its claim on, so no server takes it for abandoned."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE intake_keys SET claimed_at = ? WHERE key = ? AND started_at IS NULL", (_now().isoformat(), key)
            )

    def take_on_intake(self, intake: UnstartedIntake) -> bool:
        """Claim an unstarted intake for this server (compare-and-set: of several servers, one wins)."""
        with self._connect() as conn:
            changed = conn.execute(
                "UPDATE intake_keys SET claimed_at = ?, attempts = attempts + 1 "
                "WHERE key = ? AND started_at IS NULL AND COALESCE(claimed_at, '') = ?",
                (_now().isoformat(), intake.key, intake.claimed_at),
            ).rowcount
        return bool(changed)
