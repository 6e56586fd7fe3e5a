"""compose/health-check judges the logs by the structured `level` of JSON lines (compose/log_errors.py),
so text a visitor writes into a request (`/[ERR]`, `/level=ERROR`, a request id) never raises an alert."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

from functions import load
from studio.runtime.logs import JsonFormatter

ROOT = Path(__file__).resolve().parents[2]
JUDGE = ROOT / "compose" / "log_errors.py"


def judge(lines: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(JUDGE)], input=lines, capture_output=True, text=True, check=True)
    count, last = [*done.stdout.split("\n"), ""][:2]
    return int(count), last


async def test_hostile_request_text_is_not_an_error_but_an_error_line_is(embedded_studio, settings, caplog) -> None:
    caplog.set_level(logging.INFO)  # the access log's info lines, as in production
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("studio"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        client = await embedded_studio([load("health")], settings_override=settings.replace(functions=("health",)))
        for path in ("/[ERR]", "/level=ERROR", '/"level":"error"', "/[error]/[crit]/level=FATAL"):
            await client.get(path)
        await client.get("/", headers={"X-Request-Id": "[ERR]"})
        await client.get("/", headers={"X-Request-Id": "level=ERROR"})
    finally:
        root.removeHandler(handler)
    studio_lines = out.getvalue()
    assert "[ERR]" in studio_lines and "level=ERROR" in studio_lines  # the visitor's text is in the logs
    foreign = "[1] 2026/12/02 01:00:00.000000 [ERR] something nats said\n2026/12/02 [error] 12#12: nginx\n"

    assert judge(studio_lines + foreign) == (0, "")

    error = logging.LogRecord("studio.http", logging.ERROR, __file__, 1, "unhandled error in GET /x", None, None)
    line = JsonFormatter("studio").format(error)
    count, last = judge(studio_lines + "2026-12-02T01:00:00Z " + line + "\n")
    assert count == 1 and "unhandled error" in last


def test_health_check_counts_log_errors_with_the_judge_only() -> None:
    script = (ROOT / "compose" / "health-check").read_text()
    assert "log_errors.py" in script
    assert "grep -E" not in script and "[ERR]" not in script
