"""Benchmarks that cannot rot: every `tests/bench/*_bench.py` runs once with tiny parameters (`--smoke`)
and must finish and print its figures. No figure is asserted: speed is measured by the benchmarks
themselves, never by a test (README, "Tests and benchmarks"). The `bench_smoke` tier: run by CI (the
full run), left out of `tests/run --fast`; tests/run installs what the benchmarks need (wrk, PostgreSQL)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench"
ROOT = BENCH.parents[1]
BENCHMARKS = sorted(p.stem for p in BENCH.glob("*_bench.py"))
MODES = {"relay_bench --pin": ["--pin"]}  # a benchmark's other ways to run, smoked too
FIGURE = re.compile(r"\d[\d,.]*\s*(?:ms|us|µs|ns|s|%|x|MB|KB|/s)?")

pytestmark = pytest.mark.bench_smoke


def test_every_benchmark_is_here() -> None:
    assert "relay_bench" in BENCHMARKS and len(BENCHMARKS) >= 10, BENCHMARKS


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", BENCHMARKS + list(MODES))
def test_a_benchmark_runs_with_tiny_parameters_and_prints_its_figures(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"tests.bench.{name.split()[0]}", "--smoke", *MODES.get(name, [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )
    said = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{name} --smoke exited {done.returncode}:\n{said}"
    figures = [line for line in done.stdout.splitlines() if FIGURE.search(line)]
    assert len(figures) >= 2, f"{name} printed no figures:\n{done.stdout[-3000:]}"
