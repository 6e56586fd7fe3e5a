"""What the machine gives the studio: disk for the event stream and the database, open files.

- `stream_budget`: how many bytes of event history the stream may keep. JetStream reserves a stream's
  `max_bytes` on disk up front and refuses a stream larger than its free space (err_code 10047), so
  the studio asks for the smaller of `STUDIO_EVENTS_MAX_BYTES` and half of what the disk can give
  (free space plus what the stream already holds), never less than `STREAM_FLOOR_BYTES`; below that
  it refuses to start with one line naming the folder, the free space and the setting.
- `raise_open_files_limit`: the soft RLIMIT_NOFILE raised to the hard limit at start (as nginx's
  `worker_rlimit_nofile` does); `live_streams_cap` keeps `FILES_RESERVE` files for the database, NATS,
  Ollama and ordinary requests, and gives live event streams a share of the rest.
- `DiskWatch`: every `interval_s`, free space under the data dir below `STUDIO_DISK_MIN_FREE_MB` is a
  `disk_low` shortage (alerted before the disk is full), and its end a recovery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from studio.runtime.shortages import OUT_OF_FILES_ERRNOS, SHORTAGES, Shortages

log = logging.getLogger("studio.resources")

MB = 1 << 20
STREAM_FLOOR_BYTES = 16 * MB
STREAM_DISK_SHARE = 0.5
FILES_RESERVE = 64
STREAMS_SHARE_OF_FILES = 0.75


class NotEnoughDisk(RuntimeError):
    """The disk cannot hold even the smallest event stream; the message says what to do."""


@dataclass(frozen=True)
class StreamBudget:
    max_bytes: int
    wanted: int
    free: int

    @property
    def limited_by_disk(self) -> bool:
        return self.max_bytes < self.wanted

    def describe(self) -> str:
        text = f"the event stream keeps up to {self.max_bytes // MB} MB of history"
        if self.limited_by_disk:
            text += (
                f" (STUDIO_EVENTS_MAX_BYTES asks {self.wanted // MB} MB; the disk has {self.free // MB} MB free, "
                f"and the stream takes at most {STREAM_DISK_SHARE:.0%} of it)"
            )
        return text


def free_bytes(path: Path) -> int:
    """Free space on the filesystem that holds `path` (or would: its nearest existing parent)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def stream_budget(data_dir: Path, wanted: int, *, already_stored: int = 0) -> StreamBudget:
    free = free_bytes(data_dir)
    share = int((free + already_stored) * STREAM_DISK_SHARE)
    max_bytes = min(wanted, share) // MB * MB  # whole megabytes: the same answer from every process
    if max_bytes < STREAM_FLOOR_BYTES:
        raise NotEnoughDisk(
            f"the data dir {data_dir.resolve()} has only {free // MB} MB free, and the event stream needs at "
            f"least {2 * STREAM_FLOOR_BYTES // MB} MB free to keep {STREAM_FLOOR_BYTES // MB} MB of history: free "
            "space there, or point STUDIO_DATA_DIR at a larger disk (STUDIO_EVENTS_MAX_BYTES sets the most it uses)"
        )
    return StreamBudget(max_bytes=max_bytes, wanted=wanted, free=free)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one; returns (soft, hard) in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit", extra={"soft": soft, "hard": hard, "error": str(exc)})
    return soft, hard


def live_streams_cap(configured: int, soft_limit: int) -> int:
    """Live streams one process may hold: the setting, or a share of the files left after the reserve."""
    if configured:
        return configured
    return max(8, int((soft_limit - FILES_RESERVE) * STREAMS_SHARE_OF_FILES))


def open_files() -> int | None:
    """File handles this process holds now (Linux), or None where the system does not say."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno in OUT_OF_FILES_ERRNOS:  # not even one more to look: all of them are in use
            return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None


class FilesWatch:
    """Near the open-files limit, new connections are dropped without a word (libuv accepts and
    closes them; asyncio logs a traceback a try): seen from the count of open files, every `interval_s`."""

    NEAR = 0.97

    def __init__(self, *, interval_s: float = 2.0, shortages: Shortages = SHORTAGES) -> None:
        self.interval_s = interval_s
        self.shortages = shortages

    def check(self) -> None:
        used, limit = open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if used is None or limit == resource.RLIM_INFINITY:
            return
        if used >= limit * self.NEAR - 2:
            self.shortages.report(
                "out_of_files",
                f"{used} of {limit} file handles in use: new connections are dropped; raise the open-files "
                "limit (ulimit -n, LimitNOFILE=, compose ulimits.nofile) or lower STUDIO_LIVE_STREAMS_MAX",
            )
        elif used < limit * 0.8:
            self.shortages.recovered("out_of_files", f"{used} of {limit} file handles in use: room again")

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.interval_s)


class DiskWatch:
    def __init__(
        self, path: Path, min_free_mb: int, *, interval_s: float = 30.0, shortages: Shortages = SHORTAGES
    ) -> None:
        self.path = path
        self.min_free_mb = min_free_mb
        self.interval_s = interval_s
        self.shortages = shortages

    def check(self, free_bytes: int) -> None:
        free_mb = free_bytes // MB
        if free_mb < self.min_free_mb:
            self.shortages.report(
                "disk_low",
                f"only {free_mb} MB free under {self.path} (STUDIO_DISK_MIN_FREE_MB is {self.min_free_mb}): free "
                "space before the disk is full, when purchases will answer 503 disk_full",
            )
        else:
            self.shortages.recovered("disk_low", f"{free_mb} MB free under {self.path} again")
            self.shortages.recovered("disk_full", f"{free_mb} MB free under {self.path}: writes can succeed again")

    async def run(self) -> None:
        while True:
            try:  # only the look at the disk in a thread: a shortage is reported on the loop, where its listeners
                # (the host's announcement) run
                usage = await asyncio.to_thread(shutil.disk_usage, self.path)
            except OSError as exc:
                log.warning("cannot read free disk space", extra={"path": str(self.path), "error": str(exc)})
            else:
                self.check(usage.free)
            await asyncio.sleep(self.interval_s)
