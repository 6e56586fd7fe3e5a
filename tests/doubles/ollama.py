"""A faithful stand-in for the Ollama server, spoken to over real HTTP.

Wire behaviour follows docs/ollama-api.md (Go server around v0.32/0.33): NDJSON streams,
`{"error": ...}` bodies with a real status before the first streamed byte and as a final line under HTTP 200
after it, Go's JSON escaping of `<>&`, integer-nanosecond metrics with zero values omitted, gin's plain-text
404/405 pages, the loopback Host guard. What a model can do follows `/api/show` `capabilities`: images only for
`vision` models (else the runner's 500), `think` only for `thinking` ones (thinking chunks stream before the
content), `tools` only for `tools` ones (the first tool is called while it is the user's turn; `tool_calls` whole
and streamed), `format` "json" or a schema gives JSON valid for it, `/api/embed` only for `embedding` models
(deterministic unit vectors), and an embedding-only model cannot chat.

In tests::

    double = OllamaDouble(installed=["tinyllama"], tokens_per_s=50)
    await double.start()                    # http://127.0.0.1:<free port>, see double.url
    ...
    await double.stop()

or ``async with OllamaDouble() as double: ...``, or ``aiohttp_client(create_app(double))``.

Standalone (the `ollama` container of the test stack)::

    python -m tests.doubles.ollama --host 0.0.0.0 --port 11434 [--pull-speed BYTES_PER_S] [--tokens-per-s N]

This module imports nothing from the project: it runs with aiohttp alone (uvloop is used when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import inspect
import ipaddress
import json
import logging
import math
import re
import signal
import socket
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "BUSY_ERROR",
    "DEFAULT_CHAT_ERROR",
    "DEFAULT_PULL_ERROR",
    "DEFAULT_REPLY",
    "DEFAULT_THINKING",
    "MANIFEST_NOT_FOUND",
    "NO_EMBEDDING_ERROR",
    "NO_VISION_ERROR",
    "InstalledModel",
    "Layer",
    "ModelName",
    "OllamaDouble",
    "RegistryModel",
    "StreamRecord",
    "create_app",
    "default_registry",
    "go_json",
    "main",
    "make_model",
    "parse_name",
    "tokenize",
]

log = logging.getLogger("ollama-double")

DEFAULT_VERSION = "0.33.0"
DEFAULT_REPLY = "Hello! I am a stand-in for Ollama, and this is my fixed reply."
DEFAULT_THINKING = "The visitor greets me. A short, friendly answer will do."
# a model without a vision projector given images (runner/ollamarunner: NewSequence -> 500 via the server)
NO_VISION_ERROR = (
    "Failed to create new sequence: failed to process inputs: this model is missing data required for image input"
)
NO_EMBEDDING_ERROR = "this model does not support embeddings"
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
DEFAULT_PULL_ERROR = "max retries exceeded: unexpected EOF"
DEFAULT_CHAT_ERROR = "an error was encountered while running the model: unexpected EOF"
MANIFEST_NOT_FOUND = "pull model manifest: file does not exist"

JSON_CT = "application/json; charset=utf-8"
# gin's streamResponse sets a bare "application/json" when an error arrives before the first streamed byte
STREAM_ERROR_CT = "application/json"
NDJSON_CT = "application/x-ndjson"

_FAST_BATCH = 64  # tokens per write in "as fast as possible" mode; the loop yields between writes
_POLL = 0.02  # seconds between disconnect checks while a paced producer waits


# -- JSON the way Go writes it -----------------------------------------------------------------------------

_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def go_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it: `<>&` (and U+2028/9) escaped, other non-ASCII kept as UTF-8."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_GO_ESCAPES)
    return text.encode("utf-8", "replace")


def _go_quote(s: str) -> str:
    """Close enough to Go's %q for error messages."""
    return json.dumps(s, ensure_ascii=False)


def _go_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


_sec_cache: list[Any] = [-1, ""]


def created_at() -> str:
    """RFC 3339 UTC with `Z`, up to 9 fraction digits, trailing zeros trimmed (Go's time.Time JSON form)."""
    ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    if sec != _sec_cache[0]:
        _sec_cache[0] = sec
        _sec_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if frac:
        return f"{_sec_cache[1]}.{frac:09d}".rstrip("0") + "Z"
    return _sec_cache[1] + "Z"


def local_time(ns: int) -> str:
    """RFC 3339 in the local zone (Go prints `Z` when the offset is zero), nanoseconds, trailing zeros trimmed."""
    sec, frac = divmod(ns, 1_000_000_000)
    lt = time.localtime(sec)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", lt)
    if frac:
        text += f".{frac:09d}".rstrip("0")
    off = lt.tm_gmtoff or 0
    if off == 0:
        return text + "Z"
    sign = "+" if off > 0 else "-"
    hours, minutes = divmod(abs(off) // 60, 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


# -- model names ----------------------------------------------------------------------------------------------

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = ""

    @property
    def display(self) -> str:
        """Shortest form, always with the tag: `llama3.2` → `llama3.2:latest`."""
        if self.host.lower() == DEFAULT_HOST:
            if self.namespace.lower() == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def key(self) -> str:
        """Case-insensitive identity used for every local lookup."""
        return self.display.lower()


def parse_name(raw: str) -> ModelName | None:
    """Parse `[scheme://][host/][namespace/]model[:tag]` right to left, as the server does; None when invalid."""
    if not isinstance(raw, str):
        return None
    s = raw.strip()
    if not s or "@" in s:
        return None
    tag = ""
    if s.rfind(":") > s.rfind("/"):
        s, tag = s.rsplit(":", 1)
        if not s or not tag:
            return None
    host, namespace, scheme = DEFAULT_HOST, DEFAULT_NAMESPACE, ""
    if "/" in s:
        s, model = s.rsplit("/", 1)
        if not s or not model:
            return None
        if "/" in s:
            s, namespace = s.rsplit("/", 1)
            if not s or not namespace:
                return None
            scheme, sep, rest = s.partition("://")
            if sep:
                host = rest or DEFAULT_HOST
            else:
                host, scheme = scheme, ""
        else:
            namespace = s
    else:
        model = s
    tag = tag or "latest"
    if not (
        _HOST_RE.fullmatch(host)
        and _NAMESPACE_RE.fullmatch(namespace)
        and _PART_RE.fullmatch(model)
        and _PART_RE.fullmatch(tag)
    ):
        return None
    return ModelName(host, namespace, model, tag, scheme.lower())


def normalize(name: str) -> str:
    """The lookup key for a name (`TinyLlama` → `tinyllama:latest`); invalid names come back lower-cased."""
    parsed = parse_name(name)
    return parsed.key if parsed else name.strip().lower()


# -- the registry and what is installed ------------------------------------------------------------------------

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
_SMALL_LAYERS = (1_192, 6_016, 110, 487)  # template, license, params, config: real-world byte sizes


def _sha(*parts: Any) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True)
class Layer:
    digest: str  # "sha256:<64 hex>"
    size: int
    media_type: str = MEDIA_MODEL

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")


@dataclass
class RegistryModel:
    """A model the fake registry can serve: layers in manifest order (model layers first, config last)."""

    name: str
    layers: list[Layer]
    family: str = "llama"
    parameter_size: str = "1B"
    parameter_count: int = 1_000_000_000
    quantization_level: str = "Q4_0"
    context_length: int = 4096
    capabilities: tuple[str, ...] = ("completion",)
    embedding_length: int = 2048
    families: tuple[str, ...] = ()  # default: (family,); llava adds "clip"
    template: str = "{{ .Prompt }}"
    parameters: str = 'stop "<|im_end|>"'

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def digest(self) -> str:
        """Manifest digest as /api/tags shows it: 64 hex, no `sha256:`."""
        return _sha("manifest", *(f"{la.digest}:{la.size}:{la.media_type}" for la in self.layers))

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": list(self.families or (self.family,)),
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def model_info(self) -> dict[str, Any]:
        f = self.family
        return {
            "general.architecture": f,
            "general.file_type": 2,
            "general.parameter_count": self.parameter_count,
            "general.quantization_version": 2,
            f"{f}.context_length": self.context_length,
            f"{f}.embedding_length": self.embedding_length,
            f"{f}.block_count": 22,
            "tokenizer.ggml.model": "gpt2",
        }


def make_model(name: str, sizes: int | Sequence[int] = 50_000, *, seed: str = "", **meta: Any) -> RegistryModel:
    """Build a registry model. `sizes`: an int (model blob; small template/license/params/config layers are
    added) or the byte size of every layer in manifest order (the last one is the config). A different `seed`
    gives different digests: use it to simulate an updated model in the registry."""
    parsed = parse_name(name)
    if parsed is None:
        raise ValueError(f"invalid model name {name!r}")
    layer_sizes = [int(sizes), *_SMALL_LAYERS] if isinstance(sizes, int) else [int(s) for s in sizes]
    if not layer_sizes or any(s < 0 for s in layer_sizes):
        raise ValueError("a model needs at least one layer and sizes must be >= 0")
    kinds = [MEDIA_TEMPLATE, MEDIA_LICENSE, MEDIA_PARAMS]
    layers = []
    for i, size in enumerate(layer_sizes):
        if i == 0:
            media = MEDIA_MODEL
        elif i == len(layer_sizes) - 1:
            media = MEDIA_CONFIG
        else:
            media = kinds[(i - 1) % len(kinds)]
        layers.append(Layer("sha256:" + _sha(parsed.key, i, size, media, seed), size, media))
    return RegistryModel(parsed.display, layers, **meta)


# name, real model-blob bytes, family, parameter size/count, quantization, context, capabilities, aliases
_CATALOG: tuple[tuple[Any, ...], ...] = (
    ("tinyllama:latest", 637_699_456, "llama", "1B", 1_100_048_384, "Q4_0", 2048, ("completion",), ()),
    (
        "llama3.2:3b",
        2_019_377_376,
        "llama",
        "3.2B",
        3_212_749_888,
        "Q4_K_M",
        131072,
        ("completion", "tools"),
        ("llama3.2:latest",),
    ),
    ("llama3.2:1b", 1_321_082_688, "llama", "1.2B", 1_235_814_432, "Q8_0", 131072, ("completion", "tools"), ()),
    ("qwen2.5:0.5b", 397_807_936, "qwen2", "494.03M", 494_032_768, "Q4_K_M", 32768, ("completion", "tools"), ()),
    ("phi3:mini", 2_176_177_120, "phi3", "3.8B", 3_821_079_552, "Q4_0", 4096, ("completion",), ("phi3:latest",)),
    (
        "mistral:7b",
        4_113_289_376,
        "llama",
        "7.2B",
        7_248_023_552,
        "Q4_K_M",
        32768,
        ("completion", "tools"),
        ("mistral:latest",),
    ),
    ("gemma2:2b", 1_629_509_152, "gemma2", "2.6B", 2_614_341_888, "Q4_0", 8192, ("completion",), ()),
    (
        "llava:7b",
        4_108_916_384,
        "llama",
        "7B",
        6_738_415_616,
        "Q4_0",
        32768,
        ("completion", "vision"),
        ("llava:latest",),
    ),
    (
        "deepseek-r1:7b",
        4_683_073_184,
        "qwen2",
        "7.6B",
        7_615_616_512,
        "Q4_K_M",
        131072,
        ("completion", "thinking"),
        ("deepseek-r1:latest",),
    ),
    (  # thinks and calls tools in one answer, as Claude Code asks of a model
        "qwen3:8b",
        5_225_374_080,
        "qwen3",
        "8.2B",
        8_190_735_360,
        "Q4_K_M",
        40960,
        ("completion", "tools", "thinking"),
        ("qwen3:latest",),
    ),
    ("nomic-embed-text:latest", 274_290_656, "nomic-bert", "137M", 136_727_040, "F16", 2048, ("embedding",), ()),
)
# per-model extras that the tuple above does not carry
_EXTRAS: dict[str, dict[str, Any]] = {
    "llava:7b": {"families": ("llama", "clip"), "embedding_length": 4096},
    "deepseek-r1:7b": {"embedding_length": 3584},
    "nomic-embed-text:latest": {"embedding_length": 768},
}


def default_registry(size_scale: float = 1e-4) -> dict[str, RegistryModel]:
    """The default catalog. The model blob is scaled by `size_scale` (1e-4: tens of KB, 1.0: real sizes)."""
    out: dict[str, RegistryModel] = {}
    for name, blob, family, psize, pcount, quant, ctx, caps, aliases in _CATALOG:
        m = make_model(
            name,
            max(1, round(blob * size_scale)),
            family=family,
            parameter_size=psize,
            parameter_count=pcount,
            quantization_level=quant,
            context_length=ctx,
            capabilities=caps,
            **_EXTRAS.get(name, {}),
        )
        out[m.name] = m
        for alias in aliases:
            out[alias] = RegistryModel(**{**m.__dict__, "name": alias})
    return out


@dataclass
class InstalledModel:
    name: str
    model: RegistryModel
    modified_ns: int

    @property
    def digest(self) -> str:
        return self.model.digest


@dataclass
class _Loaded:
    name: str
    model: RegistryModel
    expires_ns: int


@dataclass
class StreamRecord:
    """One chat/generate/pull request that got past validation. `state`: streaming → done | error | cut |
    disconnected (the client left before the end) | server_down (go_down()/stop() killed it)."""

    kind: str
    model: str  # as sent
    body: dict[str, Any]
    stream: bool = True
    state: str = "streaming"
    tokens_sent: int = 0  # chat/generate: content chunks written
    lines_sent: int = 0  # NDJSON lines written, final/error lines included
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None  # time.monotonic() when the first content chunk was written
    last_token_at: float | None = None
    ended: float | None = None

    @property
    def finished(self) -> bool:
        return self.state != "streaming"


@dataclass
class _Fault:
    kind: str  # "fail_pull" | "cut_pull" | "chat_error" | "busy"
    model: str | None  # lookup key, None = any model
    remaining: int | None  # None = until cleared
    error: str = ""
    after_tokens: int = 0


_CUT = object()
Reply = str | Sequence[str] | Callable[[dict[str, Any]], "str | Sequence[str] | Awaitable[str | Sequence[str]]"]

_TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def tokenize(text: str) -> list[str]:
    """Split into LLM-ish tokens (words with their leading space, single punctuation marks); joins back exactly."""
    return _TOKEN_RE.findall(text)


_DURATION_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_FOREVER_NS = 292 * 365 * 86400 * 10**9


def _parse_keep_alive(v: Any) -> float:
    """keep_alive as the server reads it: seconds (number) or a Go duration string; negative = forever (-1.0)."""
    if v is None:
        return 300.0
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"Unsupported type: '{type(v).__name__}'")
    if isinstance(v, int | float):
        return -1.0 if v < 0 else float(v)
    s = v
    sign = -1.0 if s.startswith("-") else 1.0
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION_RE.match(body, pos)
        if not m:
            if re.fullmatch(r"[\d.]+", body[pos:]):
                raise ValueError(f"time: missing unit in duration {_go_quote(s)}")
            raise ValueError(f"time: invalid duration {_go_quote(s)}")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f"time: invalid duration {_go_quote(s)}")
    return -1.0 if sign < 0 and total > 0 else total


# -- the controller -----------------------------------------------------------------------------------------------


class OllamaDouble:
    """State, configuration, fault injection and observations of the stand-in; `start()` serves it over HTTP."""

    def __init__(
        self,
        *,
        registry: dict[str, RegistryModel | int | Sequence[int]] | None = None,
        installed: Iterable[str] = (),
        pull_speed: float = 0,
        pull_interval: float = 0.06,
        tokens_per_s: float = 0,
        reply: Reply = DEFAULT_REPLY,
        thinking: Reply = DEFAULT_THINKING,
        load_delay: float = 0.0,
        version: str = DEFAULT_VERSION,
        size_scale: float = 1e-4,
        host_guard: bool = True,
        control: bool = False,
        history_limit: int | None = None,
        num_parallel: int = 0,
    ) -> None:
        self.registry: dict[str, RegistryModel] = {}
        if registry is None:
            self.registry.update(default_registry(size_scale))
        else:
            for name, spec in registry.items():
                self.add_model(name, spec)
        self.pull_speed = pull_speed  # bytes/s per layer; 0 = no waiting
        self.pull_interval = pull_interval  # seconds between progress lines while downloading
        self.tokens_per_s = tokens_per_s  # 0 = at once; read at every token (0 mid-answer: the rest at once)
        self.reply: Reply = reply
        self.thinking: Reply = thinking  # what a thinking model thinks (`think` on) before its reply
        self.load_delay = load_delay  # seconds before the first token when the model is not loaded yet
        self.version = version
        self.host_guard = host_guard
        self.control = control
        self.history_limit = history_limit  # cap on each recorded list (long-running standalone process)
        # OLLAMA_NUM_PARALLEL: answers generated at once; more wait their turn in a queue (0 = no limit)
        self.num_parallel = num_parallel
        self._generating: asyncio.Semaphore | None = None

        self.installed: dict[str, InstalledModel] = {}  # key (normalised lower-case name) → model
        self.blobs: set[str] = set()  # layer digests on "disk"
        self.partials: dict[str, int] = {}  # layer digest → bytes downloaded (resumed by the next pull)
        self.loaded: dict[str, _Loaded] = {}  # what /api/ps shows
        self._faults: list[_Fault] = []

        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.pull_requests: list[dict[str, Any]] = []
        self.pull_counts: Counter[str] = Counter()  # normalised name → number of pull requests
        self.chat_requests: list[dict[str, Any]] = []
        self.generate_requests: list[dict[str, Any]] = []
        self.embed_requests: list[dict[str, Any]] = []
        self.streams: list[StreamRecord] = []

        self._last_ns = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._runner: web.AppRunner | None = None
        self._bind_host = "127.0.0.1"
        self._port = 0
        self._bound_loopback: bool | None = None
        self._active: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        for name in installed:
            self.preinstall(name)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> OllamaDouble:
        if self._runner is not None:
            raise RuntimeError("already started")
        self._bind_host = host
        await self._listen(host, port)
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._shutdown()

    async def __aenter__(self) -> OllamaDouble:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("not started")
        return self._port

    @property
    def url(self) -> str:
        host = self._bind_host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._runner is not None

    async def go_down(self) -> None:
        """Simulate Ollama dying: stop listening (connections are refused) and drop every open connection."""
        await self._shutdown()

    async def come_back(self) -> None:
        """Simulate Ollama restarting on the same port: partial downloads are pruned, nothing is loaded."""
        if self._runner is not None:
            return
        if not self._port:
            raise RuntimeError("never started")
        self.partials.clear()
        self.loaded.clear()
        await self._listen(self._bind_host, self._port)

    @contextlib.asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """`async with double.down(): ...` = Ollama is unreachable inside the block."""
        await self.go_down()
        try:
            yield
        finally:
            await self.come_back()

    async def _listen(self, host: str, port: int) -> None:
        runner = web.AppRunner(create_app(self), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addr = runner.addresses[0]
        self._port = addr[1]
        try:
            self._bound_loopback = ipaddress.ip_address(addr[0]).is_loopback
        except ValueError:
            self._bound_loopback = False
        self._notify()

    async def _shutdown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for rec in self.streams:
            if rec.state == "streaming":
                self._end(rec, "server_down")
        for transport in list(self._active):
            transport.abort()
        self._active.clear()
        await runner.cleanup()
        self._notify()

    # -- registry and installed models -------------------------------------------------------------------

    def add_model(
        self, name: str, sizes: RegistryModel | int | Sequence[int] = 50_000, *, seed: str = "", **meta: Any
    ) -> RegistryModel:
        """Put a model in the fake registry (replacing one of the same name). See make_model() for `sizes`."""
        if isinstance(sizes, RegistryModel):
            display = parse_name(name)
            if display is None:
                raise ValueError(f"invalid model name {name!r}")
            model = RegistryModel(**{**sizes.__dict__, "name": display.display, **meta})
        else:
            model = make_model(name, sizes, seed=seed, **meta)
        self.remove_model(model.name)
        self.registry[model.name] = model
        return model

    def remove_model(self, name: str) -> None:
        """Take a model out of the fake registry (pulls then fail with `file does not exist`)."""
        key = normalize(name)
        for k in [k for k in self.registry if k.lower() == key]:
            del self.registry[k]

    def registry_model(self, name: str) -> RegistryModel | None:
        key = normalize(name)
        for k, model in self.registry.items():
            if k.lower() == key:
                return model
        return None

    def preinstall(self, *names: str, **meta: Any) -> None:
        """Install models as if pulled earlier. Names missing from the registry get a synthetic model."""
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                raise ValueError(f"invalid model name {name!r}")
            model = self.registry_model(name) or make_model(name, **meta)
            self._install(parsed.display if model.name.lower() != parsed.key else model.name, model)

    def uninstall(self, name: str) -> None:
        inst = self.installed.pop(normalize(name), None)
        if inst is not None:
            self.loaded.pop(normalize(name), None)
            self._gc_blobs()
            self._notify()

    def is_installed(self, name: str) -> bool:
        return normalize(name) in self.installed

    def installed_names(self) -> list[str]:
        return [m.name for m in sorted(self.installed.values(), key=lambda m: m.modified_ns, reverse=True)]

    def _install(self, name: str, model: RegistryModel) -> None:
        self.blobs.update(layer.digest for layer in model.layers)
        self.installed[name.lower()] = InstalledModel(name, model, self._now_ns())
        self._notify()

    def _gc_blobs(self) -> None:
        used = {la.digest for m in self.installed.values() for la in m.model.layers}
        self.blobs &= used

    def _now_ns(self) -> int:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    # -- faults ----------------------------------------------------------------------------------------------

    def fail_next_pulls(self, model: str | None = None, n: int | None = 1, *, error: str = DEFAULT_PULL_ERROR) -> None:
        """The next `n` pulls (of `model`, or of any model) stop half-way through the first layer they
        download with `{"error": error}` under HTTP 200 (500 with stream:false). n=None: until cleared."""
        self._faults.append(_Fault("fail_pull", normalize(model) if model else None, n, error))

    def cut_next_pulls(self, model: str | None = None, n: int | None = 1) -> None:
        """The next `n` pulls stop at the same point by closing the connection: no `success`, no `error`."""
        self._faults.append(_Fault("cut_pull", normalize(model) if model else None, n))

    def fail_next_chats(
        self, n: int | None = 1, *, after_tokens: int = 0, error: str = DEFAULT_CHAT_ERROR, model: str | None = None
    ) -> None:
        """The next `n` chat/generate requests emit `{"error": error}` after `after_tokens` content chunks
        (HTTP 200). With after_tokens=0, or stream:false, the error is a 500 before any byte."""
        self._faults.append(_Fault("chat_error", normalize(model) if model else None, n, error, after_tokens))

    def busy_next_chats(self, n: int | None = 1, *, model: str | None = None) -> None:
        """The next `n` chat/generate requests get 503 `server busy...`. n=None: until clear_faults()."""
        self._faults.append(_Fault("busy", normalize(model) if model else None, n, BUSY_ERROR))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, kinds: tuple[str, ...], key: str) -> _Fault | None:
        for fault in self._faults:
            if fault.kind in kinds and (fault.model is None or fault.model == key):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # -- observations ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, streams and faults (models and configuration stay)."""
        self._faults.clear()
        self.requests.clear()
        self.pull_requests.clear()
        self.pull_counts.clear()
        self.chat_requests.clear()
        self.generate_requests.clear()
        self.embed_requests.clear()
        self.streams.clear()
        self._notify()

    def pull_count(self, name: str) -> int:
        return self.pull_counts[normalize(name)]

    def disconnects(self, kind: str | None = None) -> list[StreamRecord]:
        """Streams the client closed before the end (chat/generate before `done`, pull before `success`)."""
        return [r for r in self.streams if r.state == "disconnected" and (kind is None or r.kind == kind)]

    def active_streams(self, kind: str | None = None) -> list[StreamRecord]:
        return [r for r in self.streams if r.state == "streaming" and (kind is None or r.kind == kind)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition") -> Any:
        """Wait until `predicate()` is truthy (re-checked on every state change) and return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"ollama double: timed out after {timeout} s waiting for {message}")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, min(remaining, 0.25))

    async def wait_for_disconnect(
        self, timeout: float = 5.0, *, kind: str | None = None, count: int = 1
    ) -> StreamRecord:
        """Wait until `count` streams (of `kind`: chat/generate/pull) were closed by the client; the last one."""
        await self.wait_for(
            lambda: len(self.disconnects(kind)) >= count,
            timeout,
            f"{count} client disconnect(s) of {kind or 'any'} streams",
        )
        return self.disconnects(kind)[count - 1]

    async def wait_for_stream(
        self, timeout: float = 5.0, *, kind: str = "chat", tokens: int = 0, count: int = 1
    ) -> StreamRecord:
        """Wait until the `count`-th stream of `kind` exists and has sent at least `tokens` content chunks."""

        def check() -> StreamRecord | None:
            recs = [r for r in self.streams if r.kind == kind]
            if len(recs) >= count and recs[count - 1].tokens_sent >= tokens:
                return recs[count - 1]
            return None

        return await self.wait_for(check, timeout, f"{kind} stream #{count} with {tokens} token(s)")

    async def wait_for_stream_end(
        self, timeout: float = 5.0, *, kind: str | None = None, count: int = 1
    ) -> StreamRecord:
        """Wait until the `count`-th stream (of `kind`) has finished, whatever the outcome."""

        def check() -> StreamRecord | None:
            recs = [r for r in self.streams if kind is None or r.kind == kind]
            return recs[count - 1] if len(recs) >= count and recs[count - 1].finished else None

        return await self.wait_for(check, timeout, f"end of {kind or 'any'} stream #{count}")

    async def wait_for_pulls(self, name: str, count: int = 1, timeout: float = 5.0) -> int:
        return await self.wait_for(
            lambda: self.pull_count(name) >= count and self.pull_count(name), timeout, f"{count} pull(s) of {name}"
        )

    async def wait_for_chat_requests(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.chat_requests) >= count, timeout, f"{count} chat request(s)")
        return self.chat_requests

    async def wait_for_requests(
        self, path: str, count: int = 1, timeout: float = 5.0, method: str | None = None
    ) -> int:
        def n() -> int:
            return sum(1 for m, p in self.requests if p == path and (method is None or m == method))

        return await self.wait_for(lambda: n() >= count and n(), timeout, f"{count} request(s) to {path}")

    def _notify(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _record(self, records: list[Any], item: Any) -> None:
        records.append(item)
        limit = self.history_limit
        if limit is not None and len(records) > limit:
            del records[: len(records) - limit // 2]
        self._notify()

    def _start_record(self, kind: str, model: str, body: dict[str, Any], stream: bool) -> StreamRecord:
        rec = StreamRecord(kind, model, body, stream)
        self._record(self.streams, rec)
        return rec

    def _end(self, rec: StreamRecord, state: str) -> None:
        if rec.state == "streaming":
            rec.state = state
            rec.ended = time.monotonic()
            self._notify()

    # -- helpers for handlers ----------------------------------------------------------------------------------

    def _find_installed(self, name: ModelName) -> InstalledModel | None:
        return self.installed.get(name.key)

    def _host_allowed(self, request: web.BaseRequest) -> bool:
        bound_loopback = self._bound_loopback
        if bound_loopback is None:  # served by something else (aiohttp's TestServer): look at the socket
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            try:
                bound_loopback = sock is not None and ipaddress.ip_address(sock[0]).is_loopback
            except ValueError:
                bound_loopback = False
        if not bound_loopback:
            return True
        host = request.headers.get("Host", "")
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.rsplit(":", 1)[0]
        try:
            ip = ipaddress.ip_address(host)
            return ip.is_loopback or ip.is_private or ip.is_unspecified
        except ValueError:
            pass
        host = host.lower()
        if host in ("", "localhost") or host == socket.gethostname().lower():
            return True
        return host.endswith((".localhost", ".local", ".internal"))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply_tokens(self, body: dict[str, Any], reply: Any = None) -> list[str]:
        reply = self.reply if reply is None else reply
        if callable(reply):
            reply = reply(body)
            if inspect.isawaitable(reply):
                reply = await reply
        if isinstance(reply, str):
            return tokenize(reply)
        return [str(t) for t in reply]


# -- HTTP ----------------------------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200, content_type: str = JSON_CT) -> web.Response:
    return web.Response(body=go_json(obj), status=status, headers={"Content-Type": content_type})


def _error(status: int, message: str, content_type: str = JSON_CT) -> web.Response:
    return _json({"error": message}, status, content_type)


def _text(status: int, text: str, content_type: str = "text/plain") -> web.Response:
    return web.Response(body=text.encode(), status=status, headers={"Content-Type": content_type})


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write(request: web.BaseRequest, resp: web.StreamResponse, data: bytes) -> bool:
    if _gone(request):
        return False
    try:
        await resp.write(data)
    except (ConnectionError, RuntimeError):
        return False
    return True


async def _finish(resp: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await resp.write_eof()


def _cut(request: web.BaseRequest, resp: web.StreamResponse | None) -> web.StreamResponse:
    """Close the connection without ending the chunked body (buffered lines still go out first); aiohttp's
    write_eof() then fails with a ConnectionError, which it treats as a client disconnect and skips quietly."""
    if request.transport is not None:
        request.transport.close()
    return resp if resp is not None else web.Response()


async def _sleep_until(request: web.BaseRequest, deadline: float) -> bool:
    """Sleep until loop time `deadline`, yielding at least once; False as soon as the client has gone."""
    loop = asyncio.get_running_loop()
    while True:
        if _gone(request):
            return False
        remaining = deadline - loop.time()
        if remaining <= 0:
            await asyncio.sleep(0)
            return not _gone(request)
        await asyncio.sleep(min(remaining, _POLL))


def _decode_error(text: str, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(text.rstrip()):
        return "unexpected EOF"
    ch = text[exc.pos]
    quoted = "'\\''" if ch == "'" else f"'{ch}'"
    return f"invalid character {quoted} looking for beginning of value"


_STRING, _BOOL, _LIST = "string", "bool", "[]"
_FIELDS: dict[str, dict[str, str]] = {
    "ChatRequest": {"model": _STRING, "stream": _BOOL, "messages": _LIST, "tools": _LIST},
    "GenerateRequest": {
        "model": _STRING,
        "prompt": _STRING,
        "system": _STRING,
        "suffix": _STRING,
        "stream": _BOOL,
        "raw": _BOOL,
        "images": _LIST,
    },
    "PullRequest": {"model": _STRING, "name": _STRING, "stream": _BOOL, "insecure": _BOOL},
    "ShowRequest": {"model": _STRING, "name": _STRING},
    "DeleteRequest": {"model": _STRING, "name": _STRING},
    "CopyRequest": {"source": _STRING, "destination": _STRING},
    "EmbedRequest": {"model": _STRING, "truncate": _BOOL},
}
_GO_TYPES = {_STRING: "string", _BOOL: "bool", _LIST: "[]interface {}"}


async def _read_body(request: web.Request, go_type: str) -> dict[str, Any] | web.Response:
    """Bind the body like gin's ShouldBindJSON: any Content-Type, first JSON value only, unknown fields ignored."""
    text = (await request.read()).decode("utf-8", "replace")
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return _error(400, "missing request body")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return _error(400, _decode_error(text, exc))
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        return _error(400, f"json: cannot unmarshal {_go_kind(obj)} into Go value of type api.{go_type}")
    for name, kind in _FIELDS.get(go_type, {}).items():
        value = obj.get(name)
        if value is None:
            continue
        ok = (
            isinstance(value, str)
            if kind == _STRING
            else isinstance(value, bool)
            if kind == _BOOL
            else isinstance(value, list)
        )
        if not ok:
            return _error(
                400,
                f"json: cannot unmarshal {_go_kind(value)} into Go struct field "
                f"{go_type}.{name} of type {_GO_TYPES[kind]}",
            )
    return obj


# -- images, tools, formats, embeddings ------------------------------------------------------------------------

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _b64_error(value: str) -> str | None:
    """Go's base64.StdEncoding (strict, padded) error for `value`, as json.Unmarshal of []byte reports it."""
    bad = next((i for i, ch in enumerate(value) if ch not in _B64_ALPHABET), None)
    if bad is not None:
        return f"illegal base64 data at input byte {bad}"
    if len(value) % 4 or not _B64.fullmatch(value):
        return f"illegal base64 data at input byte {len(value) - len(value) % 4 if len(value) % 4 else len(value) - 1}"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"illegal base64 data at input byte {max(0, len(value) - 1)}"
    return None


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _images(body: dict[str, Any], chat: bool) -> list[str] | web.Response:
    """Every image of the request (chat: on its messages; generate: `images`), checked as Go binds []byte."""
    lists: list[Any] = []
    if chat:
        for m in body.get("messages") or []:
            if isinstance(m, dict) and m.get("images") is not None:
                lists.append(m["images"])
    elif body.get("images") is not None:
        lists.append(body["images"])
    out: list[str] = []
    for images in lists:
        if not isinstance(images, list):
            return _error(400, f"json: cannot unmarshal {_go_kind(images)} into Go value of type []api.ImageData")
        for image in images:
            if not isinstance(image, str):
                return _error(400, f"json: cannot unmarshal {_go_kind(image)} into Go value of type api.ImageData")
            problem = _b64_error(image)
            if problem:
                return _error(400, problem)
            out.append(image)
    return out


def _instance(schema: Any, text: str) -> Any:
    """A value valid for a (simple) JSON schema: enum/const, object with every property, array, scalars."""
    if not isinstance(schema, dict):
        return text
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        return {k: _instance(v, text) for k, v in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        least = schema.get("minItems")
        n = least if isinstance(least, int) else 1
        return [_instance(schema.get("items"), text) for _ in range(max(1, n))]
    if kind == "integer":
        low = schema.get("minimum")
        return int(low) if isinstance(low, int | float) and not isinstance(low, bool) else 42
    if kind == "number":
        low = schema.get("minimum")
        return float(low) if isinstance(low, int | float) and not isinstance(low, bool) else 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _json_for(fmt: Any, reply: str) -> Any:
    """What a model constrained to `format` writes: "json" -> an object; a schema -> a value valid for it."""
    if fmt == "json":
        return {"response": reply}
    return _instance(fmt, reply)


def _tool_calls(tools: list[Any], messages: list[Any]) -> list[dict[str, Any]]:
    """With tools and a user's turn to answer, the model calls the first tool, arguments filled in from its
    parameter schema; after a `tool` message it answers in words. System messages after the user's (as
    Claude Code sends) are instructions, not a turn."""
    turns = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    if not tools or not turns or not isinstance(turns[-1], dict) or turns[-1].get("role") != "user":
        return []
    tool: dict[str, Any] = tools[0] if isinstance(tools[0], dict) else {}
    declared = tool.get("function")
    fn: dict[str, Any] = declared if isinstance(declared, dict) else {}
    named = fn.get("name")
    name = named if isinstance(named, str) else ""
    if not name:
        return []
    question = str(turns[-1].get("content") or "")[:40]
    given = fn.get("parameters")
    params: dict[str, Any] = given if isinstance(given, dict) else {"type": "object"}
    args = _instance({**params, "type": "object"}, question)
    call_id = "call_" + _sha("call", name, question, len(messages))[:8]
    return [{"id": call_id, "function": {"index": 0, "name": name, "arguments": args}}]


def _embedding(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text` (equal texts, equal vectors), rounded like float32."""
    seed = hashlib.sha256(text.encode()).digest()
    values: list[float] = []
    block = 0
    while len(values) < dims:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [float(f"{v / norm:.7g}") for v in values]


def create_app(double: OllamaDouble) -> web.Application:
    """The aiohttp application serving `double`'s state."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        double._record(double.requests, (request.method, request.path))
        if double.host_guard and not double._host_allowed(request):
            return web.Response(status=403)
        transport = request.transport
        if transport is not None:
            double._active.add(transport)
        try:
            if double.num_parallel > 0 and request.path in ("/api/chat", "/api/generate"):
                if double._generating is None:
                    double._generating = asyncio.Semaphore(double.num_parallel)
                async with double._generating:  # the queue Ollama keeps beyond OLLAMA_NUM_PARALLEL
                    return await handler(request)
            return await handler(request)
        except web.HTTPNotFound:
            return _text(404, "404 page not found")
        except web.HTTPMethodNotAllowed:
            return _text(405, "405 method not allowed")
        finally:
            if transport is not None:
                double._active.discard(transport)

    h = _Handlers(double)
    app = web.Application(middlewares=[middleware], client_max_size=256 * 1024 * 1024)
    r = app.router
    for path, handler in (("/", h.root), ("/api/version", h.version), ("/api/tags", h.tags)):
        r.add_route("GET", path, handler)
        r.add_route("HEAD", path, handler)
    r.add_route("GET", "/api/ps", h.ps)
    # Ollama's library (registry.ollama.ai in real life), from the same registry the pulls use.
    r.add_route("GET", "/v2/{namespace}/{name}/manifests/{tag}", h.library_manifest)
    r.add_route("HEAD", "/v2/{namespace}/{name}/manifests/{tag}", h.library_manifest)
    r.add_route("POST", "/api/show", h.show)
    r.add_route("DELETE", "/api/delete", h.delete)
    r.add_route("POST", "/api/copy", h.copy)
    r.add_route("POST", "/api/pull", h.pull)
    r.add_route("POST", "/api/chat", h.chat)
    r.add_route("POST", "/api/generate", h.generate)
    r.add_route("POST", "/api/embed", h.embed)
    if double.control:
        r.add_route("GET", "/_double/state", h.control_state)
        r.add_route("POST", "/_double/config", h.control_config)
        r.add_route("POST", "/_double/fault", h.control_fault)
        r.add_route("POST", "/_double/clear_faults", h.control_clear_faults)
        r.add_route("POST", "/_double/reset", h.control_reset)
        r.add_route("POST", "/_double/preinstall", h.control_preinstall)
        r.add_route("POST", "/_double/down", h.control_down)
    return app


class _Handlers:
    def __init__(self, double: OllamaDouble) -> None:
        self.d = double

    # -- simple endpoints --------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return _text(200, "Ollama is running", "text/plain; charset=utf-8")

    async def version(self, request: web.Request) -> web.Response:
        return _json({"version": self.d.version})

    async def tags(self, request: web.Request) -> web.Response:
        models = sorted(self.d.installed.values(), key=lambda m: m.modified_ns, reverse=True)
        return _json(
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "modified_at": local_time(m.modified_ns),
                        "size": m.model.size,
                        "digest": m.digest,
                        "details": m.model.details(),
                    }
                    for m in models
                ]
            }
        )

    async def library_manifest(self, request: web.Request) -> web.Response:
        """The registry's manifest endpoint: 200 when the library has namespace/name:tag, else 404."""
        ns, name, tag = (request.match_info[k] for k in ("namespace", "name", "tag"))
        model = self.d.registry_model(f"{name}:{tag}" if ns == "library" else f"{ns}/{name}:{tag}")
        if model is None:
            body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": tag}}]}
            return web.json_response(body, status=404)
        return web.json_response(
            {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"},
            content_type="application/vnd.docker.distribution.manifest.v2+json",
        )

    async def ps(self, request: web.Request) -> web.Response:
        now = time.time_ns()
        for key in [k for k, v in self.d.loaded.items() if v.expires_ns <= now]:
            del self.d.loaded[key]
        items = sorted(self.d.loaded.values(), key=lambda v: v.expires_ns, reverse=True)
        return _json(
            {
                "models": [
                    {
                        "name": v.name,
                        "model": v.name,
                        "size": v.model.size,
                        "digest": v.model.digest,
                        "details": v.model.details(),
                        "expires_at": local_time(v.expires_ns),
                        "size_vram": v.model.size,
                        "context_length": v.model.context_length,
                    }
                    for v in items
                ]
            }
        )

    async def show(self, request: web.Request) -> web.Response:
        body = await _read_body(request, "ShowRequest")
        if isinstance(body, web.Response):
            return body
        raw = body.get("model") or body.get("name") or ""
        if not raw:
            return _error(400, "model is required")
        name = parse_name(raw)
        if name is None:
            return _error(400, "invalid model name")
        inst = self.d._find_installed(name)
        if inst is None:
            return _error(404, f"model '{name.display}' not found")
        m = inst.model
        config = next((la for la in m.layers if la.media_type == MEDIA_MODEL), m.layers[0])
        modelfile = (
            f'# Modelfile generated by "ollama show"\n# To build a new Modelfile based on this, replace '
            f"FROM with:\n# FROM {inst.name}\n\nFROM /root/.ollama/models/blobs/sha256-{config.hex}\n"
            f'TEMPLATE """{m.template}"""\nPARAMETER {m.parameters}\n'
        )
        return _json(
            {
                "modelfile": modelfile,
                "parameters": m.parameters,
                "template": m.template,
                "details": m.details(),
                "model_info": m.model_info(),
                "capabilities": list(m.capabilities),
                "modified_at": local_time(inst.modified_ns),
            }
        )

    async def delete(self, request: web.Request) -> web.Response:
        body = await _read_body(request, "DeleteRequest")
        if isinstance(body, web.Response):
            return body
        raw = body.get("model") or body.get("name") or ""
        name = parse_name(raw)
        if name is None:
            return _error(400, f"name {_go_quote(raw)} is invalid")
        if self.d._find_installed(name) is None:
            return _error(404, f"model '{raw}' not found")
        self.d.uninstall(name.key)
        return web.Response(status=200)

    async def copy(self, request: web.Request) -> web.Response:
        body = await _read_body(request, "CopyRequest")
        if isinstance(body, web.Response):
            return body
        src_raw, dst_raw = body.get("source") or "", body.get("destination") or ""
        src, dst = parse_name(src_raw), parse_name(dst_raw)
        if src is None:
            return _error(400, f"source {_go_quote(src_raw)} is invalid")
        if dst is None:
            return _error(400, f"destination {_go_quote(dst_raw)} is invalid")
        inst = self.d._find_installed(src)
        if inst is None:
            return _error(404, f"model {_go_quote(src_raw)} not found")
        self.d._install(dst.display, inst.model)
        return web.Response(status=200)

    # -- pull ---------------------------------------------------------------------------------------------

    async def pull(self, request: web.Request) -> web.StreamResponse:
        d = self.d
        body = await _read_body(request, "PullRequest")
        if isinstance(body, web.Response):
            return body
        raw = body.get("model") or body.get("name") or ""
        name = parse_name(raw)
        if name is None:
            return _error(400, "invalid model name")
        d.pull_counts[name.key] += 1
        d._record(d.pull_requests, body)
        stream = body.get("stream") is not False
        if name.scheme == "http" and body.get("insecure") is not True:
            return _error(500, "insecure protocol http", STREAM_ERROR_CT if stream else JSON_CT)
        fault = d._take_fault(("fail_pull", "cut_pull"), name.key)
        rec = d._start_record("pull", raw, body, stream)
        lines = self._pull_lines(name, fault)
        resp: web.StreamResponse | None = None
        last: dict[str, Any] = {}
        async with contextlib.aclosing(lines):
            async for item in lines:
                if item is _CUT:
                    d._end(rec, "cut")
                    return _cut(request, resp)
                if not stream:
                    if _gone(request):
                        d._end(rec, "disconnected")
                        return web.Response()
                    if "error" in item:
                        d._end(rec, "error")
                        return _error(500, item["error"])
                    last = item
                    continue
                if resp is None:
                    resp = web.StreamResponse(headers={"Content-Type": NDJSON_CT})
                    resp.enable_chunked_encoding()
                    try:
                        await resp.prepare(request)
                    except (ConnectionError, RuntimeError):
                        d._end(rec, "disconnected")
                        return resp
                if not await _write(request, resp, go_json(item) + b"\n"):
                    d._end(rec, "disconnected")
                    return resp
                rec.lines_sent += 1
                if "error" in item:
                    d._end(rec, "error")
                    break
                await asyncio.sleep(0)
        d._end(rec, "done")
        if resp is None:
            return _json(last)
        await _finish(resp)
        return resp

    async def _pull_lines(self, name: ModelName, fault: _Fault | None) -> AsyncGenerator[Any]:
        d = self.d
        yield {"status": "pulling manifest"}
        model = d.registry_model(name.key)
        if model is None:
            yield {"error": MANIFEST_NOT_FOUND}
            return

        def trip() -> Any:
            return _CUT if fault is not None and fault.kind == "cut_pull" else {"error": fault.error if fault else ""}

        for layer in model.layers:
            status = f"pulling {layer.hex[:12]}"

            def progress(done: int, status: str = status, layer: Layer = layer) -> dict[str, Any]:
                line: dict[str, Any] = {"status": status, "digest": layer.digest, "total": layer.size}
                if done:
                    line["completed"] = done
                return line

            if layer.digest in d.blobs:
                yield progress(layer.size)
                continue
            done = d.partials.get(layer.digest, 0)
            fail_at = max(done, layer.size // 2) if fault is not None else None
            yield progress(done)
            while done < layer.size or fail_at is not None:
                speed = d.pull_speed  # read at every step: a test may let a slow pull finish at once (0)
                step = max(1, round(speed * d.pull_interval)) if speed > 0 else layer.size
                target = min(layer.size, done + step)
                if fail_at is not None and target >= fail_at:
                    target = fail_at
                await asyncio.sleep((target - done) / speed if speed > 0 else 0)
                done = target
                if done < layer.size:
                    d.partials[layer.digest] = done
                yield progress(done)
                if fail_at is not None and done >= fail_at:
                    yield trip()
                    return
            d.partials.pop(layer.digest, None)
            d.blobs.add(layer.digest)
        if fault is not None:  # nothing left to download: the failure hits before verification
            yield trip()
            return
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        old = d.installed.get(name.key)
        d._install(old.name if old else model.name, model)
        if old is not None and {la.digest for la in old.model.layers} - {la.digest for la in model.layers}:
            d._gc_blobs()
            yield {"status": "removing unused layers"}
        yield {"status": "success"}

    # -- chat and generate -------------------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._llm(request, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._llm(request, chat=False)

    async def _llm(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        d = self.d
        t_request = time.perf_counter_ns()
        body = await _read_body(request, "ChatRequest" if chat else "GenerateRequest")
        if isinstance(body, web.Response):
            return body
        d._record(d.chat_requests if chat else d.generate_requests, body)
        raw = body.get("model") or ""
        if not raw:
            return _error(400, "model is required")
        name = parse_name(raw)
        if name is None:
            return _error(400, "model is required") if chat else _error(404, f"model '{raw}' not found")
        inst = d._find_installed(name)
        if inst is None:
            return _error(404, f"model '{raw}' not found")
        model = inst.model
        if "completion" not in model.capabilities:
            return _error(400, f"{_go_quote(raw)} does not support {'chat' if chat else 'generate'}")
        think = body.get("think")
        thinking_on = think not in (None, False)
        if thinking_on and "thinking" not in model.capabilities:
            return _error(400, f"{_go_quote(raw)} does not support thinking")
        tools = body.get("tools") or [] if chat else []
        if tools and "tools" not in model.capabilities:
            return _error(400, f"{_go_quote(raw)} does not support tools")
        try:
            keep_alive = _parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            return _error(400, str(exc))
        images = _images(body, chat)
        if isinstance(images, web.Response):
            return images
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            # llm/server.go: anything but "json" or an object is refused before generation (no status: 500)
            return _error(
                500, f'invalid format: {_go_quote(json.dumps(fmt))}; expected "json" or a valid JSON Schema object'
            )
        if d._take_fault(("busy",), name.key) is not None:
            return _error(503, BUSY_ERROR)

        messages = body.get("messages") or []
        prompt = body.get("prompt") or ""
        if (chat and not messages) or (not chat and not prompt and not body.get("images")):
            reason = "unload" if keep_alive == 0 else "load"
            self._set_loaded(name, inst, keep_alive)
            if chat:
                return _json(
                    {
                        "model": raw,
                        "created_at": created_at(),
                        "message": {"role": "assistant", "content": ""},
                        "done_reason": reason,
                        "done": True,
                    }
                )
            return _json(
                {"model": raw, "created_at": created_at(), "response": "", "done": True, "done_reason": reason}
            )
        if images and "vision" not in model.capabilities:
            return _error(500, NO_VISION_ERROR)

        stream = body.get("stream") is not False
        rec = d._start_record("chat" if chat else "generate", raw, body, stream)
        if name.key not in d.loaded and d.load_delay > 0:
            loop = asyncio.get_running_loop()
            if not await _sleep_until(request, loop.time() + d.load_delay):
                d._end(rec, "disconnected")
                return web.Response()
        self._set_loaded(name, inst, keep_alive)
        t_loaded = time.perf_counter_ns()

        tool_calls = _tool_calls(tools, messages)
        tokens = [] if tool_calls else await d._reply_tokens(body)
        if fmt and not tool_calls:  # constrained to JSON: the reply becomes a JSON value for the format
            tokens = tokenize(go_json(_json_for(fmt, "".join(tokens))).decode())
        thinking = (
            await d._reply_tokens(body, d.thinking) if "thinking" in model.capabilities and think is not False else []
        )
        if thinking and not thinking_on:  # `think` unset: the model's own tags stay in the content (pre-0.9 shape)
            tokens, thinking = ["<think>", "\n", *thinking, "\n", "</think>", "\n\n", *tokens], []
        done_reason = "stop"
        options = body.get("options") or {}
        num_predict = options.get("num_predict") if isinstance(options, dict) else None
        if (
            isinstance(num_predict, int)
            and not isinstance(num_predict, bool)
            and 0 < num_predict < len(thinking) + len(tokens)
        ):  # thinking tokens count towards num_predict
            thinking, tokens = thinking[:num_predict], tokens[: max(0, num_predict - len(thinking))]
            tool_calls, done_reason = [], "length"
        fault = d._take_fault(("chat_error",), name.key)
        if fault is not None:
            tokens = tokens[: fault.after_tokens]
        if chat:
            prompt_text = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
            prompt_count = len(tokenize(prompt_text)) + 4 * len(messages) + 768 * len(images)
        else:
            prompt_count = len(tokenize(str(body.get("system") or "") + prompt)) + 4 + 768 * len(images)
        call_tokens = sum(len(tokenize(json.dumps(c["function"]["arguments"]))) + 2 for c in tool_calls)

        if fault is not None and (not stream or fault.after_tokens <= 0):
            if not await self._pace(request, len(tokens)):
                d._end(rec, "disconnected")
                return web.Response()
            d._end(rec, "error")
            return _error(500, fault.error, STREAM_ERROR_CT if stream else JSON_CT)

        def final(
            content: str, t_eval: int, sent: int, thought: str = "", calls: list[Any] | None = None
        ) -> dict[str, Any]:
            now = time.perf_counter_ns()
            out: dict[str, Any] = {"model": raw, "created_at": created_at()}
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if thought:
                    message["thinking"] = thought
                if calls:
                    message["tool_calls"] = calls
                out.update(message=message, done_reason=done_reason, done=True)
            else:
                out.update(response=content, done=True, done_reason=done_reason)
                if thought:
                    out["thinking"] = thought
                if not body.get("raw"):
                    out["context"] = [zlib.crc32(t.encode()) % 128_000 for t in tokenize(prompt)] + [
                        zlib.crc32(t.encode()) % 128_000 for t in tokens[:sent]
                    ]
            metrics = {
                "total_duration": now - t_request,
                "load_duration": max(1, t_loaded - t_request),
                "prompt_eval_count": prompt_count,
                "prompt_eval_duration": max(1, t_eval - t_loaded),
                "eval_count": sent,
                "eval_duration": max(1, now - t_eval),
            }
            out.update((k, v) for k, v in metrics.items() if v)  # zero values are omitted
            return out

        if not stream:
            t_eval = time.perf_counter_ns()
            if not await self._pace(request, len(thinking) + len(tokens) + call_tokens):
                d._end(rec, "disconnected")
                return web.Response()
            rec.tokens_sent = len(thinking) + len(tokens)
            d._end(rec, "done")
            total = len(thinking) + len(tokens) + call_tokens
            return _json(final("".join(tokens), t_eval, total, "".join(thinking), tool_calls))

        resp = web.StreamResponse(headers={"Content-Type": NDJSON_CT})
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
        except (ConnectionError, RuntimeError):
            d._end(rec, "disconnected")
            return resp
        head = b'{"model":' + go_json(raw) + b',"created_at":"'
        if chat:
            mid, tail = b'","message":{"role":"assistant","content":', b'},"done":false}\n'
            think_mid = b'","message":{"role":"assistant","content":"","thinking":'
        else:
            mid, tail = b'","response":', b',"done":false}\n'
            think_mid = b'","response":"","thinking":'
        t_eval = time.perf_counter_ns()
        sent = 0
        if thinking:  # thinking streams first, in its own field, with empty content
            sent = await self._stream_tokens(request, resp, rec, [go_json(t) for t in thinking], head, think_mid, tail)
        if sent >= 0:
            more = await self._stream_tokens(
                request, resp, rec, [go_json(t) for t in tokens], head, mid, tail, already=sent
            )
            sent = -1 if more < 0 else sent + more
        if sent >= 0 and tool_calls and fault is None:  # parsed calls go out in one chunk before the final line
            line = go_json(
                {
                    "model": raw,
                    "created_at": created_at(),
                    "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                    "done": False,
                }
            )
            sent = sent + call_tokens if await _write(request, resp, line + b"\n") else -1
            rec.lines_sent += 1
        if sent < 0:
            d._end(rec, "disconnected")
            return resp
        if fault is not None:
            line = go_json({"error": fault.error}) + b"\n"
            state = "error"
        else:
            line = go_json(final("", t_eval, sent)) + b"\n"
            state = "done"
        if not await _write(request, resp, line):
            d._end(rec, "disconnected")
            return resp
        rec.lines_sent += 1
        d._end(rec, state)
        await _finish(resp)
        return resp

    async def _stream_tokens(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        rec: StreamRecord,
        encoded: list[bytes],
        head: bytes,
        mid: bytes,
        tail: bytes,
        already: int = 0,
    ) -> int:
        """Write one chunk per token; the number written, or -1 when the client went away. `already`: chunks
        written before (thinking before content), so the record counts them all."""
        d = self.d
        n = len(encoded)
        rate = d.tokens_per_s
        if rate <= 0:
            i = 0
            while i < n:
                batch = encoded[i : i + _FAST_BATCH]
                data = b"".join([b"".join((head, created_at().encode(), mid, tok, tail)) for tok in batch])
                if not await _write(request, resp, data):
                    return -1
                i += len(batch)
                rec.tokens_sent = rec.lines_sent = already + i
                rec.last_token_at = time.monotonic()
                if rec.first_token_at is None:
                    rec.first_token_at = rec.last_token_at
                d._notify()
                await asyncio.sleep(0)
            return n
        due = asyncio.get_running_loop().time()  # when the previous token was due
        step = 1 if already else 0  # content after thinking waits one token's time too
        for i, tok in enumerate(encoded):
            if i or step:
                next_due = await self._next_token(request, due)
                if next_due is None:
                    return -1
                due = next_due
            if not await _write(request, resp, b"".join((head, created_at().encode(), mid, tok, tail))):
                return -1
            rec.tokens_sent = rec.lines_sent = already + i + 1
            rec.last_token_at = time.monotonic()
            if rec.first_token_at is None:
                rec.first_token_at = rec.last_token_at
            d._notify()
        await asyncio.sleep(0)
        return n

    async def _next_token(self, request: web.Request, previous: float) -> float | None:
        """Wait until one token's time after `previous` (the previous token's due time) and return this one's;
        None as soon as the client has gone. The speed is read again while waiting: a test that has seen what it
        came for sets `tokens_per_s = 0` and the rest of the answer comes at once."""
        loop = asyncio.get_running_loop()
        while True:
            if _gone(request):
                return None
            rate = self.d.tokens_per_s
            due = previous + 1.0 / rate if rate > 0 else loop.time()
            remaining = due - loop.time()
            if remaining <= 0:
                await asyncio.sleep(0)
                return None if _gone(request) else due
            await asyncio.sleep(min(remaining, _POLL))

    async def _pace(self, request: web.Request, n_tokens: int) -> bool:
        """Spend the time generating `n_tokens` would take (non-streamed replies); False if the client left."""
        due = asyncio.get_running_loop().time()
        for _ in range(n_tokens - 1):
            if self.d.tokens_per_s <= 0:
                break
            next_due = await self._next_token(request, due)
            if next_due is None:
                return False
            due = next_due
        return await _sleep_until(request, asyncio.get_running_loop().time())

    def _set_loaded(self, name: ModelName, inst: InstalledModel, keep_alive: float) -> None:
        if keep_alive == 0:
            self.d.loaded.pop(name.key, None)
            return
        now = time.time_ns()
        expires = now + (_FOREVER_NS if keep_alive < 0 else int(keep_alive * 1e9))
        self.d.loaded[name.key] = _Loaded(inst.name, inst.model, expires)

    # -- embeddings -------------------------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.Response:
        d = self.d
        t_request = time.perf_counter_ns()
        body = await _read_body(request, "EmbedRequest")
        if isinstance(body, web.Response):
            return body
        d._record(d.embed_requests, body)
        raw = body.get("model") or ""
        if not raw:
            return _error(400, "model is required")
        name = parse_name(raw)
        if name is None:
            return _error(400, "model is required")
        inst = d._find_installed(name)
        if inst is None:
            return _error(404, f"model '{raw}' not found")
        value = body.get("input")
        if value is None or value == "" or value == []:
            return _json({"model": raw, "embeddings": []})
        if isinstance(value, str):
            inputs = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            inputs = list(value)
        else:
            return _error(400, "invalid input type")
        try:
            keep_alive = _parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            return _error(400, str(exc))
        model = inst.model
        if "embedding" not in model.capabilities:
            return _error(500, NO_EMBEDDING_ERROR)
        counts = [len(tokenize(text)) + 2 for text in inputs]
        if body.get("truncate") is False and max(counts) > model.context_length:
            return _error(400, "the input length exceeds the context length")
        dims = body.get("dimensions")
        size = model.embedding_length
        if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0:
            if dims > size:
                return _error(400, f"dimensions must be between 1 and {size}")
            size = dims
        self._set_loaded(name, inst, keep_alive)
        t_loaded = time.perf_counter_ns()
        vectors = [_embedding(text, size) for text in inputs]
        now = time.perf_counter_ns()
        return _json(
            {
                "model": raw,
                "embeddings": vectors,
                "total_duration": now - t_request,
                "load_duration": max(1, t_loaded - t_request),
                "prompt_eval_count": sum(min(c, model.context_length) for c in counts),
            }
        )

    # -- control API (standalone process with --control) -----------------------------------------------------

    async def control_state(self, request: web.Request) -> web.Response:
        d = self.d
        return _json(
            {
                "installed": d.installed_names(),
                "registry": sorted(d.registry),
                "pull_counts": dict(d.pull_counts),
                "chat_requests": d.chat_requests,
                "generate_requests": len(d.generate_requests),
                "streams": [
                    {
                        "kind": r.kind,
                        "model": r.model,
                        "state": r.state,
                        "tokens_sent": r.tokens_sent,
                        "started": r.started,  # this process's monotonic clock: overlaps are comparable
                        "ended": r.ended,
                    }
                    for r in d.streams
                ],
                "config": {
                    "pull_speed": d.pull_speed,
                    "pull_interval": d.pull_interval,
                    "tokens_per_s": d.tokens_per_s,
                    "load_delay": d.load_delay,
                    "reply": d.reply if isinstance(d.reply, str) else None,
                },
            }
        )

    async def control_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        for key in ("pull_speed", "pull_interval", "tokens_per_s", "load_delay", "reply"):
            if key in body:
                setattr(self.d, key, body[key])
        return await self.control_state(request)

    async def control_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind, model, n = body.get("kind"), body.get("model"), body.get("n", 1)
        if kind == "fail_pull":
            self.d.fail_next_pulls(model, n, error=body.get("error", DEFAULT_PULL_ERROR))
        elif kind == "cut_pull":
            self.d.cut_next_pulls(model, n)
        elif kind == "chat_error":
            self.d.fail_next_chats(
                n,
                after_tokens=int(body.get("after_tokens", 0)),
                error=body.get("error", DEFAULT_CHAT_ERROR),
                model=model,
            )
        elif kind == "busy":
            self.d.busy_next_chats(n, model=model)
        else:
            return _error(400, "kind must be fail_pull, cut_pull, chat_error or busy")
        return _json({"ok": True})

    async def control_clear_faults(self, request: web.Request) -> web.Response:
        self.d.clear_faults()
        return _json({"ok": True})

    async def control_reset(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.d.reset()
        if body.get("uninstall_all"):
            self.d.installed.clear()
            self.d.blobs.clear()
            self.d.partials.clear()
            self.d.loaded.clear()
        return _json({"ok": True})

    async def control_preinstall(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.d.preinstall(*body.get("models", []))
        return _json({"installed": self.d.installed_names()})

    async def control_down(self, request: web.Request) -> web.Response:
        seconds = float((await request.json()).get("seconds", 1.0))

        async def bounce() -> None:
            await asyncio.sleep(0.05)  # let this response go out first
            await self.d.go_down()
            await asyncio.sleep(seconds)
            await self.d.come_back()

        self.d._spawn(bounce())
        return _json({"ok": True, "down_for": seconds})


# -- standalone process --------------------------------------------------------------------------------------


def _parse_model_arg(text: str) -> tuple[str, list[int]]:
    name, _, sizes = text.partition("=")
    return name, [int(s) for s in sizes.split(",")] if sizes else [50_000]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.doubles.ollama", description="Ollama test double")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--pull-speed", type=float, default=0.0, help="download bytes/s per layer (0 = instant)")
    p.add_argument("--pull-interval", type=float, default=0.06, help="seconds between pull progress lines")
    p.add_argument("--tokens-per-s", type=float, default=0.0, help="chat/generate token rate (0 = flat out)")
    p.add_argument("--reply", default=DEFAULT_REPLY, help="the text every chat/generate answers")
    p.add_argument("--load-delay", type=float, default=0.0, help="seconds before the first token of a cold model")
    p.add_argument("--size-scale", type=float, default=1e-4, help="scale of the default catalog's model blobs")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[=SIZE,...]",
        help="add a model to the registry (repeatable)",
    )
    p.add_argument("--preinstall", action="append", default=[], metavar="NAME", help="install at start (repeatable)")
    p.add_argument("--version-string", default=DEFAULT_VERSION, help="what /api/version reports")
    p.add_argument("--no-host-guard", action="store_true", help="skip the loopback Host-header check")
    p.add_argument("--control", action="store_true", help="serve the /_double/* control endpoints")
    p.add_argument("--history-limit", type=int, default=10_000, help="recorded requests/streams kept per list")
    p.add_argument(
        "--num-parallel", type=int, default=0, help="answers generated at once, the rest queued (OLLAMA_NUM_PARALLEL)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run() -> None:
        double = OllamaDouble(
            pull_speed=args.pull_speed,
            pull_interval=args.pull_interval,
            tokens_per_s=args.tokens_per_s,
            reply=args.reply,
            load_delay=args.load_delay,
            version=args.version_string,
            size_scale=args.size_scale,
            host_guard=not args.no_host_guard,
            control=args.control,
            history_limit=args.history_limit,
            num_parallel=args.num_parallel,
        )
        for spec in args.model:
            double.add_model(*_parse_model_arg(spec))
        double.preinstall(*args.preinstall)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await double.start(args.host, args.port)
        print(f"ollama double listening on {args.host}:{double.port}", file=sys.stderr, flush=True)
        await stop.wait()
        await double.stop()
        print("ollama double stopped", file=sys.stderr, flush=True)

    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
