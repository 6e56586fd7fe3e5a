"""The running studio (`localai-studio up`, a real process) fuzzed with its own OpenAPI contract by
schemathesis: a fixed seed and a bounded number of examples per operation, valid and invalid
inputs. For every answer: no server error, the status and body its schema says, and a refused
request (4xx) changes nothing in the database.

The database check counts the rows that only a request writes at once (purchases, install states,
Stripe events); the install function is not run, so nothing writes them behind the requests' back.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from gateway.openapi import document
from tests.conftest import free_port
from tests.support import wait_sync

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "localai-studio")
EXAMPLES_PER_OPERATION = 30
TOKEN = "op-contract"
ENDLESS = {"/api/events", "/api/monitor/stream"}  # streams open for as long as a page is (test_live covers them)
WATCHED = ("purchases", "installs", "stripe_events")
CHECKS = [  # a 5xx is checked below: only where the contract names it (/health's 503, chat's Ollama outage)
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def row_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in WATCHED}
    finally:
        conn.close()


def start_studio(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(
        STUDIO_DATA_DIR=str(tmp_path / "data"),
        STUDIO_PORT=str(port),
        STUDIO_NATS_PORT=str(free_port()),
        STUDIO_OLLAMA_URL=f"http://127.0.0.1:{free_port()}",  # nothing there: chat answers 409/503
        STUDIO_ADMIN_TOKEN=TOKEN,
        STRIPE_WEBHOOK_SECRET="whsec_contract",
        STUDIO_SKIP_PAYMENT="true",
        STUDIO_FUNCTIONS="accounts,purchase,install,webhook,chat,health,monitor",
        STUDIO_WRITES_PER_ADDRESS_PER_MINUTE="100000",  # the fuzzer is one address sending many
        STUDIO_LOG_LEVEL="WARNING",
    )
    log = open(tmp_path / "studio.log", "wb")
    proc = subprocess.Popen([CLI, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "studio.log").read_text()
        try:
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_sync(up, timeout=30, message="the studio to start")
    return proc, url


def fuzz(operation, url: str, visitor: requests.Session, db: Path) -> dict[int, int]:
    """Run one operation's cases (valid and invalid); the statuses seen, counted."""
    seen: dict[int, int] = {}
    raw = operation.definition.raw
    operator = {"Authorization": f"Bearer {TOKEN}"} if "operatorToken" in str(raw.get("security")) else {}
    named_5xx = {int(s) for s in raw["responses"] if s.isdigit() and int(s) >= 500}
    cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | operation.as_strategy(
        generation_mode=GenerationMode.NEGATIVE
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # a fixed seed: the same cases every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def one(case) -> None:
        before = row_counts(db)
        response = case.call(base_url=url, session=visitor, headers=operator, timeout=15)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500 or response.status_code in named_5xx, (
            case.as_curl_command(),
            response.status_code,
            response.text[:300],
        )
        case.validate_response(response, checks=CHECKS)
        if 400 <= response.status_code < 500:
            assert row_counts(db) == before, (case.as_curl_command(), response.status_code)

    one()
    return seen


@pytest.mark.slow  # about a thousand generated requests to a real studio: 12 s of CPU, CI's full run
def test_fuzzing_the_contract_finds_no_server_error_no_schema_break_and_no_change_on_refusal(tmp_path: Path) -> None:
    proc, url = start_studio(tmp_path)
    db = tmp_path / "data" / "studio.db"
    try:
        visitor = requests.Session()
        assert visitor.get(url + "/api/models").status_code == 200  # a visitor session, as a page sets it
        schema = schemathesis.openapi.from_dict(document())
        outcomes: dict[str, dict[int, int]] = {}
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]
            if operation.path in ENDLESS:
                continue
            outcomes[operation.label] = fuzz(operation, url, visitor, db)
        print("\ncontract fuzzing: operation -> {status: answers}")
        for label, statuses in outcomes.items():
            print(f"  {label:45} {dict(sorted(statuses.items()))}")
    finally:
        proc.terminate()
        proc.wait(20)
