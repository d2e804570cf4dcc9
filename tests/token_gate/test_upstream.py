"""The gate's own HTTP/1.1 client to the shop, against real sockets: raw asyncio servers that
answer exactly as a test needs (chunked, HEAD, a close after the answer, a stall mid-body)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from infra.stack.embedded import free_port
from token_gate.upstream import Upstream, UpstreamError, UpstreamTimeout

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # True: keep the connection
TIMEOUT = UpstreamTimeout(connect_s=1.0, read_s=0.3)


@contextlib.asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that reads each request head (and its Content-Length body) and lets
    `handle` write the answer; yields its URL and every request it read."""
    seen: list[bytes] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                seen.append(request)
                if not await handle(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def answer(status: int, body: bytes, *headers: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d X" % status, b"content-length: %d" % len(body), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def echo(request: bytes, writer: asyncio.StreamWriter) -> bool:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    payload = orjson.dumps({"line": lines[0], "headers": lines[1:], "body": body.decode()})
    writer.write(answer(200, payload, b"x-multi: one", b"x-multi: two"))
    return True


@contextlib.asynccontextmanager
async def client(url: str, limits: UpstreamTimeout = TIMEOUT) -> AsyncIterator[Upstream]:
    async with Upstream(url, limits) as upstream:
        yield upstream


async def test_what_crosses_is_what_the_client_sent() -> None:
    async with raw_server(echo) as (url, seen), client(url) as up:
        headers = [("Accept", "a/1"), ("accept", "b/2"), ("Expect", "100-continue")]
        reply = await up.request("POST", "/products/p/orders?x=%2F", headers, b'{"q":1}')
        sent = orjson.loads(reply.body)
        assert sent["line"] == "POST /products/p/orders?x=%2F HTTP/1.1"  # the raw target
        host = url.removeprefix("http://")
        assert sent["headers"] == [f"Host: {host}", "Accept: a/1", "accept: b/2",
                                   "Content-Length: 7"]  # fmt: skip
        assert sent["body"] == '{"q":1}'
        # Repeated answer headers stay apart, in their order.
        assert [v for k, v in reply.raw_headers if k.lower() == b"x-multi"] == [b"one", b"two"]
        # A body-less POST still says its length; a GET says none.
        await up.request("POST", "/empty", [])
        await up.request("GET", "/g", [])
        assert b"Content-Length: 0" in seen[1] and b"Content-Length" not in seen[2]
        assert len(seen) == 3


async def test_one_connection_is_kept_alive_across_requests() -> None:
    connections: set[int] = set()

    async def count(request: bytes, writer: asyncio.StreamWriter) -> bool:
        connections.add(id(writer))
        writer.write(answer(200, b"ok"))
        return True

    async with raw_server(count) as (url, _), client(url) as up:
        for _ in range(5):
            assert (await up.request("GET", "/", [])).body == b"ok"
    assert len(connections) == 1


async def test_chunked_and_head_answers() -> None:
    async def reply(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if request.startswith(b"HEAD"):
            writer.write(answer(200, b"")[:-4].replace(b"length: 0", b"length: 99") + b"\r\n\r\n")
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
        return True

    async with raw_server(reply) as (url, _), client(url) as up:
        assert (await up.request("GET", "/", [])).body == b"hello world"
        head = await up.request("HEAD", "/", [])
        # The length of the body a GET would have, and no body: the next request still works.
        assert (head.status, head.body) == (200, b"")
        assert (b"content-length", b"99") in head.raw_headers
        assert (await up.request("GET", "/", [])).body == b"hello world"


async def test_an_interim_answer_is_skipped() -> None:
    async def reply(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + answer(201, b"made"))
        return True

    async with raw_server(reply) as (url, _), client(url) as up:
        made = await up.request("POST", "/", [], b"x")
        assert (made.status, made.body) == (201, b"made")
        assert all(name != b"link" for name, _ in made.raw_headers)


async def test_a_connection_the_shop_closed_is_not_reused() -> None:
    async def once(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, b"ok"))  # keep-alive by HTTP/1.1's default, then closed
        await writer.drain()
        return False

    async with raw_server(once) as (url, seen), client(url) as up:
        for _ in range(3):
            assert (await up.request("GET", "/", [])).body == b"ok"
            await asyncio.sleep(0.05)  # the close reaches the client between requests
    assert len(seen) == 3


async def test_a_stalled_answer_is_a_read_timeout() -> None:
    async def stall(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, b"0123456789")[:-5])  # half of the body, then nothing
        await asyncio.sleep(5)
        return False

    async with raw_server(stall) as (url, _), client(url) as up:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as failed:
            await up.request("GET", "/", [])
    waited = time.monotonic() - started
    assert failed.value.cause == "ReadTimeout"
    assert TIMEOUT.read_s <= waited < TIMEOUT.read_s * 1.5 + 0.25


async def test_a_caller_deadline_and_a_refused_connection() -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.2)
        writer.write(answer(200, b"late"))
        return True

    async with raw_server(slow) as (url, _), client(url, UpstreamTimeout(1.0, 5.0)) as up:
        with pytest.raises(UpstreamError, match="ReadTimeout"):
            await up.request("GET", "/", [], timeout_s=0.05)
        assert (await up.request("GET", "/", [])).body == b"late"  # a fresh connection
    async with client(f"http://127.0.0.1:{free_port()}") as up:
        with pytest.raises(UpstreamError, match="ConnectError"):
            await up.request("GET", "/", [])


async def test_a_garbled_answer_is_a_protocol_error() -> None:
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    async with raw_server(garbage) as (url, _), client(url) as up:
        with pytest.raises(UpstreamError, match="RemoteProtocolError"):
            await up.request("GET", "/", [])
