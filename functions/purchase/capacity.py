"""Never charge for what cannot be installed: before Checkout (or a free install) the model must fit.

- disk: Ollama's models directory (`STUDIO_OLLAMA_MODELS_DIR`, its volume mounted where the studio
  can see it) must have room for the model's download plus `STUDIO_DISK_MIN_FREE_MB`;
- memory: the catalog's `ram_bytes` must not exceed what the server has (`STUDIO_SERVER_MEMORY_BYTES`,
  or the host's MemTotal from /proc/meminfo: Ollama runs beside the studio on the same host).

A refusal is 507 `insufficient_storage` (disk) or 409 `insufficient_memory`, saying what is missing;
nothing is recorded and Stripe is never called.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from studio.catalog import CatalogModel
from studio.runtime.errors import Conflict, InsufficientStorage
from studio.runtime.settings import Settings

GIB = 1024**3
log = logging.getLogger("studio.functions.purchase")


def host_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GB" if n >= GIB / 10 else f"{n / 1024**2:.0f} MB"


async def ensure_room_for(model: CatalogModel, settings: Settings) -> None:
    """Raise 409/507 when `model` cannot be installed on this server."""
    memory = settings.server_memory_bytes or host_memory_bytes()
    if memory and model.ram_bytes > memory:
        raise Conflict(
            f"{model.name} needs {_size(model.ram_bytes)} of memory to run and this server has "
            f"{_size(memory)}; nothing was charged (the operator can add memory or pick a smaller model)",
            code="insufficient_memory",
        )
    models_dir = settings.ollama_models_dir
    if models_dir is None:
        return
    try:
        free = (await asyncio.to_thread(shutil.disk_usage, models_dir)).free
    except OSError as exc:  # misconfigured: Ollama's own error (disk full) still ends the install clearly
        log.warning("STUDIO_OLLAMA_MODELS_DIR cannot be read: no disk check", extra={"error": str(exc)})
        return
    needed = model.download_bytes + settings.disk_min_free_mb * 1024**2
    if free < needed:
        raise InsufficientStorage(
            f"{model.name} needs {_size(model.download_bytes)} of disk (plus {settings.disk_min_free_mb} MB kept "
            f"free) and Ollama's disk has {_size(free)} free; nothing was charged (the operator must free "
            "space or remove a model first)",
            code="insufficient_storage",
        )


async def ollama_disk(settings: Settings) -> dict[str, int] | None:
    """Free and total bytes of Ollama's disk, when STUDIO_OLLAMA_MODELS_DIR says where it is."""
    if settings.ollama_models_dir is None:
        return None
    try:
        usage = await asyncio.to_thread(shutil.disk_usage, settings.ollama_models_dir)
    except OSError:
        return None
    return {"free_bytes": usage.free, "total_bytes": usage.total}
