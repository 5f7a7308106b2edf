"""Run mypy --strict on the package as it installs: `triage.graphs` is `graphs/`, and so on.

mypy cannot follow setuptools' editable-install finder, so this lays out the installed package tree as symlinks
(from `[tool.setuptools] package-dir` in pyproject.toml) under build/typecheck/ and checks that, reporting
errors against the real source files.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
FARM = ROOT / "build" / "typecheck"


def build_farm() -> None:
    """Mirror every mapped package folder's .py/.pyi/py.typed files into FARM as symlinks."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shutil.rmtree(FARM, ignore_errors=True)
    for package in config["packages"]:
        parent, _, leaf = package.rpartition(".")
        source = config["package-dir"].get(package)
        folder = ROOT / source if source else ROOT / config["package-dir"][parent] / leaf
        target = FARM / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for file in folder.iterdir():
            if file.suffix in (".py", ".pyi") or file.name == "py.typed":
                (target / file.name).symlink_to(file)


def main() -> int:
    """Build the tree, run mypy on it, print errors with real paths."""
    build_farm()
    os.chdir(FARM)
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "-p", "triage"])
    for line in stdout.splitlines():
        path, sep, rest = line.partition(":")
        if sep and Path(path).is_symlink():
            line = f"{os.path.relpath(Path(path).resolve(), ROOT)}:{rest}"
        print(line)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
