"""The demo's own home: emptied on every run, never a folder the demo did not make."""

from __future__ import annotations

from pathlib import Path

import pytest

from triage.demo import DemoHomeError, demo_settings, reset_demo_home
from triage.errors import TriageError
from triage.settings import Settings


def test_the_demo_runs_in_home_slash_demo_and_shares_the_classifier_cache(tmp_path: Path) -> None:
    settings = demo_settings(Settings(home=tmp_path / "home"))
    assert settings.home == tmp_path / "home" / "demo"
    assert settings.cache_dir == tmp_path / "home" / "cache", "the trained classifier is not trained again"


def test_each_run_starts_from_an_empty_demo_home(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    reset_demo_home(home)
    (home / "helpdesk.sqlite").write_text("yesterday's refunds")
    reset_demo_home(home)
    assert sorted(p.name for p in home.iterdir()) == [".triage-demo"]


def test_a_folder_the_demo_did_not_make_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(DemoHomeError, match="was not made by `triage demo`") as raised:
        reset_demo_home(home)
    assert isinstance(raised.value, TriageError)
    assert (home / "notes.txt").read_text() == "mine"
