"""The shape the architecture promises, checked: who may import whom, and README kept true."""

from __future__ import annotations

import ast
from pathlib import Path

from functions import NAMES
from studio.runtime.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
# What every function may import besides its own package: the platform beneath it.
SHARED = ("events", "studio.runtime", "studio.catalog", "studio.clients")
PROJECT = ("app", "events", "functions", "gateway", "studio")


def imports(path: Path, source: str | None = None) -> set[str]:
    """Every project module `path` (or `source`, read as if it were at `path`) imports, `from a import b`
    counted as `a.b` (b may be a module)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def offences_of_function(name: str, modules: set[str]) -> list[str]:
    own = f"functions.{name}"
    allowed = (own, *SHARED)
    return sorted(
        m for m in modules if m.split(".")[0] in PROJECT and not any(m == a or m.startswith(a + ".") for a in allowed)
    )


def test_functions_import_only_their_own_package_and_the_platform() -> None:
    offences = []
    for name in NAMES:
        for path in (ROOT / "functions" / name).rglob("*.py"):
            offences += [f"{path.relative_to(ROOT)} imports {m}" for m in offences_of_function(name, imports(path))]
    assert offences == []


def test_the_import_check_catches_every_way_of_reaching_another_function() -> None:
    for source in (
        "from functions import purchase",
        "import functions.purchase.ledger",
        "from functions.purchase import ledger",
        "from functions import load",
        "from ..purchase import ledger",
        "from gateway import routes",
        "from app import cli",
    ):
        path = ROOT / "functions" / "chat" / "_probe.py"
        modules = _imports_of_source(source, path)
        assert offences_of_function("chat", modules), source
    for source in ("from studio.runtime.errors import NotFound", "from . import relay", "from events import catalog"):
        assert offences_of_function("chat", _imports_of_source(source, ROOT / "functions" / "chat" / "x.py")) == []


def _imports_of_source(source: str, path: Path) -> set[str]:
    # Never written into the tree: a parallel worker scanning functions/ would see the probe.
    return imports(path, source + "\n")


def test_the_platform_never_imports_a_function() -> None:
    offences = []
    for folder in ("studio/runtime", "studio/catalog", "studio/clients", "events"):
        for path in (ROOT / folder).rglob("*.py"):
            offences += [
                f"{path.relative_to(ROOT)} imports {m}"
                for m in imports(path)
                if m.startswith("functions.") and m != "functions.NAMES"
            ]
    assert offences == []


def test_functions_holds_function_packages_only() -> None:
    packages = {p.name for p in (ROOT / "functions").iterdir() if p.is_dir() and p.name != "__pycache__"}
    with_handler = {p.parent.name for p in (ROOT / "functions").glob("*/handler.py")}
    assert packages == with_handler == set(NAMES)


def test_only_events_knows_nats() -> None:
    offences = []
    for folder in ("functions", "gateway", "studio"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(m == "nats" or m.startswith("nats.") for m in imports(path)):
                offences.append(str(path.relative_to(ROOT)))
    assert offences == []


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's configuration table is stale: `localai-studio config --markdown`"
