"""The one way the studio talks to Ollama: domain verbs over its REST API, domain errors, timeouts.

Built on aiohttp's client (one shared session, keep-alive): measured here, it relays a token stream
several times faster than httpx (on which the official `ollama` client rides) and keeps its time to
first byte flat under concurrency (see tests/bench/chat_bench.py). Chat's streamed answers
(`chat_batches`), one request per answer, go through the lean client of studio/clients/upstream.py on a
plain http:// node (the gateway's own): less than half of aiohttp's CPU per request (docs/benchmarks.md).

Facts this follows (docs/ollama-api.md): streams are NDJSON; an error that happens after
the stream started arrives as a final `{"error": ...}` line under HTTP 200; a stream that ends with
neither `success`/`done` nor an error was cut; `/api/tags` digests have no `sha256:` prefix; a model
name with a host part makes Ollama pull from that host, so only public-registry names are accepted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from studio.clients.upstream import UpstreamError, UpstreamPool, UpstreamResponse

# Host-less names only (see the pull-host rule): [namespace/]model[:tag].
SAFE_MODEL_NAME = re.compile(
    r"(?:[A-Za-z0-9_][A-Za-z0-9_-]{0,79}/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?"
)


JSON_HEADERS = {"Content-Type": "application/json"}
LEAN_JSON_HEADERS = [("Content-Type", "application/json")]


class OllamaError(Exception):
    """Ollama answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class OllamaUnavailable(OllamaError):
    """Ollama cannot be reached (refused, timed out, or cut the connection)."""


class ModelNotFound(OllamaError):
    """The model is not pulled into Ollama (HTTP 404)."""


class OllamaBusy(OllamaError):
    """Ollama's queue is full (HTTP 503)."""


class UnsafeModelName(ValueError):
    pass


def normalise(name: str) -> str:
    """`llama3.2` -> `llama3.2:latest`; lower-case, as Ollama matches names."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return (name if ":" in last else name + ":latest").lower()


def check_model_name(name: str) -> str:
    if not SAFE_MODEL_NAME.fullmatch(name):
        raise UnsafeModelName(f"{name!r} is not a public Ollama library name")
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    if tag in ("cloud", "local") or tag.endswith("-cloud"):
        raise UnsafeModelName(f"{name!r} selects a cloud/local source")
    return name


@dataclass(frozen=True)
class InstalledModel:
    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class ModelFacts:
    """What `/api/show` says an installed model can do."""

    capabilities: tuple[str, ...]  # completion, vision, tools, thinking, embedding, insert, ...
    context_length: int | None  # model_info["<architecture>.context_length"]
    quantization: str  # details.quantization_level


@dataclass(frozen=True)
class Embeddings:
    """What `/api/embed` answered: a vector per input, and the tokens read."""

    vectors: list[list[float]]
    prompt_tokens: int


class OllamaClient:
    def __init__(
        self, base_url: str, *, connect_timeout: float = 3.0, request_timeout: float = 30.0, read_timeout: float = 300.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._read_timeouts: dict[float, aiohttp.ClientTimeout] = {}
        lean = lean_url(self.base_url)  # chat's streams: the lean client (a plain http:// node), else aiohttp
        self._lean = UpstreamPool(lean[0], lean[1], connect_timeout=connect_timeout) if lean is not None else None
        self._lean_prefix = lean[2] if lean is not None else ""

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout),
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._lean is not None:
            await self._lean.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _read_timeout(self, idle: float) -> aiohttp.ClientTimeout:
        """A stream's timeouts, made once per idle timeout (not once per request)."""
        timeout = self._read_timeouts.get(idle)
        if timeout is None:
            timeout = self._read_timeouts[idle] = self._timeout(sock_read=idle)
        return timeout

    def _timeout(self, total: float | None = None, sock_read: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total, connect=self.connect_timeout, sock_connect=self.connect_timeout, sock_read=sock_read
        )

    async def _json(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, timeout=self._timeout(total=timeout or self.request_timeout)
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise _error_for(resp.status, raw)
                return json.loads(raw) if raw else None
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise OllamaUnavailable(f"Ollama is unreachable at {self.base_url}: {_describe(exc)}") from None

    # -- verbs -----------------------------------------------------------------------------------

    async def version(self) -> str:
        doc = await self._json("GET", "/api/version")
        return str(doc.get("version", "unknown"))

    async def installed(self) -> dict[str, InstalledModel]:
        """Models Ollama has, by normalised name (`/api/tags`)."""
        doc = await self._json("GET", "/api/tags")
        out = {}
        for m in doc.get("models") or []:
            name = m.get("model") or m.get("name")
            if name:
                out[normalise(name)] = InstalledModel(name=name, digest=m.get("digest", ""), size=m.get("size", 0))
        return out

    async def loaded(self) -> set[str]:
        """Models Ollama holds in memory now, by normalised name (`/api/ps`)."""
        doc = await self._json("GET", "/api/ps") or {}
        return {normalise(n) for m in doc.get("models") or [] if (n := m.get("model") or m.get("name"))}

    async def show(self, model: str) -> ModelFacts:
        """What an installed model can do (`/api/show`); ModelNotFound when Ollama does not have it."""
        doc = await self._json("POST", "/api/show", {"model": check_model_name(model)}) or {}
        info = doc.get("model_info") or {}
        arch = info.get("general.architecture")
        context = info.get(f"{arch}.context_length") if arch else None
        if not isinstance(context, int):
            context = next((v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)), None)
        return ModelFacts(
            capabilities=tuple(c for c in doc.get("capabilities") or () if isinstance(c, str)),
            context_length=context,
            quantization=str((doc.get("details") or {}).get("quantization_level") or ""),
        )

    async def embed(
        self, model: str, inputs: list[str], *, dimensions: int | None = None, timeout: float | None = None
    ) -> Embeddings:
        """One vector per input (`/api/embed`); `dimensions` shortens them (models that allow it)."""
        body: dict[str, Any] = {"model": check_model_name(model), "input": inputs}
        if dimensions is not None:
            body["dimensions"] = dimensions
        doc = await self._json("POST", "/api/embed", body, timeout=timeout) or {}
        vectors = doc.get("embeddings")
        if not isinstance(vectors, list) or len(vectors) != len(inputs):
            raise OllamaError(f"Ollama answered {len(inputs)} inputs with no matching embeddings")
        count = doc.get("prompt_eval_count")
        return Embeddings(vectors, count if isinstance(count, int) else 0)

    async def delete(self, model: str) -> bool:
        """Remove a model; False if Ollama did not have it."""
        try:
            await self._json("DELETE", "/api/delete", {"model": check_model_name(model)})
        except ModelNotFound:
            return False
        return True

    async def pull(self, model: str, *, idle_timeout: float = 120.0) -> AsyncIterator[dict[str, Any]]:
        """Stream `/api/pull` progress lines; raises OllamaError on an error line or a cut stream."""
        body = {"model": check_model_name(model), "insecure": False, "stream": True}
        async with self._stream("/api/pull", body, idle_timeout) as lines:
            finished = False
            async for line in lines:
                if "error" in line:
                    raise OllamaError(str(line["error"]))
                if line.get("status") == "success":
                    finished = True
                yield line
            if not finished:
                raise OllamaUnavailable("the pull stream ended before success (connection cut)")

    @asynccontextmanager
    async def chat(
        self, body: dict[str, Any], *, first_token_timeout: float = 120.0, idle_timeout: float = 60.0
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open a streamed `/api/chat`; leaving the block closes the connection (Ollama stops generating).

        Errors before the first byte raise here (ModelNotFound, OllamaBusy, OllamaUnavailable);
        an error line mid-stream raises OllamaError from the iterator.
        """
        async with self._stream(
            "/api/chat", {**body, "stream": True}, idle_timeout, first_byte_timeout=first_token_timeout
        ) as lines:

            async def checked() -> AsyncIterator[dict[str, Any]]:
                done = False
                async for line in lines:
                    if "error" in line:
                        raise OllamaError(str(line["error"]))
                    done = bool(line.get("done"))
                    yield line
                if not done:
                    raise OllamaUnavailable("the chat stream ended before done (connection cut)")

            yield checked()

    @asynccontextmanager
    async def chat_batches(
        self, body: dict[str, Any], *, first_token_timeout: float = 120.0, idle_timeout: float = 60.0
    ) -> AsyncIterator[AsyncIterator[Lines]]:
        """`chat`, its lines in batches: every whole line one read from the socket brought (`Lines`).

        The relay writes a batch as one write (one syscall, not one per token) and decodes it with one
        call (tests/bench/relay_bench.py). Never an empty batch; the same errors as `chat`. Asked of a
        plain http:// node with the lean client (studio/clients/upstream.py: a chat answer's request costs
        less than half of aiohttp's), else with aiohttp.
        """
        body = {**body, "stream": True}
        opened = (
            self._lean_stream("/api/chat", body, idle_timeout, first_token_timeout)
            if self._lean is not None
            else self._stream("/api/chat", body, idle_timeout, first_byte_timeout=first_token_timeout, batched=True)
        )
        async with opened as batches:

            async def checked() -> AsyncIterator[Lines]:
                done = False
                async for batch in batches:
                    rest = batch.rest  # (plain token lines are neither an error nor the end)
                    for i, line in enumerate(rest):
                        if "error" in line:  # the lines before it are the answer's: they go first
                            if i or batch.texts:
                                yield batch.cut(i)
                            raise OllamaError(str(line["error"]))
                    done = bool(rest and rest[-1].get("done"))
                    yield batch
                if not done:
                    raise OllamaUnavailable("the chat stream ended before done (connection cut)")

            yield checked()

    @asynccontextmanager
    async def _stream(
        self,
        path: str,
        body: dict[str, Any],
        idle_timeout: float,
        first_byte_timeout: float | None = None,
        batched: bool = False,
    ) -> AsyncIterator[AsyncIterator[Any]]:
        url = self.base_url + path
        try:
            async with asyncio.timeout(first_byte_timeout or self.request_timeout):  # no task of its own, as wait_for
                resp = await self.session.post(
                    url, data=_encode(body), headers=JSON_HEADERS, timeout=self._read_timeout(idle_timeout)
                )
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise OllamaUnavailable(f"Ollama is unreachable at {self.base_url}: {_describe(exc)}") from None
        try:
            if resp.status >= 400:
                raise _error_for(resp.status, await resp.read())
            yield _ndjson_batches(resp, self.base_url) if batched else _ndjson(resp, self.base_url)
        finally:
            resp.close()  # closes the connection if the stream was not read to the end

    @asynccontextmanager
    async def _lean_stream(
        self, path: str, body: dict[str, Any], idle_timeout: float, first_byte_timeout: float
    ) -> AsyncIterator[AsyncIterator[Lines]]:
        """`_stream(..., batched=True)` through the lean client: the same batches, the same errors. A chat
        has no side effect, so its POST is sent again when a kept-alive connection turns out closed."""
        assert self._lean is not None
        try:
            async with asyncio.timeout(first_byte_timeout):
                resp = await self._lean.request(
                    "POST", self._lean_prefix + path, LEAN_JSON_HEADERS, _encode(body), replay=True
                )
        except (TimeoutError, UpstreamError, ConnectionError) as exc:
            raise OllamaUnavailable(f"Ollama is unreachable at {self.base_url}: {_describe(exc)}") from None
        try:
            if resp.status >= 400:
                try:
                    async with asyncio.timeout(self.request_timeout):
                        raw = await resp.read()
                except (TimeoutError, UpstreamError, ConnectionError) as exc:
                    raise OllamaUnavailable(f"Ollama is unreachable at {self.base_url}: {_describe(exc)}") from None
                raise _error_for(resp.status, raw)
            yield _lean_batches(resp, idle_timeout, self.base_url)
        finally:
            resp.release()  # closes the connection if the stream was not read to the end


def lean_url(base_url: str) -> tuple[str, int, str] | None:
    """(host, port, path prefix) of a node the lean client serves (plain http://, no credentials in the
    URL); None for one left to aiohttp."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.username or parts.password or not parts.hostname:
        return None
    try:
        port = parts.port or 80
    except ValueError:
        return None
    return parts.hostname, port, parts.path.rstrip("/")


async def _lean_batches(resp: UpstreamResponse, idle_timeout: float, base_url: str) -> AsyncIterator[Lines]:
    try:
        async for batch in _whole_lines(resp.chunks(idle_timeout)):
            yield batch
    except (TimeoutError, UpstreamError, ConnectionError) as exc:
        raise OllamaUnavailable(f"the stream from Ollama at {base_url} broke: {_describe(exc)}") from None


async def _whole_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[Lines]:
    """The whole lines each chunk completes, as one `Lines` (a line cut by the chunk waits for the next)."""
    rest = b""
    async for chunk in chunks:
        if rest:
            chunk, rest = rest + chunk, b""
        end = chunk.rfind(b"\n") + 1
        if end < len(chunk):
            chunk, rest = chunk[:end], chunk[end:]
        if chunk.strip():
            yield Lines(chunk)
    if rest.strip():
        yield Lines(rest + b"\n")


async def _ndjson(resp: aiohttp.ClientResponse, base_url: str) -> AsyncIterator[dict[str, Any]]:
    rest = b""
    try:
        async for chunk in resp.content.iter_any():
            *lines, rest = (rest + chunk).split(b"\n")  # one split per chunk, not one slice per line
            for raw in lines:
                if raw.strip():
                    yield json.loads(raw)
        if rest.strip():
            yield json.loads(rest)
    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise OllamaUnavailable(f"the stream from Ollama at {base_url} broke: {_describe(exc)}") from None
    except json.JSONDecodeError as exc:
        raise OllamaError(f"Ollama sent a line that is not JSON: {exc}") from None


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson cannot write (an integer past 64 bits in a tool's schema): the slow way
        return json.dumps(body).encode()


async def _ndjson_batches(resp: aiohttp.ClientResponse, base_url: str) -> AsyncIterator[Lines]:
    try:
        async for batch in _whole_lines(resp.content.iter_any()):
            yield batch
    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise OllamaUnavailable(f"the stream from Ollama at {base_url} broke: {_describe(exc)}") from None


# A chat's steady state: `{"model":..,"created_at":..,"message":{"role":"assistant","content":"<text>"},"done":false}`
# (docs/ollama-api.md: Go writes its fields in this order, compact). The text is a JSON string's body as the
# grammar has it (no raw quote, backslash or control character; escapes whole), so it can be written on
# as it is. Matched from `"message"` on (the regex engine looks for that literal first: twice as fast as
# matching from the line's start); `_plain_tokens` checks the rest of each line.
_TOKEN_LINE = re.compile(
    rb'"message":\{"role":"assistant","content":"((?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))++)"\},"done":false\}\n'
)
_LINE_START = b'{"model":"'


def _plain_tokens(raw: bytes) -> tuple[list[bytes], bytes]:
    """(the texts of the plain token lines `raw` starts with, the lines after them): every line, or every
    line but the last (the answer's end, an error, tool calls), or none."""
    found = _all_plain(raw)
    if found:
        return found, b""
    if found is None:  # some plain lines, not all: are they all but the last?
        last = raw.rfind(b"\n", 0, len(raw) - 1) + 1
        if last and (head := _all_plain(raw[:last])):
            return head, raw[last:]
    return [], raw


def _all_plain(raw: bytes) -> list[bytes] | None:
    """Each line's text if every line is a plain token line; [] if none is; None if some are."""
    found = _TOKEN_LINE.findall(raw) if raw.startswith(_LINE_START) else []
    n = len(found)  # at most one per line (a match ends its line); one per line if n == lines
    if not n:
        return []
    plain = raw.count(b"\n") == n and raw.count(b'\n{"model":"') == n - 1 and _utf8(raw)
    return found if plain else None


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


class Lines:
    """Lines of Ollama's NDJSON that arrived together (never empty): their bytes, decoded when first asked.

    The relay's hot path (functions/chat/relay.py) takes `texts` first: the plain token lines the batch
    starts with (all of them, or all but the last: the answer's end), their texts as Ollama escaped them,
    found by one regular expression over the batch, nothing decoded (a fifth of decoding each line;
    tests/bench/relay_bench.py). The lines after them (`rest`: thinking, tool calls, the end, an error)
    are decoded, as every line used to be."""

    __slots__ = ("_rest", "raw", "texts")

    def __init__(self, raw: bytes = b"", decoded: list[dict[str, Any]] | None = None) -> None:
        self.raw = raw  # whole lines, each ending in a line break
        self.texts: list[bytes]  # each a JSON string's body, without its quotes
        self._rest: list[dict[str, Any]] | bytes
        if decoded is not None:
            self.texts, self._rest = [], decoded
        else:
            self.texts, self._rest = _plain_tokens(raw)

    @property
    def rest(self) -> list[dict[str, Any]]:
        """The lines after `texts`, as JSON objects; a line that is not one is an OllamaError."""
        if isinstance(self._rest, bytes):
            self._rest = _decode([line for line in self._rest.split(b"\n") if line.strip()]) if self._rest else []
        return self._rest

    @property
    def decoded(self) -> list[dict[str, Any]]:
        """Every line as a JSON object."""
        if not self.texts:
            return self.rest
        return _decode([line for line in self.raw.split(b"\n") if line.strip()])

    def cut(self, n: int) -> Lines:
        """The lines before the `n`th line of `rest` (what came before an error line)."""
        if not self.raw:
            return Lines(decoded=self.rest[:n])
        kept = [line for line in self.raw.split(b"\n") if line.strip()][: len(self.texts) + n]
        return Lines(b"\n".join(kept) + b"\n")


def _decode(lines: list[bytes]) -> list[dict[str, Any]]:
    """Lines of JSON objects decoded in one call (as one JSON array); a line that is not JSON is an OllamaError."""
    try:
        batch = orjson.loads(b"[" + b",".join(lines) + b"]") if len(lines) > 1 else [orjson.loads(lines[0])]
    except orjson.JSONDecodeError:
        batch = [_line(raw) for raw in lines]  # which line, and lines orjson refuses but json takes (lone surrogates)
    if not all(isinstance(line, dict) for line in batch):
        raise OllamaError("Ollama sent a line that is not a JSON object")
    return batch


def _line(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise OllamaError(f"Ollama sent a line that is not JSON: {exc}") from None


def _error_for(status: int, raw: bytes) -> OllamaError:
    try:
        message = str(json.loads(raw).get("error", "")) or raw.decode(errors="replace")
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip() or f"HTTP {status}"
    if status == 404:
        return ModelNotFound(message, status)
    if status == 503:
        return OllamaBusy(message, status)
    return OllamaError(message, status)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc)
    if "Connect call failed" in text or "Connection refused" in text:
        return "connection refused"
    return text or type(exc).__name__
