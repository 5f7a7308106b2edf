"""The CLI in a hostile environment: a home that is a file or read-only, damaged stores. Each case exits 2 with one
clear line (a JSON error object with --json), never a traceback, and every file is left as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from triage import TriageApp
from triage.settings import Settings

pytestmark = pytest.mark.slow

TICKET = ("--customer-id", "cus_mid_dup", "--subject", "Charged twice", "--body", "You charged me twice, refund one.")


def _without_root_override() -> list[str] | None:
    """A command prefix under which permission bits apply (root ignores them); None when none is available."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def triage(home: Path, cache: Path, *args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "triage", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "TRIAGE_CACHE_HOME": str(cache)},
        timeout=120,
        check=False,
    )


def contents(root: Path) -> dict[str, bytes | None]:
    """Every file under `root` and its bytes (None for a folder)."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def used_home(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    home = tmp_path_factory.mktemp("used") / "home"
    with TriageApp(Settings(home=home, cache_home=model_cache)) as app:
        assert app.run({"customer_id": "cus_mid_dup", "body": "Charged twice, refund one."}).status == (
            "awaiting_approval"
        )
    return home


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


HARM: dict[str, Callable[[Path], None]] = {"empty": _empty, "truncated": _truncated, "garbage": _garbage}


@pytest.mark.parametrize("store", ["helpdesk.sqlite", "checkpoints.sqlite"])
@pytest.mark.parametrize("harm", list(HARM))
def test_damaged_store(tmp_path: Path, used_home: Path, model_cache: Path, store: str, harm: str) -> None:
    home = tmp_path / "home"
    shutil.copytree(used_home, home)
    HARM[harm](home / store)
    before = contents(home)
    assert_refused(triage(home, model_cache, "threads"), str(home / store), "restore it from a backup")
    if harm == "garbage":
        as_json = triage(home, model_cache, "run", *TICKET, "--json")
        assert as_json.returncode == 2
        error = json.loads(as_json.stdout)["error"]
        assert error["type"] == "DamagedStoreError" and str(home / store) in error["message"]
    assert contents(home) == before


@pytest.mark.parametrize("below", ["", "below"])
def test_home_is_a_file_or_under_one(tmp_path: Path, model_cache: Path, below: str) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("someone's notes\n")
    home = file / below if below else file
    assert_refused(triage(home, model_cache, "threads"), str(home), "inside a file" if below else "is a file")
    as_json = triage(home, model_cache, "run", *TICKET, "--json")
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["error"]["type"] == "StoreError"
    assert file.read_text() == "someone's notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_system_file_as_home(model_cache: Path) -> None:
    passwd = Path("/etc/passwd")
    if not passwd.is_file():
        pytest.skip("no /etc/passwd here")
    before = passwd.read_bytes()
    assert_refused(triage(passwd, model_cache, "threads"), "/etc/passwd", "is a file")
    assert passwd.read_bytes() == before


@pytest.mark.parametrize("used", [True, False], ids=["used home", "new home"])
def test_read_only_home(tmp_path: Path, used_home: Path, model_cache: Path, used: bool) -> None:
    prefix = _without_root_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    home = tmp_path / "home"
    if used:
        shutil.copytree(used_home, home)
    else:
        home.mkdir()
    before = contents(home)
    home.chmod(0o555)
    try:
        assert_refused(triage(home, model_cache, "threads", prefix=prefix), str(home), "read-only")
        as_json = triage(home, model_cache, "run", *TICKET, "--json", prefix=prefix)
        assert as_json.returncode == 2 and "read-only" in json.loads(as_json.stdout)["error"]["message"]
    finally:
        home.chmod(0o755)
    assert contents(home) == before
