"""The real coding agents and SDK command lines, run against a studio with accounts (the fixtures of
tests/functions/accounts) that listens on a real port: installed by tests/run into tests/.npm (pinned)."""

from __future__ import annotations

from tests.functions.accounts.conftest import make_studio

__all__ = ["make_studio"]
