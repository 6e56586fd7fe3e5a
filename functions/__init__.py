"""functions: the studio's serverless-style functions, one package each, and nothing else.

Each `functions/<name>/handler.py` declares `function = Function("<name>")` with its routes and
subscriptions. Functions never import each other: they share `events/` and the platform in
`studio/` (runtime, catalog, client wrappers), and talk through events.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from studio.runtime.settings import FUNCTION_NAMES

if TYPE_CHECKING:
    from studio.runtime.function import Function

# Every function of the studio, in start-up order (state owners before their observers): declared with
# the setting that chooses among them (STUDIO_FUNCTIONS), so the platform never imports this package.
NAMES: tuple[str, ...] = FUNCTION_NAMES


def load(name: str) -> Function:
    """The `Function` declared by `functions/<name>/handler.py`."""
    if name not in NAMES:
        raise KeyError(f"unknown function {name!r}; known: {', '.join(NAMES)}")
    module = importlib.import_module(f"functions.{name}.handler")
    return module.function
