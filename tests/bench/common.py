"""Benchmark plumbing: processes on free ports, wrk runs parsed into figures."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def process(*args: str, ready: str, timeout: float = 30, cwd: Path = ROOT) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for line in proc.stdout:
            if ready in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not become ready")
        else:
            raise RuntimeError(f"{args} exited before ready")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _figure(pattern: str, out: str) -> str:
    found = re.search(pattern, out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no figure for {pattern!r}:\n{out}")
    return found.group(1)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, *, connections: int, seconds: float, headers: dict[str, str] | None = None) -> WrkResult:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for this benchmark: apt-get install wrk")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(_figure(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_figure(r"^\s+50%\s+(\S+)", out))
    p99 = _ms(_figure(r"^\s+99%\s+(\S+)", out))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return WrkResult(rps, p50, p99, errors)
