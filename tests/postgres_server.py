"""A real PostgreSQL server for tests: Debian's `postgresql` package (installed when missing), a temporary data
directory, loopback only, a free port; stopped when the tests are done."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.local_services import apt_install, free_port

RUN_AS = "postgres"
"""PostgreSQL refuses to run as root; Debian's package creates this user."""


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> Path:
    """The folder of PostgreSQL's server binaries, installing Debian's `postgresql` package if it is missing."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        apt_install("postgresql")
        bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's initdb was not found after installing the postgresql package")
    return bin_dir


def _as_server_user(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", RUN_AS, "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


@contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[str]:
    """Start a throwaway server with its data in a new temporary folder; yield a URL to its `triage` database.

    `fsync` makes every commit wait for the disk (off by default: the tests check behaviour, not durability
    against a power cut, and run faster without it).

    The folder is made directly under the system's temporary directory: pytest's own are private to root, and the
    server runs as its own user.
    """
    bin_dir = ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix="triage-pg-"))
    data = folder / "pgdata"
    sockets = folder / "pgsock"
    for path in (data, sockets):
        path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam(RUN_AS)
        for path in (folder, data, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
    port = free_port()
    log = folder / "postgres.log"
    if os.geteuid() == 0:
        log.touch()
        os.chown(log, pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not fsync:
        options += " -c fsync=off"
    _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"])
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True, check=False
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "triage"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/triage"
    finally:
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)
