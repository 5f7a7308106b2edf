"""The demo's own home: emptied on every run, never a folder the demo did not make."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from triage.demo import DEMO_BILLING_DATE, DemoHomeError, demo_settings, reset_demo_home
from triage.errors import TriageError
from triage.policies.account import billing_moment
from triage.settings import Settings


def test_the_demo_runs_in_home_slash_demo_and_shares_the_classifier_cache(tmp_path: Path) -> None:
    settings = demo_settings(Settings(home=tmp_path / "home"))
    assert settings.home == tmp_path / "home" / "demo"
    assert settings.cache_dir == tmp_path / "home" / "cache", "the trained classifier is not trained again"


def test_the_demo_bills_as_of_a_fixed_day_and_the_app_as_of_today(tmp_path: Path) -> None:
    """A plan change's prorated amount depends on the day: the demo's table must be the same on any day."""
    assert demo_settings(Settings(home=tmp_path / "home")).billing_date == DEMO_BILLING_DATE
    assert Settings(home=tmp_path / "home").billing_date is None
    assert billing_moment(date(2026, 9, 15)) == datetime(2026, 9, 15, 12, tzinfo=UTC)
    before = datetime.now(UTC)
    assert before <= billing_moment(None) <= datetime.now(UTC)


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
