"""A real studio process (`localai-studio up`) under thirty large bodies at once (issue 21, item 10): what it
holds stays within its budget for bodies in flight (STUDIO_BODY_BYTES_IN_FLIGHT), measured from /proc, and
the bodies past it are answered 503 with Retry-After. tests/bench/body_bench.py has the full-size figures."""

from __future__ import annotations

from pathlib import Path

from tests.bench.body_bench import burst, image_chat, memory_kb
from tests.bench.studio_process import Studio, ollama_double

BUDGET = 32 * 1024 * 1024
CONCURRENT = 30


async def test_thirty_large_bodies_at_once_stay_within_the_budget_in_flight(tmp_path: Path) -> None:
    body = image_chat(1536 * 1024)  # four 1.5 MB images: 8.4 MB, thirty of them 250 MB
    with ollama_double() as ollama_url:
        studio = Studio(
            tmp_path / "data",
            ollama_url,
            extra={"STUDIO_BODY_BYTES_IN_FLIGHT": str(BUDGET), "STUDIO_STREAMS_PER_ADDRESS": "1000"},
        )
        studio.start()
        try:
            assert studio.proc is not None
            idle = memory_kb(studio.proc.pid)["VmRSS"] * 1024
            statuses, _ = await burst(studio.url, body, CONCURRENT)
            peak = memory_kb(studio.proc.pid)["VmHWM"] * 1024
        finally:
            studio.stop()

    grown = peak - idle
    print(f"RSS {idle / 2**20:.0f} MB idle, {peak / 2**20:.0f} MB at its peak; answers {dict(statuses)}")
    assert statuses[503] > 0 and statuses[503] + statuses[403] == CONCURRENT, statuses  # 403: read, not owned
    # A body costs about twice its size while it is decoded (its bytes, its value); all thirty were 250 MB.
    assert grown < 4 * BUDGET, f"the studio grew {grown / 2**20:.0f} MB for bodies under a {BUDGET >> 20} MB budget"
