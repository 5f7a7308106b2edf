"""scripts/mutation.py's bookkeeping over mutmut's result files: what `--recheck` runs again, and what it keeps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.configure(tmp_path / "stage", tmp_path / "tests")
    equivalent = tmp_path / "equivalent.md"
    equivalent.write_text("- `m.x_f__mutmut_9`: changes nothing.\n")
    monkeypatch.setattr(module, "EQUIVALENT", equivalent)
    return module


def test_recheck_forgets_survivors_but_keeps_timeouts_kills_type_errors_and_equivalents(
    script: ModuleType, tmp_path: Path
) -> None:
    meta = tmp_path / "stage" / "mutants" / "src" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {
        "m.x_f__mutmut_1": 0,  # survived
        "m.x_f__mutmut_2": 1,  # killed
        "m.x_f__mutmut_3": 36,  # timeout (mutmut's own limit)
        "m.x_f__mutmut_4": -24,  # timeout (SIGXCPU, the CPU time limit)
        "m.x_f__mutmut_5": 37,  # caught by the type check
        "m.x_f__mutmut_6": None,  # not checked
        "m.x_f__mutmut_7": 33,  # no tests
        "m.x_f__mutmut_8": 35,  # suspicious
        "m.x_f__mutmut_9": 0,  # survived, listed as equivalent
        "m.x_f__mutmut_10": 34,  # skipped
    }
    meta.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))
    assert sorted(script.forget_survivors()) == ["m.x_f__mutmut_1", "m.x_f__mutmut_7", "m.x_f__mutmut_8"]
    forgotten = {"m.x_f__mutmut_1": None, "m.x_f__mutmut_7": None, "m.x_f__mutmut_8": None}
    assert json.loads(meta.read_text()) == {"exit_code_by_key": {**codes, **forgotten}, "durations_by_key": {}}
    assert script.forget_survivors() == [], "a second recheck has nothing left to forget"
