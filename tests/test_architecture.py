"""The shape the architecture promises, checked: who may import whom, and README kept true."""

from __future__ import annotations

import ast
from pathlib import Path

from functions import NAMES
from functions.runtime.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
SHARED = {"runtime", "clients", "catalog"}  # what every function may use


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_functions_never_import_each_other() -> None:
    offences = []
    for name in NAMES:
        for path in (ROOT / "functions" / name).rglob("*.py"):
            for module in imports(path):
                parts = module.split(".")
                if parts[0] == "functions" and len(parts) > 1 and parts[1] not in SHARED | {name}:
                    offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == []


def test_only_events_knows_nats() -> None:
    offences = []
    for folder in ("functions", "gateway"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(m == "nats" or m.startswith("nats.") for m in imports(path)):
                offences.append(str(path.relative_to(ROOT)))
    assert offences == []


def test_every_function_package_is_registered() -> None:
    packages = {p.parent.name for p in (ROOT / "functions").glob("*/handler.py")}
    assert packages == set(NAMES)


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's configuration table is stale: `localai-studio config --markdown`"
