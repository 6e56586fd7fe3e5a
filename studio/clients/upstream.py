"""A lean HTTP/1.1 client: the gateway's hop to function containers, and chat's streams from Ollama nodes.

aiohttp's client costs more CPU per request than the whole function it calls, so the proxy speaks
HTTP/1.1 itself. tests/bench/upstream_bench.py measures the client's CPU per GET against the ping
function: 65 us with this module vs 163 us with one shared aiohttp ClientSession at 50 in flight
(0.40x), 77 vs 274 us one at a time (0.28x); 2 cores, loaded, medians of 3 rounds. A chat answer is
one request too, so studio/clients/ollama.py asks a plain http:// node for its streams with it
(tests/bench/relay_bench.py measures the relay whole). A keep-alive pool per upstream, requests written
in one `write`, responses parsed by httptools (the C parser uvicorn uses), bodies relayed as they arrive
with flow control both ways; a response left before its end closes its connection (how Ollama learns to
stop generating).

Only what its callers need: no redirects, no cookies, no compression, no proxies, no pipelining
(a connection carries one exchange at a time; bytes beyond a response drop the connection).
Interim 1xx responses are skipped, bodies may be delimited by length, chunks or the upstream
closing, and response headers are capped at MAX_HEAD_BYTES. tests/studio/test_upstream.py holds
the tests an HTTP client library would have, against real sockets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

import httptools

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
IDLE_TIMEOUT_S = 30.0  # below aiohttp servers' 75 s keep-alive, so the server rarely closes first
HIGH_WATER = 256 * 1024  # pause reading from the upstream when this much body is waiting
MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one response (aiohttp's server sends a few hundred)


class _HeadTooLarge(Exception):
    pass


class UpstreamError(Exception):
    """The upstream could not be reached or broke the exchange."""


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamResponse:
    """Status and headers as soon as they arrive; the body as a stream of chunks."""

    def __init__(self, conn: _Connection, method: str) -> None:
        self._conn = conn
        self.method = method
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self._headers_done: asyncio.Future[None] = conn.loop.create_future()
        self._headers_done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._wakeup: asyncio.Future[None] | None = None
        self.complete = False
        self.error: BaseException | None = None

    # -- fed by the protocol ---------------------------------------------------------------------

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.complete:
            return
        self.error = exc
        if not self._headers_done.done():
            self._headers_done.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- read by the proxy -----------------------------------------------------------------------

    async def wait_headers(self) -> None:
        await self._headers_done

    @property
    def content_length(self) -> int | None:
        for name, value in self.headers:
            if name.lower() == "content-length":
                with contextlib.suppress(ValueError):
                    return int(value)
        return None

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    async def chunks(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:  # everything that is waiting, in one piece: one write for the reader, not one each
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered -= len(chunk)
                if self._buffered <= HIGH_WATER // 4:
                    self._conn.resume()
                yield chunk
                continue
            if self.complete:
                return
            if self.error is not None:
                raise UpstreamError(f"the upstream broke off the response: {self.error}") from None
            self._wakeup = self._conn.loop.create_future()
            try:
                await asyncio.wait_for(self._wakeup, idle_timeout)
            except TimeoutError:
                raise UpstreamError(f"the upstream sent nothing for {idle_timeout:g} s") from None

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    def release(self) -> None:
        """Done with the response: the connection goes back to the pool only if it was read to the end."""
        self._conn.finished(reusable=self.complete and self.error is None)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.got_bytes = False  # for the current exchange
        self.idle_since = 0.0
        self.closed = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._keep_alive = True
        self._reason = b""
        self._head_bytes = 0  # the current response's status line and headers, as the parser reports them
        self._raw_head_bytes = 0  # bytes received before its headers were complete
        self._interim = False  # the message being parsed is a 1xx, to be skipped
        self._final_done = False  # the final response of this exchange has been parsed to its end
        self._close_delimited = False  # its body ends when the upstream closes the connection

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes while idle: the server is closing or misbehaving
            self.close()
            return
        self.got_bytes = True
        response = self.response
        try:
            self.parser.feed_data(data)
            if not response._headers_done.done():
                # The parser buffers a header until it ends: bound what an endless one can take.
                self._raw_head_bytes += len(data)
                if self._raw_head_bytes > 2 * MAX_HEAD_BYTES:
                    raise _HeadTooLarge
        except (httptools.HttpParserError, _HeadTooLarge) as exc:
            cause = exc if isinstance(exc, _HeadTooLarge) else exc.__context__
            if isinstance(cause, _HeadTooLarge):
                response._fail(UpstreamError(f"the upstream sent response headers larger than {MAX_HEAD_BYTES} bytes"))
            elif not self._final_done:
                response._fail(UpstreamError(f"malformed response: {exc}"))
            self._keep_alive = False  # and a second message after the response (below) lands here too
            self.close()

    def eof_received(self) -> bool | None:
        with contextlib.suppress(httptools.HttpParserError):
            self.parser.feed_data(b"")  # a body delimited by close completes here
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None and not self.response.complete:
            if exc is None and self._close_delimited:
                self.response._finish()  # the close is the end of this body
            else:
                why = f": {exc}" if exc else ""
                self.response._fail(UpstreamError(f"the upstream closed the connection{why}"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("connection closed while sending"))
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._final_done:  # a second response to one request: never handed to the next request
            raise UpstreamError("the upstream sent more than one response")
        self._reason = b""
        self._head_bytes = len(b"HTTP/1.1 200 \r\n\r\n")
        self._raw_head_bytes = 0

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._count_head(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self._count_head(len(name) + len(value) + 4)  # "name: value\r\n"
        self.response.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim (100 Continue, 103 Early Hints): its headers are not the response's.
            self._interim = True
            response.headers.clear()
            return
        response.status = status
        response.reason = self._reason.decode("latin-1")
        self._keep_alive = self.parser.should_keep_alive() and status != 101  # no upgrades: never reused
        if not response._headers_done.done():
            response._headers_done.set_result(None)
        if response.method == "HEAD" or status in (101, 204, 304):
            response._finish()
        elif response.content_length is None and "chunked" not in (response.header("Transfer-Encoding") or ""):
            self._close_delimited = True
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        if self.response.complete:  # body bytes after a response that has none (HEAD, 204, 304)
            self._keep_alive = False
            return
        self.response._feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        if self._interim:
            self._interim = False
            return
        self._final_done = True
        self.response._finish()

    # -- used by the pool and the response -------------------------------------------------------

    async def drain(self) -> None:
        if self._drain is not None:
            await self._drain

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def finished(self, *, reusable: bool) -> None:
        self.response = None
        self._reason = b""
        self.resume()
        if reusable and self._keep_alive and not self.closed:
            self.parser = httptools.HttpResponseParser(self)
            self.got_bytes = False
            self._final_done = self._interim = self._close_delimited = False
            self.idle_since = self.loop.time()
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one upstream (host, port)."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 3.0, max_idle: int = 256) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()
        self.host_header = f"{host}:{port}".encode()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._all.add(conn)
        return conn

    def _take_idle(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: its peer most likely still has it open
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT_S:
                return conn
            conn.close()
        return None

    def put_back(self, conn: _Connection) -> None:
        if len(self._idle) >= self.max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        *,
        replay: bool = False,
    ) -> UpstreamResponse:
        """Send the request and wait for the response's status and headers. A kept-alive connection the
        server closed meanwhile is replaced, and the request sent again, when that is safe: an idempotent
        method, or `replay` (a request without side effects whatever its method, as a chat's POST)."""
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._exchange(conn, method, target, headers, body)
            except (ConnectionError, UpstreamError):
                replayable = not hasattr(body, "__aiter__")
                if conn.got_bytes or not replayable or not (replay or method in IDEMPOTENT):
                    raise
        return await self._exchange(await self._connect(), method, target, headers, body)

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        try:
            response = await self._send(conn, method, target, headers, body)
            await response.wait_headers()
            return response
        except BaseException:  # broken, cancelled (timeout) or the body failed: never reuse this one
            conn.close()
            raise

    async def _send(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        if conn.closed or conn.transport is None:
            raise UpstreamError("connection closed")
        response = UpstreamResponse(conn, method)
        conn.response = response
        head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), b"Host: ", self.host_header, b"\r\n"]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if isinstance(body, bytes | bytearray):
            head.append(b"Content-Length: %d\r\n\r\n" % len(body))
            conn.transport.write(b"".join(head) + body)
        elif body is None:
            if method in ("POST", "PUT", "PATCH"):
                head.append(b"Content-Length: 0\r\n")
            head.append(b"\r\n")
            conn.transport.write(b"".join(head))
        else:
            head.append(b"Transfer-Encoding: chunked\r\n\r\n")
            conn.transport.write(b"".join(head))
            async for chunk in body:
                if chunk:
                    conn.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await conn.drain()
                if conn.closed:
                    raise UpstreamError("the upstream closed the connection while the body was sent")
            conn.transport.write(b"0\r\n\r\n")
        return response

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
