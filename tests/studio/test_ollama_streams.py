"""Chat's streams from a plain http:// Ollama node (studio/clients/ollama.py `chat_batches` through the lean
client of studio/clients/upstream.py), against a real server on a loopback socket that writes exactly the
bytes each case needs: what a chat relies on (whole lines, kept connections, the connection closed when the
reader leaves, Ollama's errors, a silent or cut stream). The client's own HTTP cases: tests/studio/test_upstream.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from studio.clients.ollama import OllamaClient, OllamaError, OllamaUnavailable, lean_url
from tests.support import free_port

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw TCP server: each request (headers and a Content-Length body) is answered by `answer`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection was closed by the client
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[Server, str]]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> tuple[Server, str]:
        s = Server(answer)
        server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        servers.append(server)
        return s, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
LINES = [b'{"message":{"role":"assistant","content":"%d"},"done":false}\n' % i for i in range(20)]
LAST = b'{"message":{"role":"assistant","content":""},"done":true,"eval_count":20}\n'


async def lines_of(ollama: OllamaClient, idle_timeout: float = 5) -> list[dict]:
    async with ollama.chat_batches({"model": "m", "messages": []}, idle_timeout=idle_timeout) as batches:
        return [line async for batch in batches for line in batch.decoded]


WHOLE = [{"message": {"role": "assistant", "content": str(i)}, "done": False} for i in range(20)] + [
    {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 20}
]


async def test_a_chunked_stream_cut_anywhere_arrives_whole_and_the_connection_is_kept(serve) -> None:
    wire = HEAD + chunked(*LINES, LAST)

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(wire), 7):  # every chunk size line, CRLF and line cut somewhere
            writer.write(wire[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)

    server, url = await serve(dribble)
    ollama = OllamaClient(url + "/")
    assert await lines_of(ollama) == WHOLE
    assert await lines_of(ollama) == WHOLE
    assert server.connections == 1  # the second answer reused the first one's connection
    assert server.requests[0].startswith(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:")
    await ollama.close()


async def test_a_connection_the_server_closed_while_pooled_is_replaced_without_an_error(serve) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunked(LAST))
        await writer.drain()
        writer.close()  # as a server whose keep-alive ran out

    server, url = await serve(once)
    ollama = OllamaClient(url)
    assert await lines_of(ollama) == WHOLE[-1:]
    await asyncio.wait_for(server.closed.wait(), 5)
    assert await lines_of(ollama) == WHOLE[-1:]  # a chat's POST sent again on a new connection
    assert server.connections == 2
    await ollama.close()


async def test_a_reader_who_leaves_before_the_end_closes_the_connection(serve) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        while True:
            writer.write(chunked(LINES[0])[:-5])  # one chunk at a time, never the last
            await writer.drain()
            await asyncio.sleep(0.001)

    server, url = await serve(endless)
    ollama = OllamaClient(url)
    async with ollama.chat_batches({"model": "m", "messages": []}) as batches:
        async for batch in batches:
            assert batch.decoded[0] == WHOLE[0]
            break
    await asyncio.wait_for(server.closed.wait(), 5)  # the server saw it go: Ollama stops generating
    await ollama.close()


async def test_an_error_with_a_length_is_ollamas_error_and_a_cut_stream_is_unavailable(serve) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error":"model \\"x\\" not found"}'
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    _, url = await serve(refuse)
    ollama = OllamaClient(url)
    with pytest.raises(OllamaError, match="not found"):
        await lines_of(ollama)
    await ollama.close()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunked(LINES[0])[:-5])
        await writer.drain()
        writer.close()

    _, url = await serve(cut)
    ollama = OllamaClient(url)
    with pytest.raises(OllamaUnavailable, match="broke"):
        await lines_of(ollama)
    await ollama.close()


async def test_a_silent_server_is_unavailable_after_the_idle_timeout(serve) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunked(LINES[0])[:-5])
        await writer.drain()
        await asyncio.sleep(30)

    _, url = await serve(stall)
    ollama = OllamaClient(url)
    with pytest.raises(OllamaUnavailable, match=r"sent nothing for 0\.2 s"):
        await lines_of(ollama, idle_timeout=0.2)
    await ollama.close()


async def test_an_unreachable_node_is_ollama_unavailable_and_other_urls_stay_with_aiohttp() -> None:
    ollama = OllamaClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OllamaUnavailable, match="connection refused"):
        async with ollama.chat_batches({"model": "m", "messages": []}):
            pass
    await ollama.close()
    assert lean_url("http://ollama:11434/") == ("ollama", 11434, "")
    assert lean_url("http://[::1]:8080/prefix/") == ("::1", 8080, "/prefix")
    assert lean_url("http://host") == ("host", 80, "")
    for other in ("https://ollama:11434", "http://user:secret@ollama:11434", "http://ollama:port"):
        assert lean_url(other) is None
