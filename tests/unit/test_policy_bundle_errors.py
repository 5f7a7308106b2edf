"""Loading the policy bundle: the version every run records, and an error that names the file and field."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import policy_copy
from triage.errors import PolicyFileError
from triage.policies import load_policy_bundle
from triage.policies.bundle import POLICY_FILES

TAIL = ". Fix the field(s) named, or compare with the packaged default bundle."


def test_version_is_the_documented_hash_and_source_is_the_folder(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    digest = hashlib.sha256()
    for name in POLICY_FILES:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    bundle = load_policy_bundle(folder)
    assert bundle.version == digest.hexdigest()[:12]
    assert bundle.source == str(folder)
    assert load_policy_bundle().source.endswith("default")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "approvals.toml",
            "no_approval_max_cents = 5000",
            "no_approval_max_cents = -1",
            "refunds.no_approval_max_cents: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            "approvals.toml",
            'role = "agent"',
            'role = "boss"',
            "approvers.0.role: Input should be 'agent' or 'supervisor' (got 'boss')",
        ),
        (
            "permissions.toml",
            "[grants]",
            "[grant]",
            "grants: Field required (got {'grant': ",
        ),
        (
            "prompts.toml",
            'system = """You classify',
            'sistem = """You classify',
            "classify.system: Field required (got {'sistem': ",
        ),
        (
            "support.toml",
            "duplicate_window_hours = 72",
            "duplicate_window_hours = 0",
            "billing.duplicate_window_hours: Input should be greater than or equal to 1 (got 0)",
        ),
    ],
)
def test_invalid_file_names_file_field_and_value(tmp_path: Path, file: str, old: str, new: str, message: str) -> None:
    folder = policy_copy(tmp_path, file, old, new)
    with pytest.raises(PolicyFileError) as caught:
        load_policy_bundle(folder)
    text = str(caught.value)
    assert text.startswith(f"{folder / file}: ")
    assert message in text
    assert text.endswith(TAIL)


@pytest.mark.parametrize("file", POLICY_FILES)
def test_each_missing_file_is_named(tmp_path: Path, file: str) -> None:
    folder = policy_copy(tmp_path)
    (folder / file).unlink()
    with pytest.raises(PolicyFileError) as caught:
        load_policy_bundle(folder)
    assert str(caught.value) == f"{folder / file}: missing; copy it from the packaged default bundle"


def test_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "policies"
    not_a_folder.write_text("")
    with pytest.raises(PolicyFileError, match=r"permissions.toml: missing; copy it"):
        load_policy_bundle(not_a_folder)


@pytest.mark.parametrize("content", [b"[grants\n", b"\xff\xfe not text"])
def test_unreadable_toml_is_named(tmp_path: Path, content: bytes) -> None:
    folder = policy_copy(tmp_path)
    (folder / "permissions.toml").write_bytes(content)
    with pytest.raises(PolicyFileError) as caught:
        load_policy_bundle(folder)
    text = str(caught.value)
    assert text.startswith(f"{folder / 'permissions.toml'}: not valid TOML (")
    assert text.endswith("); fix the syntax")


def test_every_problem_in_a_file_is_named_in_one_message(tmp_path: Path) -> None:
    folder = policy_copy(
        tmp_path,
        "approvals.toml",
        "no_approval_max_cents = 5000          # $50\nsingle_approval_max_cents = 50000",
        "no_approval_max_cents = -1\nsingle_approval_max_cents = -2",
    )
    with pytest.raises(PolicyFileError) as caught:
        load_policy_bundle(folder)
    assert str(caught.value) == (
        f"{folder / 'approvals.toml'}: refunds.no_approval_max_cents: Input should be greater than or equal to 0 "
        "(got -1); refunds.single_approval_max_cents: Input should be greater than or equal to 0 (got -2)" + TAIL
    )


@pytest.mark.parametrize("value", ["1", "10"])
def test_the_ask_cap_is_a_policy_setting_within_its_bounds(tmp_path: Path, value: str) -> None:
    folder = policy_copy(tmp_path, "support.toml", "max_asks = 3", f"max_asks = {value}")
    bundle = load_policy_bundle(folder)
    assert bundle.support.planning.max_asks == int(value)
    assert bundle.version != load_policy_bundle().version, "the cap is versioned with the bundle"
    assert load_policy_bundle().support.planning.max_asks == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "planning.max_asks: Input should be greater than or equal to 1 (got 0)"),
        ("11", "planning.max_asks: Input should be less than or equal to 10 (got 11)"),
        ("2.5", "planning.max_asks: Input should be a valid integer (got 2.5)"),
        ('"3"', "planning.max_asks: Input should be a valid integer (got '3')"),
        ("true", "planning.max_asks: Input should be a valid integer (got True)"),
    ],
)
def test_a_bad_ask_cap_is_a_typed_policy_error(tmp_path: Path, value: str, message: str) -> None:
    folder = policy_copy(tmp_path, "support.toml", "max_asks = 3", f"max_asks = {value}")
    with pytest.raises(PolicyFileError) as raised:
        load_policy_bundle(folder)
    assert str(raised.value) == f"{folder / 'support.toml'}: {message}{TAIL}"
