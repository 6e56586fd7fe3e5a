"""Out of disk and out of file handles, as an operator meets them: real filesystems, real limits, real processes.

The data dir sits on a small tmpfs (root mounts it, as CI runs), the studio is `localai-studio up` in its
own process, Ollama is the double, and alerts go to a local webhook receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from functions import load
from studio.runtime.shortages import SHORTAGES
from tests.conftest import free_port
from tests.studio.test_cli import CLI, studio_env
from tests.support import Recorder, eventually

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "resources-test-admin-token"
FREE_MODEL = "qwen2.5:0.5b"
PAID_MODEL = "llama3.2:1b"


@contextlib.contextmanager
def small_disk(where: Path, size_mb: int) -> Iterator[Path]:
    """A real filesystem of `size_mb` (tmpfs), unmounted afterwards."""
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a ballast file until the filesystem is full."""
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            for _ in range(64):  # the last partial megabytes
                f.write(b"\0" * 4096)
    return ballast


class Studio:
    """`localai-studio up` with its log lines collected."""

    def __init__(self, env: dict[str, str], preexec=None) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['STUDIO_PORT']}"
        self.preexec = preexec
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, *, wait: bool = True) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            CLI,
            "up",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=self.preexec,
        )
        proc = self.proc
        assert proc.stdout and proc.stderr
        self._readers = [asyncio.create_task(self._read(s)) for s in (proc.stdout, proc.stderr)]
        if wait:
            await eventually(
                lambda: any("running at" in ln for ln in self.lines) or proc.returncode is not None,
                timeout=30,
                message="the studio to start",
            )
            assert self.proc.returncode is None, "\n".join(self.lines[-20:])

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def logged(self) -> list[dict]:
        out = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def exit_code(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self._readers:
            task.cancel()


@pytest.fixture
async def alerts() -> AsyncIterator[tuple[str, list[str]]]:
    """A Slack-compatible webhook receiver: its URL and the texts it was sent."""
    texts: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        texts.append((await request.json())["text"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", texts
    await runner.cleanup()


@pytest.fixture
def ollama() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.ollama", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def env_on(data_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return studio_env(
        tmp_path,
        STUDIO_DATA_DIR=str(data_dir),
        STUDIO_ADMIN_TOKEN=ADMIN,
        STUDIO_SKIP_PAYMENT="true",
        STUDIO_DISK_MIN_FREE_MB="4",
        STUDIO_STREAMS_PER_ADDRESS="100000",  # every client here is 127.0.0.1: the per-address caps are not
        STUDIO_WRITES_PER_ADDRESS_PER_MINUTE="100000",  # what these tests are about
        **extra,
    )


async def visitor(url: str) -> aiohttp.ClientSession:
    """A browser-like client: it has loaded the site (and so has a visitor cookie) before it buys."""
    session = aiohttp.ClientSession(headers={"Origin": url}, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(url + "/api/models") as resp:
        assert resp.status == 200
    return session


async def model_state(session: aiohttp.ClientSession, url: str, model: str) -> dict:
    async with session.get(url + "/api/models") as resp:
        return next(m for m in (await resp.json())["models"] if m["id"] == model)


async def test_the_studio_starts_on_a_64_mb_disk_and_says_how_much_event_history_it_keeps(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 64) as disk:
        studio = Studio(env_on(disk / "data", tmp_path))
        try:
            await studio.start()
            said = [r for r in studio.logged() if r.get("message", "").startswith("the event stream keeps up to")]
            assert len(said) == 1 and "STUDIO_EVENTS_MAX_BYTES" in said[0]["message"], said
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as s:
                async with s.get(studio.url + "/health") as resp:
                    report = await resp.json()
            kept = report["components"]["nats"]["jetstream"]["max_bytes"]
            assert 16 << 20 <= kept <= 32 << 20, report["components"]["nats"]
        finally:
            await studio.stop()


async def test_a_disk_too_small_for_the_event_stream_stops_start_up_with_one_line_that_says_why(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", 24) as disk:
        studio = Studio(env_on(disk / "data", tmp_path))
        await studio.start(wait=False)
        assert await studio.exit_code() != 0
        assert not any("Traceback" in ln for ln in studio.lines), "\n".join(studio.lines)
        why = [ln for ln in studio.lines if "MB free" in ln]
        assert len(why) == 1, studio.lines
        assert str(disk / "data") in why[0] and "STUDIO_DATA_DIR" in why[0]


async def test_a_full_disk_answers_503_disk_full_logs_little_alerts_keeps_chat_and_recovers_without_a_restart(
    tmp_path: Path, ollama: str, alerts: tuple[str, list[str]]
) -> None:
    hook, texts = alerts
    with small_disk(tmp_path / "disk", 64) as disk:
        studio = Studio(env_on(disk / "data", tmp_path, STUDIO_OLLAMA_URL=ollama, STUDIO_ALERT_WEBHOOK_URL=hook))
        sessions: list[aiohttp.ClientSession] = []
        try:
            await studio.start()
            owner = await visitor(studio.url)
            sessions.append(owner)
            async with owner.post(f"{studio.url}/api/models/purchase/{FREE_MODEL}") as resp:
                assert resp.status == 200
            await eventually(
                lambda: _installed(owner, studio.url, FREE_MODEL), timeout=30, message="the free model installed"
            )

            ballast = fill(disk)
            logged_before = len(studio.lines)
            buyers = [await visitor(studio.url) for _ in range(30)]
            sessions += buyers

            async def buy(s: aiohttp.ClientSession) -> tuple[int, dict, str | None]:
                async with s.post(f"{studio.url}/api/models/purchase/{PAID_MODEL}") as resp:
                    return resp.status, await resp.json(), resp.headers.get("Retry-After")

            answers = await asyncio.gather(*(buy(s) for s in buyers))
            refused = [a for a in answers if a[0] == 503]
            assert refused, "a full disk refused nothing"
            for status, body, retry_after in answers:
                assert status in (200, 503), (status, body)
                if status == 503:
                    assert body["error"]["code"] == "disk_full" and retry_after, body
                    assert "disk is full" in body["error"]["message"]

            async with owner.post(f"{studio.url}/api/chat", json={"model": FREE_MODEL, "message": "hi"}) as resp:
                assert resp.status == 200, await resp.text()  # chat writes nothing: it keeps answering

            await eventually(lambda: any("disk_full" in t for t in texts), timeout=15, message="a disk_full alert")
            during = studio.lines[logged_before:]
            assert not any("Traceback" in ln or "internal_error" in ln for ln in during), during
            assert sum('"shortage":"disk_full"' in ln.replace(" ", "") for ln in during) <= 3, during

            ballast.unlink()  # space freed: no restart
            retried = [s for s, a in zip(buyers, answers, strict=True) if a[0] == 503]
            for s in retried:
                await eventually(partial(_bought, s, studio.url), timeout=15, message="a purchase after the disk")
            for s in buyers:  # every purchase answered 200, before or after, is owned and installed
                await eventually(
                    partial(_installed, s, studio.url, PAID_MODEL), timeout=30, message="owned and installed"
                )
        finally:
            for s in sessions:
                await s.close()
            await studio.stop()


async def _bought(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.post(f"{url}/api/models/purchase/{PAID_MODEL}") as resp:
        return resp.status == 200


async def _installed(session: aiohttp.ClientSession, url: str, model: str) -> bool:
    state = await model_state(session, url, model)
    return bool(state["owned"] or state["free"]) and state["install"]["state"] == "installed"


def limit_open_files(soft: int, hard: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


@contextlib.asynccontextmanager
async def streams(url: str, n: int) -> AsyncIterator[tuple[list[aiohttp.ClientResponse], list[int]]]:
    """`n` live streams held open while the block runs: the open ones and the statuses of the refused."""
    opened, refused, session = await open_streams(url, n)
    try:
        yield opened, refused
    finally:
        for resp in opened:
            resp.close()
        await session.close()


async def open_streams(url: str, n: int) -> tuple[list[aiohttp.ClientResponse], list[int], aiohttp.ClientSession]:
    """`n` live streams from one browser each (cookie first); the open ones and the refused statuses."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(url + "/api/models") as resp:
        assert resp.status == 200
    opened: list[aiohttp.ClientResponse] = []
    refused: list[int] = []

    async def one() -> None:
        resp = await session.get(url + "/api/events", timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        if resp.status == 200:
            await resp.content.readuntil(b"\n\n")  # retry: line
            opened.append(resp)
        else:
            refused.append(resp.status)
            await resp.json()
            resp.release()

    for start in range(0, n, 50):
        await asyncio.gather(*(one() for _ in range(start, min(n, start + 50))))
    return opened, refused, session


async def browse_and_buy(url: str) -> None:
    async with aiohttp.ClientSession(headers={"Origin": url}, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(url + "/api/models") as resp:
            assert resp.status == 200
        async with s.get(url + "/marketplace") as resp:
            assert resp.status == 200
        async with s.post(f"{url}/api/models/purchase/{FREE_MODEL}") as resp:
            assert resp.status == 200, await resp.text()


async def test_a_low_soft_open_files_limit_is_raised_so_400_live_streams_and_browsing_are_all_answered(
    tmp_path: Path,
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard >= 2048, "this test needs a hard open-files limit of 2048 or more"
    studio = Studio(env_on(tmp_path / "data", tmp_path), preexec=limit_open_files(256, hard))
    try:
        await studio.start()
        said = next(r for r in studio.logged() if r.get("message") == "open-files limit")
        assert said["soft_before"] == 256 and said["soft"] == hard
        async with streams(studio.url, 400) as (opened, refused):
            assert len(opened) == 400 and refused == []
            await browse_and_buy(studio.url)
    finally:
        await studio.stop()


async def test_at_a_hard_limit_of_256_files_extra_streams_get_503_while_the_site_answers_and_it_is_alerted(
    tmp_path: Path, alerts: tuple[str, list[str]]
) -> None:
    hook, texts = alerts
    studio = Studio(
        env_on(tmp_path / "data", tmp_path, STUDIO_ALERT_WEBHOOK_URL=hook), preexec=limit_open_files(256, 256)
    )
    try:
        await studio.start()
        async with streams(studio.url, 220) as (opened, refused):
            assert opened and refused, (len(opened), refused)
            assert set(refused) == {503}
            await browse_and_buy(studio.url)  # the marketplace and purchases still answer
            why = [r for r in studio.logged() if r.get("shortage") == "live_streams_full"]
            assert len(why) == 1 and "STUDIO_LIVE_STREAMS_MAX" in why[0]["message"], why
            await eventually(lambda: any("live_streams_full" in t for t in texts), timeout=15, message="the alert")
    finally:
        await studio.stop()


async def test_out_of_file_handles_is_logged_once_a_minute_and_alerted_while_the_studio_recovers_by_itself(
    tmp_path: Path, alerts: tuple[str, list[str]]
) -> None:
    hook, texts = alerts
    env = env_on(tmp_path / "data", tmp_path, STUDIO_ALERT_WEBHOOK_URL=hook, STUDIO_LIVE_STREAMS_MAX="1000")
    studio = Studio(env, preexec=limit_open_files(256, 256))  # a stream cap above the limit: files run out
    try:
        await studio.start()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        streams: list[aiohttp.ClientResponse] = []

        async def one() -> None:
            with contextlib.suppress(aiohttp.ClientError):
                resp = await session.get(studio.url + "/api/events", timeout=aiohttp.ClientTimeout(sock_read=None))
                streams.append(resp)

        try:
            await asyncio.gather(*(one() for _ in range(300)))
            await eventually(
                lambda: [r for r in studio.logged() if r.get("shortage") == "out_of_files"],
                timeout=30,
                message="the out-of-files log line",
            )
        finally:
            for resp in streams:
                resp.close()
            await session.close()
        # The alert could not be posted while no file was left (embedded: the monitor shares the process):
        # it goes out once the streams are gone, and the studio serves again without a restart.
        await eventually(lambda: any("out_of_files" in t for t in texts), timeout=30, message="the alert")
        why = await eventually(
            lambda: (
                (w := [r for r in studio.logged() if r.get("shortage") == "out_of_files"])[-1]["level"] == "info" and w
            ),
            timeout=10,
            message="the shortage's end",
        )
        assert why[0]["level"] == "error" and "file handles in use" in why[0]["message"], why
        assert len(why) == 2 and "room again" in why[-1]["message"], why  # once (not a line a dropped connection)
        await browse_and_buy(studio.url)
    finally:
        await studio.stop()


def test_the_open_files_reserve_leaves_room_for_the_database_nats_ollama_and_requests() -> None:
    from studio.runtime.resources import FILES_RESERVE, live_streams_cap

    assert live_streams_cap(0, 256) == int((256 - FILES_RESERVE) * 0.75)
    assert live_streams_cap(0, 65536) > 40000
    assert live_streams_cap(50, 256) == 50  # the setting wins


def test_a_shortage_is_logged_once_a_minute_with_its_count_and_announced_then_its_end(caplog) -> None:
    from studio.runtime.shortages import Shortages

    now = [1000.0]
    heard: list[tuple[str, int | None]] = []
    shortages = Shortages(interval_s=60, clock=lambda: now[0])
    shortages.listeners.append(lambda kind, message, count: heard.append((kind, count)))
    with caplog.at_level("INFO", logger="studio.resources"):
        for _ in range(500):
            shortages.report("disk_full", "the disk is full")
            now[0] += 0.1  # 500 failures in 50 s: one line
        assert [r.count for r in caplog.records] == [1] and heard == [("disk_full", 1)]
        now[0] += 11
        shortages.report("disk_full", "the disk is full")  # a minute after the first: the count since
        assert [r.count for r in caplog.records] == [1, 500] and heard[-1] == ("disk_full", 500)
        shortages.recovered("disk_full", "space again")
        shortages.recovered("disk_full", "space again")  # once
        assert heard[-1] == ("disk_full", None) and len(heard) == 3
        assert shortages.active() == {}


async def test_a_disk_running_low_is_announced_and_the_disk_watch_keeps_watching(
    embedded_studio, settings, bus
) -> None:
    seen = Recorder()
    await bus.listen("resource.exhausted", seen)
    more_than_any_disk = 1 << 40  # MB
    client = await embedded_studio(
        [load("webhook")], settings_override=settings.replace(disk_min_free_mb=more_than_any_disk)
    )

    try:
        announced = await eventually(
            lambda: [e for e in seen.items if e.data["kind"] == "disk_low"], message="disk_low"
        )
        assert "STUDIO_DISK_MIN_FREE_MB" in announced[0].data["message"]
        (watch,) = [t for t in client.host_runtime._tasks if t.get_name() == "disk-watch"]
        assert not watch.done(), "the watch goes on looking (it reported from a thread before, and died of it)"
    finally:
        SHORTAGES.recovered("disk_low", "the test is over")  # the process's other tests see no shortage
