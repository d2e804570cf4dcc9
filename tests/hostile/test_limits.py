"""Sizes and slowness, against the production server (infra.web.serve.HttpProtocol): every
refusal is the JSON error shape with its status, the connection closes after it, and nothing
past a limit is buffered. A slow client (slowloris) is cut off at the read deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from infra.constants import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_TARGET_BYTES,
)
from infra.settings import Settings
from tests.hostile.conftest import (
    ANSWER_TIMEOUT_S,
    Answer,
    Platform,
    QuickProtocol,
    assert_json_error,
    exchange,
    get,
    post,
    production_server,
    read_answer,
    wait_closed,
)
from tests.support import unique_id
from tests.token_gate.conftest import Echo
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

SLACK_S = 5.0  # on top of a deadline, for a loaded machine


def _apps(platform: Platform) -> list[tuple[str, tuple[str, int], str]]:
    """(name, address, a path that exists) of each public app."""
    return [
        ("gate", platform.gate, "/products"),
        ("queue", platform.queue, "/healthz"),
        ("shop", platform.shop, "/admin/products"),
    ]


async def test_headers_over_the_limit_get_431(platform: Platform) -> None:
    for name, address, path in _apps(platform):
        big = [f"X-Filler-{i}: {'v' * 1000}" for i in range(MAX_HEADER_BYTES // 1000 + 1)]
        answer = await exchange(address, get(path, *big))
        assert_json_error(answer, 431, "headers_too_large")
        assert answer.closed, name


async def test_too_many_header_lines_get_431(platform: Platform) -> None:
    """Small in bytes, many in lines: each line is an object the server would keep."""
    many = [f"x{i}:" for i in range(MAX_HEADER_COUNT + 1)]
    answer = await exchange(platform.gate, get("/products", *many))
    assert_json_error(answer, 431, "headers_too_large")
    fine = [f"x{i}: v" for i in range(MAX_HEADER_COUNT - 10)]
    assert (await exchange(platform.gate, get("/products", *fine))).status == 200


async def test_a_head_without_end_is_cut_off_at_the_limit(platform: Platform) -> None:
    """Header lines sent for ever: refused once they pass the limit, not buffered on."""
    reader, writer = await asyncio.open_connection(*platform.gate)
    try:
        writer.write(b"GET /products HTTP/1.1\r\nHost: test\r\n")
        sent = 0
        answer = None
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while answer is None and sent < 100 * MAX_HEADER_BYTES:
                line = b"X-More: " + b"m" * 500 + b"\r\n"
                try:
                    writer.write(line)
                    await writer.drain()
                except ConnectionError:
                    break
                sent += len(line)
                if sent > 2 * MAX_HEADER_BYTES:
                    answer = await read_answer(reader)
        assert answer is not None
        assert_json_error(answer, 431, "headers_too_large")
        await wait_closed(reader, ANSWER_TIMEOUT_S)
    finally:
        writer.close()


async def test_a_target_over_the_limit_gets_414(platform: Platform) -> None:
    for name, address, _ in _apps(platform):
        answer = await exchange(address, get("/products?" + "q" * (MAX_TARGET_BYTES + 1)))
        assert_json_error(answer, 414, "uri_too_long")
        assert answer.closed, name


async def test_a_declared_body_over_16_kib_gets_413(platform: Platform, product_id: str) -> None:
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    for address, path in (
        (platform.gate, f"/products/{product_id}/orders"),
        (platform.queue, f"/queue/{product_id}/join"),
        (platform.shop, "/admin/products"),
    ):
        answer = await exchange(address, post(path, body))
        assert_json_error(answer, 413, "payload_too_large")


async def _stream_chunks(address: tuple[str, int], path: str, *headers: str) -> Answer:
    """POST a chunked body that never ends (256 KiB if nothing stops it); the answer, after
    which the server must close the connection instead of reading on."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        head = [f"POST {path} HTTP/1.1", "Host: test", "Transfer-Encoding: chunked", *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = asyncio.ensure_future(read_answer(reader))
        chunk = b"x" * 4096
        try:
            for _ in range(64):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                await asyncio.sleep(0.005)
        except ConnectionError:
            pass
        result = await answer
        await wait_closed(reader, ANSWER_TIMEOUT_S)
        return result
    finally:
        writer.close()


async def test_a_chunked_body_over_16_kib_gets_413_and_the_connection_closes(
    platform: Platform, product_id: str
) -> None:
    token = TokenCodec(platform.settings.secret_keys).mint_access(
        unique_id("v"), product_id, int(time.time()) + 300
    )
    admin = f"Authorization: Bearer {platform.settings.admin_key}"
    for address, path, header in (
        (platform.gate, f"/products/{product_id}/orders", f"Authorization: Bearer {token}"),
        (platform.shop, "/admin/products", admin),
    ):
        answer = await _stream_chunks(address, path, header, "Content-Type: application/json")
        assert_json_error(answer, 413, "payload_too_large")


async def test_a_body_sent_after_an_early_answer_is_not_read_for_ever(
    platform: Platform, product_id: str
) -> None:
    """Answered before its body is read (no token, no such method): the connection closes
    once the body passes the limit, instead of reading and dropping it for as long as it
    comes."""
    for address, path, status in (
        (platform.gate, f"/products/{product_id}/orders", 401),
        (platform.gate, "/products", 405),
        (platform.queue, f"/queue/{product_id}/join", 201),
    ):
        answer = await _stream_chunks(address, path)
        assert answer.status == status, (path, answer.status, answer.body)


async def test_bytes_that_are_not_http_get_a_json_400(platform: Platform) -> None:
    garbage = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS
        b"GET /products HTTP/9.9\r\n\r\n",
        b"GET /pro ducts HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /products/\xff HTTP/1.1\r\nHost: x\r\n\r\n",  # not ASCII in the target
        b"GET /products HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET /products HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # smuggling: a length and a chunked body, an encoding that is not chunked, lengths
        # that are not one number
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\nx",
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx",
        b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"GET /products HTTP/1.1\nHost: x\n\n",  # bare LF line ends
        b"GET /products?\xff=\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT evil:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW /products HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ]
    for name, address, _ in _apps(platform):
        for request in garbage:
            answer = await exchange(address, request)
            assert_json_error(answer, 400, "bad_request")
            assert answer.closed, (name, request)


@pytest.mark.parametrize(
    "header",
    [
        b"X-Request-Id: a\rb",
        b"X-Request-Id: a\x00b",
        b"Idempotency-Key: k\rX-Visitor-Id: v",
        b"Idempotency-Key: k\nX-Visitor-Id: v",
        b"X-Folded: a\r\n  X-Visitor-Id: v",  # obsolete line folding
        b"X-Visitor-Id\r\n: v",
    ],
)
async def test_cr_lf_or_nul_in_a_header_is_refused_and_never_forwarded(
    header: bytes, echo: Echo, stack_settings: Settings
) -> None:
    settings = stack_settings.replace(shop_upstream_url=echo.url)
    async with production_server(create_gate(settings), settings) as gate:
        request = b"GET /products HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
        answer = await exchange(gate, request)
    assert_json_error(answer, 400, "bad_request")
    assert echo.seen == []


async def test_a_trailing_slash_is_404_not_a_redirect_to_the_clients_host(
    platform: Platform,
) -> None:
    answer = await exchange(platform.gate, get("/products/", "Host: evil.example"))
    assert_json_error(answer, 404, "not_found")
    assert "location" not in answer.headers


async def test_an_unusable_request_id_is_replaced_not_echoed(platform: Platform) -> None:
    for value in ("a b", "é", "x" * 129, ""):
        header = f"X-Request-Id: {value}"
        answer = await exchange(platform.gate, get("/products", header))
        assert answer.status == 200
        echoed = answer.headers["x-request-id"]
        assert echoed != value and len(echoed) == 32 and echoed.isalnum(), echoed


# --- slow clients: a short deadline (QuickProtocol), the same code ------------------------------


async def test_a_head_trickled_in_is_cut_off_at_the_deadline(stack_settings: Settings) -> None:
    app = create_gate(stack_settings)
    async with production_server(app, stack_settings, http=QuickProtocol) as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            start = time.monotonic()
            cut = asyncio.ensure_future(read_answer(reader))
            request = b"GET /products HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
            for byte in request:  # a byte every 50 ms: it would take 6 s
                if cut.done():
                    break
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.sleep(0.05)
            answer = await cut
            elapsed = time.monotonic() - start
            assert_json_error(answer, 408, "request_timeout")
            assert answer.closed
            deadline = QuickProtocol.read_timeout_s
            assert deadline - 0.2 <= elapsed < deadline + SLACK_S
            await wait_closed(reader, SLACK_S)
        finally:
            writer.close()


async def test_a_body_trickled_in_is_cut_off_and_nothing_is_acted_on(
    echo: Echo, stack_settings: Settings
) -> None:
    """The gate reads the whole body before it forwards: a body that never ends is a 408 and
    nothing reaches the upstream."""
    settings = stack_settings.replace(shop_upstream_url=echo.url)
    token = TokenCodec(settings.secret_keys).mint_access("v-1", "x", int(time.time()) + 300)
    async with production_server(create_gate(settings), settings, http=QuickProtocol) as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(
                b"POST /products/x/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\n\r\n{"
            )
            await writer.drain()
            cut = asyncio.ensure_future(read_answer(reader))
            for _ in range(60):
                if cut.done():
                    break
                try:
                    writer.write(b" ")
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.sleep(0.1)
            answer = await cut
            assert_json_error(answer, 408, "request_timeout")
            await wait_closed(reader, SLACK_S)
        finally:
            writer.close()
    assert echo.seen == []


async def test_a_connection_that_never_sends_is_closed(stack_settings: Settings) -> None:
    """uvicorn arms its keep-alive timer only after a first answer; a silent new connection
    gets the same timeout."""
    app = create_gate(stack_settings)
    async with production_server(app, stack_settings, timeout_keep_alive=1) as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            elapsed = await wait_closed(reader, 1 + SLACK_S)
            assert 0.8 <= elapsed < 1 + SLACK_S
        finally:
            writer.close()


async def test_a_prompt_client_is_never_cut(stack_settings: Settings) -> None:
    """The deadline is per request: a kept-alive connection that sends request after request
    for longer than the deadline is served throughout."""
    app = create_gate(stack_settings)
    async with production_server(app, stack_settings, http=QuickProtocol) as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            start = time.monotonic()
            while time.monotonic() - start < 2.5 * QuickProtocol.read_timeout_s:
                writer.write(get("/healthz-nothing"))
                await writer.drain()
                answer = await read_answer(reader)
                assert_json_error(answer, 404, "not_found")
                assert not answer.closed
                await asyncio.sleep(0.2)
        finally:
            writer.close()


async def test_a_refusal_is_read_whole_although_the_client_kept_sending(
    platform: Platform,
) -> None:
    """The server stops reading a body it refused; closing at once, with the client's bytes
    still unread, would reset the connection, and a reset makes the client's system drop the
    answer it had not read yet. The server half-closes and lingers instead."""
    for address, path in ((platform.gate, "/products"), (platform.shop, "/admin/products")):
        reader, writer = await asyncio.open_connection(*address)
        try:
            head = f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunk = b"x" * (1024 * 1024)
            writer.write(head.encode() + b"%x\r\n%s\r\n" % (len(chunk), chunk))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.5)  # the refusal and any reset arrive before we read
            answer = await read_answer(reader)
            assert answer.status in (405, 413), answer.body
        finally:
            writer.close()


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer",
        b"Bearer ",
        b"Bearer \xff\xfe\xfd",
        b"Bearer a.b.c",
        b"Bearer ....",
        b"Bearer " + b"A" * 6000,
        b"Basic dXNlcjpwYXNz",
        b"bearer\tx",
        b"Bearer eyJ2IjoidiJ9.\xc3\xa9.sig",
    ],
)
async def test_a_garbage_credential_is_401(
    platform: Platform, product_id: str, authorization: bytes
) -> None:
    auth = b"Authorization: " + authorization
    for address, path, codes in (
        (platform.queue, f"/queue/{product_id}/status", ("ticket_missing", "ticket_invalid")),
        (platform.gate, f"/products/{product_id}/orders", ("token_missing", "token_invalid")),
    ):
        request = get(path).replace(b"\r\n\r\n", b"\r\n" + auth + b"\r\n\r\n", 1)
        answer = await exchange(address, request)
        assert answer.status == 401, (path, authorization[:20], answer.body)
        assert answer.json()["error"] in codes, answer.body


async def test_header_bytes_that_are_not_utf8_cross_the_gate_unchanged(
    echo: Echo, stack_settings: Settings
) -> None:
    settings = stack_settings.replace(shop_upstream_url=echo.url)
    async with production_server(create_gate(settings), settings) as gate:
        request = b"GET /products HTTP/1.1\r\nHost: x\r\nX-Note: caf\xe9 \xff\xfe\r\n\r\n"
        answer = await exchange(gate, request)
    assert answer.status == 299  # the echo's own status: the request went through
    assert echo.header(0, "x-note") == ["caf\xe9 \xff\xfe"]  # latin-1: byte for byte


async def test_pipelined_requests_are_answered_in_order_and_a_bad_one_ends_them(
    platform: Platform,
) -> None:
    """Two good requests in one write get two answers; a bad one behind a good one does not
    cut into the good one's answer: the good answer comes whole, then the refusal, then the
    connection ends."""
    reader, writer = await asyncio.open_connection(*platform.gate)
    try:
        writer.write(get("/products") + get("/healthz-none"))
        assert (await read_answer(reader)).status == 200
        assert_json_error(await read_answer(reader), 404, "not_found")
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(*platform.gate)
    try:
        bad = b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        writer.write(get("/products") + bad)
        first = await read_answer(reader)
        assert first.status == 200 and first.json() is not None
        assert_json_error(await read_answer(reader), 400, "bad_request")  # in its turn
        await wait_closed(reader, ANSWER_TIMEOUT_S)
    finally:
        writer.close()
