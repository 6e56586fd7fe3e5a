"""The shape the architecture promises, checked: who may import whom.

Who may import whom is import-linter's (the contracts in pyproject.toml: the layers studio.app -> gateway ->
functions -> the platform -> events, functions independent of each other, only events/ knowing NATS, no import
circle); .ci/run runs `lint-imports` and so does the first test here. The rest are what the library cannot
know: that its contracts name every function, and that functions/ holds nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from functions import NAMES

ROOT = Path(__file__).resolve().parent.parent


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    found: list[dict[str, Any]] = config["contracts"]
    return found


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert f"{len(contracts())} kept, 0 broken" in result.stdout


def test_the_contracts_cover_every_function_and_every_top_level_package() -> None:
    independent = [c for c in contracts() if c["type"] == "independence"]
    assert [sorted(c["modules"]) for c in independent] == [sorted(f"functions.{n}" for n in NAMES)]
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}
    platform = {p.parent.name for p in (ROOT / "studio").glob("*/__init__.py")}
    (layers,) = [c["layers"] for c in contracts() if c["type"] == "layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    assert {m.split(".")[0] for m in named} == packages, (
        "a top-level package outside the layers is checked by no contract"
    )
    assert {f"studio.{p}" for p in platform} <= named, "a part of the platform outside the layers"


def test_functions_holds_function_packages_only() -> None:
    packages = {p.name for p in (ROOT / "functions").iterdir() if p.is_dir() and p.name != "__pycache__"}
    with_handler = {p.parent.name for p in (ROOT / "functions").glob("*/handler.py")}
    assert packages == with_handler == set(NAMES)
