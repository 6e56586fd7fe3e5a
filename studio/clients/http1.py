"""A lean HTTP/1.1 client for one kind of request: a JSON POST whose answer streams back (Ollama's `/api/chat`).

aiohttp's client costs about 120 µs of CPU per request on the development machine (its request and
response objects, header multidicts, cookie jar, tracing signals, timers); this one about 50 µs, and a
chat answer is one such request (tests/bench/relay_bench.py measures the relay whole; docs/benchmarks.md).
It keeps connections alive in a pool (reused newest first, closed after `KEEP_ALIVE_S` idle), retries
once on a fresh connection when a pooled one turns out closed by the server before any answer, stops
reading when its reader lags (`HIGH_WATER` bytes waiting: back-pressure to the server), and closes the
connection when its reader leaves before the end, which is how Ollama learns to stop generating.

Plain `http://` only, without credentials in the URL: studio/clients/ollama.py keeps aiohttp for
anything else, and for every other request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

KEEP_ALIVE_S = 30.0  # an idle pooled connection older than this is closed, not reused (aiohttp's default too)
HIGH_WATER = 256 * 1024  # bytes read and not yet taken: past this, reading pauses until they are
MAX_HEAD = 64 * 1024  # a response's status line and headers, at most


class Http1Error(ConnectionError):
    """The server cannot be reached, closed the connection, or broke the protocol."""


def lean_url(base_url: str) -> tuple[str, int, str] | None:
    """(host, port, path prefix) for a URL this client serves; None for one it leaves to aiohttp."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.username or parts.password or not parts.hostname:
        return None
    try:
        port = parts.port or 80
    except ValueError:
        return None
    return parts.hostname, port, parts.path.rstrip("/")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not asyncio's class, but alike)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def more(self, timeout: float | None) -> None:
        """Wait for more bytes; TimeoutError after `timeout` s without any, Http1Error when the server closed."""
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        if self.closed:
            raise Http1Error("the server closed the connection")
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter) if timeout else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if not self.buf and self.closed:
            raise Http1Error("the server closed the connection")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """A response whose headers have arrived; its body is read with `read()` or `chunks()`, once."""

    def __init__(self, client: LeanClient, conn: _Connection, status: int, headers: dict[bytes, bytes]) -> None:
        self.client, self.conn, self.status, self.headers = client, conn, status, headers
        self.done = False
        self._closed = False
        self._chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        length = headers.get(b"content-length")
        self._length = int(length) if length is not None and length.strip().isdigit() else None
        self._keep = headers.get(b"connection", b"").lower() != b"close"

    async def read(self, timeout: float | None = None) -> bytes:
        return b"".join([piece async for piece in self.chunks(timeout)])

    async def chunks(self, idle: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives (everything available at once, never empty); `idle`: the longest wait for more."""
        conn = self.conn
        if self._chunked:
            async for piece in self._dechunked(conn, idle):
                yield piece
        elif self._length is not None:
            left = self._length
            while left:
                if not conn.buf:
                    await conn.more(idle)
                piece = bytes(conn.buf[:left])
                del conn.buf[: len(piece)]
                left -= len(piece)
                yield piece
        else:  # until the server closes
            self._keep = False
            while True:
                if conn.buf:
                    piece = bytes(conn.buf)
                    conn.buf.clear()
                    yield piece
                if conn.closed:
                    break
                try:
                    await conn.more(idle)
                except Http1Error:
                    break
        self.done = True
        self.close()

    async def _dechunked(self, conn: _Connection, idle: float | None) -> AsyncIterator[bytes]:
        buf = conn.buf
        left = -1  # bytes of the current chunk still to come; -1: its size line is next; 0: its CRLF is
        out: list[bytes] = []
        while True:
            while True:  # decode whatever the buffer holds
                if left > 0:
                    if not buf:
                        break
                    piece = bytes(buf[:left])
                    del buf[: len(piece)]
                    left -= len(piece)
                    out.append(piece)
                    if left:
                        break
                if left == 0:
                    if len(buf) < 2:
                        break
                    if buf[:2] != b"\r\n":
                        raise Http1Error("a chunk of the response did not end with CRLF")
                    del buf[:2]
                    left = -1
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 4096:
                        raise Http1Error("a chunk size line of the response is too long")
                    break
                try:
                    size = int(bytes(buf[:end]).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise Http1Error("the response's chunked encoding is broken") from None
                if size == 0:  # the last chunk: its end, after any trailers, is an empty line
                    last = buf.find(b"\r\n\r\n", end)
                    if last < 0:
                        break
                    del buf[: last + 4]
                    if out:
                        yield b"".join(out)
                    return
                del buf[: end + 2]
                left = size
            if out:  # (more may have come while it was being taken: decoded before waiting)
                yield out[0] if len(out) == 1 else b"".join(out)
                out = []
                continue
            await conn.more(idle)

    def close(self) -> None:
        """Back to the pool after a clean end; closed otherwise (the server sees the reader leave). Once."""
        if self._closed:
            return
        self._closed = True
        conn = self.conn
        if self.done and self._keep and not conn.closed and not conn.buf and not conn.paused:
            self.client.release(conn)
        else:
            conn.close()


class LeanClient:
    """POSTs to one `http://host:port[/prefix]`, with a pool of kept-alive connections."""

    def __init__(self, host: str, port: int, prefix: str = "") -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self._host_header = f"Host: {host if ':' not in host else f'[{host}]'}:{port}\r\n".encode()
        self._idle: list[_Connection] = []

    def _pooled(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since <= KEEP_ALIVE_S:
                return conn
            conn.close()
        return None

    def release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise Http1Error(f"could not connect to {self.host}:{self.port} within {timeout:g} s") from None
        except OSError as exc:
            raise Http1Error(f"could not connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return conn

    async def post(self, path: str, body: bytes, *, connect_timeout: float) -> Response:
        """Send the request and wait for the response's headers (the caller bounds the wait)."""
        request = b"".join(
            (
                b"POST ",
                (self.prefix + path).encode(),
                b" HTTP/1.1\r\n",
                self._host_header,
                b"Content-Type: application/json\r\nAccept: application/x-ndjson\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        conn = self._pooled()
        if conn is not None:
            try:
                return await self._exchange(conn, request)
            except Http1Error:  # closed by the server while pooled: nothing was answered, ask on a new one
                conn.close()
        return await self._exchange(await self._connect(connect_timeout), request)

    async def _exchange(self, conn: _Connection, request: bytes) -> Response:
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            buf = conn.buf
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > MAX_HEAD:
                    raise Http1Error("the response's headers are too long")
                await conn.more(None)
            head = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            status_line = head[0].split(b" ", 2)
            if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
                raise Http1Error("the server did not answer in HTTP/1.1")
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, sep, value = line.partition(b":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            status = int(status_line[1])
            if status < 200:  # 100 Continue and other interim answers are not asked for: not expected
                raise Http1Error(f"the server answered {status} before its answer")
        except BaseException:
            conn.close()
            raise
        return Response(self, conn, status, headers)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
