"""studio.clients.upstream, the proxy's own HTTP/1.1 client, tested the way an HTTP library is: against a real
socket, an asyncio server in the test that writes exactly the bytes each case needs (well-formed,
cut short, oversized, unsolicited), and counts the connections and requests it sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from studio.clients.upstream import MAX_HEAD_BYTES, UpstreamConnectError, UpstreamError, UpstreamPool, UpstreamResponse
from tests.conftest import free_port
from tests.support import eventually

NO_HANG_S = 10.0  # a bound on a test that would otherwise hang, not a timing assertion


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request off the wire (Content-Length or chunked body); None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    method, target, _ = line.split(" ")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    return Request(method, target, headers, body)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    """Runs `script` for every connection; records what arrived."""

    script: Script
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        try:
            await self.script(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def next_request(self, reader: asyncio.StreamReader) -> Request | None:
        request = await read_request(reader)
        if request is not None:
            self.requests.append(request)
        return request


def answering(*responses: bytes) -> Script:
    """Keep-alive: answer the server's n-th request with the n-th of `responses` (the last repeats)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.next_request(reader) is not None:
            writer.write(responses[min(len(server.requests), len(responses)) - 1])
            await writer.drain()

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


@pytest.fixture
async def pools() -> AsyncIterator[Callable[[Server], UpstreamPool]]:
    made: list[UpstreamPool] = []

    def pool_for(server: Server) -> UpstreamPool:
        made.append(pool := UpstreamPool("127.0.0.1", server.port))
        return pool

    yield pool_for
    for pool in made:
        await pool.close()


async def fetch(
    pool: UpstreamPool, method: str = "GET", body: bytes | None = None, *, replay: bool = False
) -> tuple[UpstreamResponse, bytes]:
    resp = await asyncio.wait_for(pool.request(method, "/x", [], body, replay=replay), NO_HANG_S)
    try:
        data = await asyncio.wait_for(resp.read(), NO_HANG_S)
    finally:
        resp.release()
    return resp, data


# -- bodies ----------------------------------------------------------------------------------------


async def test_a_content_length_body_arrives_whole_with_status_and_headers(pools) -> None:
    async with Server(answering(OK)) as server:
        resp, data = await fetch(pools(server))
    assert (resp.status, resp.reason, data) == (200, "OK", b"hello")
    assert resp.content_length == 5 and resp.header("content-type") == "text/plain"


def first_chunk_then(rest: bytes, go_on: asyncio.Event) -> Script:
    """A chunked response: its first chunk ("first"), then `rest` once `go_on` is set."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(rest)
        await writer.drain()
        await server.next_request(reader)

    return script


async def test_a_chunked_body_is_relayed_chunk_by_chunk_as_it_is_sent(pools) -> None:
    first_seen = asyncio.Event()  # the second chunk only once the client holds the first: no buffering
    async with Server(first_chunk_then(b"6\r\nsecond\r\n0\r\n\r\n", first_seen)) as server:
        resp = await pools(server).request("GET", "/stream", [], None)
        got = []
        async for chunk in resp.chunks(idle_timeout=NO_HANG_S):
            got.append(chunk)
            first_seen.set()
        resp.release()
    assert b"".join(got) == b"firstsecond" and got[0] == b"first"
    assert resp.content_length is None and resp.complete


async def test_chunks_that_arrived_while_the_reader_was_busy_come_in_one_piece(pools) -> None:
    """A reader that falls behind (the relay writing to a slow visitor) takes what waits in one go: one
    write onwards, not one per chunk the upstream sent."""
    sent = asyncio.Event()
    two_chunks = b"6\r\nsecond\r\n5\r\nthird\r\n0\r\n\r\n"  # two chunks for the client's parser
    async with Server(first_chunk_then(two_chunks, sent)) as server:
        resp = await pools(server).request("GET", "/stream", [], None)
        got = []
        async for chunk in resp.chunks(idle_timeout=NO_HANG_S):
            got.append(chunk)
            if len(got) == 1:
                sent.set()
                await eventually(lambda: resp.complete, interval=0.005)  # busy while the rest arrives
        resp.release()
    assert got == [b"first", b"secondthird"]


async def test_a_body_delimited_by_the_upstream_closing_is_complete(pools) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with Server(script) as server:
        pool = pools(server)
        resp, data = await fetch(pool)
        assert data == b"until the end" and resp.error is None
        resp, data = await fetch(pool)  # that connection is gone: a new one
        assert data == b"until the end" and server.connections == 2


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "v1"\r\n\r\n',  # the length of what is not sent
    ],
    ids=["204", "304"],
)
async def test_responses_without_a_body_end_at_their_headers_and_keep_the_connection(pools, response) -> None:
    async with Server(answering(response, OK)) as server:
        pool = pools(server)
        resp, data = await fetch(pool)
        assert data == b"" and resp.complete
        resp, data = await fetch(pool)
    assert data == b"hello" and server.connections == 1 and len(server.requests) == 2


async def test_head_ends_at_the_headers_though_they_announce_a_length(pools) -> None:
    async with Server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", OK)) as server:
        pool = pools(server)
        resp, data = await fetch(pool, "HEAD")
        assert (resp.status, data, resp.content_length) == (200, b"", 5)
        resp, data = await fetch(pool)
    assert data == b"hello" and server.connections == 1


async def test_interim_1xx_responses_are_skipped_for_the_final_one(pools) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    async with Server(answering(interim + OK, OK)) as server:
        pool = pools(server)
        resp, data = await fetch(pool, "POST", b"payload")
        assert (resp.status, data) == (200, b"hello")
        assert resp.header("link") is None  # the hints' headers are not the response's
        resp, data = await fetch(pool)
    assert data == b"hello" and server.connections == 1


# -- what the client sends -------------------------------------------------------------------------


async def test_request_bodies_go_with_a_length_or_chunked(pools) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b""
        yield b"two"

    async with Server(answering(OK)) as server:
        pool = pools(server)
        resp = await pool.request("POST", "/a?b=c", [("X-Test", "1")], b"whole")
        await resp.read()
        resp.release()
        resp = await pool.request("PUT", "/streamed", [], parts())
        await resp.read()
        resp.release()
        resp = await pool.request("POST", "/empty", [], None)
        await resp.read()
        resp.release()
    whole, streamed, empty = server.requests
    assert (whole.method, whole.target, whole.body, whole.headers["content-length"]) == (
        "POST",
        "/a?b=c",
        b"whole",
        "5",
    )
    assert whole.headers["x-test"] == "1" and whole.headers["host"] == f"127.0.0.1:{server.port}"
    assert streamed.headers["transfer-encoding"] == "chunked" and streamed.body == b"one,two"
    assert empty.headers["content-length"] == "0" and empty.body == b""


# -- keep-alive ------------------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(pools) -> None:
    async with Server(answering(OK)) as server:
        pool = pools(server)
        for _ in range(5):
            _, data = await fetch(pool)
            assert data == b"hello"
    assert server.connections == 1 and len(server.requests) == 5


async def test_a_response_left_unread_does_not_go_back_to_the_pool(pools) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if server.connections == 1:
            await server.next_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)  # the rest later
            await writer.drain()
            await server.next_request(reader)  # nothing more comes on this connection: it ends
            return
        await answering(OK)(reader, writer, server)

    async with Server(script) as server:
        pool = pools(server)
        resp = await pool.request("GET", "/big", [], None)
        resp.release()  # the proxy's client went away before the body was relayed
        _, data = await fetch(pool)
    assert data == b"hello" and server.connections == 2


async def test_a_malformed_response_fails_cleanly_and_the_next_request_gets_a_fresh_connection(pools) -> None:
    async with Server(answering(b"HTTP/1.1 abc nonsense\r\n\r\n", OK)) as server:
        pool = pools(server)
        with pytest.raises(UpstreamError, match="malformed"):
            await fetch(pool)
        _, data = await fetch(pool)
    assert data == b"hello" and server.connections == 2


async def test_a_kept_connection_the_upstream_dropped_is_retried_for_idempotent_requests_only(pools) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if server.connections % 2:  # odd connections answer once, then drop the next request unanswered
            await server.next_request(reader)
            writer.write(OK)
            await writer.drain()
            await server.next_request(reader)
            return
        await answering(OK)(reader, writer, server)

    async with Server(script) as server:
        pool = pools(server)
        await fetch(pool)
        _, data = await fetch(pool)  # GET: sent, dropped unanswered, sent again on a new connection
        assert data == b"hello" and server.connections == 2

    async with Server(script) as server:
        pool = pools(server)
        await fetch(pool)
        with pytest.raises((UpstreamError, ConnectionError)):
            await fetch(pool, "POST", b"charge")  # may have been acted on: never sent twice
        assert [r.method for r in server.requests] == ["GET", "POST"]
        _, data = await fetch(pool)  # and the broken connection is not reused
        assert data == b"hello" and server.connections == 2

    async with Server(script) as server:
        pool = pools(server)
        await fetch(pool)
        _, data = await fetch(pool, "POST", b"a chat", replay=True)  # no side effect: its caller says so
        assert data == b"hello" and server.connections == 2
        assert [r.method for r in server.requests] == ["GET", "POST", "POST"]


async def test_an_upstream_that_is_down_is_a_connect_error(pools) -> None:
    pool = UpstreamPool("127.0.0.1", free_port())
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await pool.request("GET", "/", [], None)


# -- broken upstreams ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhalf!\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
    ids=["content-length", "chunked", "in-the-headers"],
)
async def test_an_upstream_closing_mid_response_is_a_clean_error_not_a_hang(pools, partial) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if server.connections == 1:
            await server.next_request(reader)
            writer.write(partial)
            await writer.drain()
            return  # closes
        await answering(OK)(reader, writer, server)

    async with Server(script) as server:
        pool = pools(server)
        with pytest.raises(UpstreamError):
            await fetch(pool)
        _, data = await fetch(pool)
    assert data == b"hello" and server.connections == 2


async def test_oversized_response_headers_are_refused(pools) -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\nContent-Length: 5\r\n\r\nhello"
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-More: 1\r\n" * (MAX_HEAD_BYTES // 8)  # and never a blank line
    for response in (huge, endless):
        async with Server(answering(response, OK)) as server:
            pool = pools(server)
            with pytest.raises(UpstreamError, match="headers larger than"):
                await fetch(pool)
            _, data = await fetch(pool)
        assert data == b"hello" and server.connections == 2


async def test_headers_at_the_limit_are_accepted(pools) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Fill: \r\n\r\n"
    fits = head.replace(b"X-Fill: ", b"X-Fill: " + b"a" * (MAX_HEAD_BYTES - len(head)))
    async with Server(answering(fits + b"hello")) as server:
        _, data = await fetch(pools(server))
    assert data == b"hello"


# -- no pipelining ---------------------------------------------------------------------------------


async def test_concurrent_requests_never_share_a_connection(pools) -> None:
    both_in = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.next_request(reader) is not None:
            if len(server.requests) == 2:
                both_in.set()
            await both_in.wait()  # hold the answer until both requests arrived: each on its own connection
            writer.write(OK)
            await writer.drain()

    async with Server(script) as server:
        pool = pools(server)
        results = await asyncio.gather(fetch(pool), fetch(pool))
        assert [data for _, data in results] == [b"hello", b"hello"] and server.connections == 2
        for _ in range(2):  # both connections went back to the pool
            await fetch(pool)
    assert server.connections == 2


async def test_bytes_beyond_the_response_are_not_taken_for_the_next_one(pools) -> None:
    # An upstream that answers twice to one request (or sends more than its length): the first answer
    # stands, and the connection is dropped instead of handing the extra answer to the next request.
    doubled = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG"
    async with Server(answering(doubled, OK)) as server:
        pool = pools(server)
        _, first = await fetch(pool)
        _, second = await fetch(pool)
    assert (first, second) == (b"hello", b"hello")
    assert server.connections == 2
