#!/usr/bin/env python3
"""Count the error lines in container logs (stdin), for compose/health-check. Standard library only.

An error is a JSON log line (the studio's structured logs) whose `level` field is error or critical.
Nothing else counts: not a regex over raw text, which a visitor can write into any info line (a
request for `/[ERR]`, `/level=ERROR` or an `X-Request-Id: [ERR]` is logged as an info line), nor
the free text of nats' and nginx's own logs (their failures show in /health and container health).

Prints `<count>` on the first line and the last error line (cut to 200 characters) on the second.
"""

from __future__ import annotations

import json
import sys

ERROR_LEVELS = frozenset({"error", "critical", "fatal"})


def is_error(line: str) -> bool:
    start = line.find("{")  # `docker logs` may prefix a timestamp
    if start < 0:
        return False
    try:
        doc = json.loads(line[start:])
    except ValueError:
        return False
    return isinstance(doc, dict) and str(doc.get("level", "")).lower() in ERROR_LEVELS


def main() -> int:
    count, last = 0, ""
    for line in sys.stdin:
        if is_error(line):
            count, last = count + 1, line.strip()
    print(count)
    print(last[:200])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
