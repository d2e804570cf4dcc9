"""What the gate sends the shop of a request's trace (tracing off, the default): the client's
traceparent when it passes W3C's rules, a new trace otherwise, always exactly one, with the
request id the gate kept or made; never the client's raw headers."""

from __future__ import annotations

import time

import httpx
import pytest

from infra.web.trace import parse_traceparent
from tests.token_gate.conftest import Echo, bearer
from token_gate.codec import TokenCodec

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE}-00f067aa0ba902b7-01"


def _auth(codec: TokenCodec) -> dict[str, str]:
    return bearer(codec.mint_access("v-trace", "shoe-1", int(time.time()) + 300))


@pytest.mark.parametrize("path", ["/products", "/products/shoe-1", "/products/shoe-1/orders/o-1"])
async def test_a_valid_traceparent_and_its_tracestate_reach_the_shop(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec, path: str
) -> None:
    trace = {"traceparent": VALID, "tracestate": "vendor=abc", "X-Request-Id": "r1"}
    headers = {**_auth(codec), **trace}
    reply = await echo_gate.get(path, headers=headers)
    assert reply.status_code == 299
    assert echo.header(0, "traceparent") == [VALID]
    assert echo.header(0, "tracestate") == ["vendor=abc"]
    assert echo.header(0, "x-request-id") == ["r1"] == reply.headers.get_list("x-request-id")


@pytest.mark.parametrize(
    "sent",
    [
        [("traceparent", f"00-{TRACE.upper()}-00f067aa0ba902b7-01")],
        [("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01")],
        [("traceparent", f"00-{TRACE}-{'0' * 16}-01")],
        [("traceparent", f"ff-{TRACE}-00f067aa0ba902b7-01")],
        [("traceparent", "00-" + "z" * 52)],
        [("traceparent", "a" * 4000)],
        [("traceparent", VALID), ("traceparent", VALID)],
    ],
)
async def test_a_bad_traceparent_is_replaced_by_a_new_trace(
    echo_gate: httpx.AsyncClient, echo: Echo, sent: list[tuple[str, str]]
) -> None:
    reply = await echo_gate.get("/products", headers=[*sent, ("tracestate", "vendor=abc")])
    assert reply.status_code == 299
    [forwarded] = echo.header(0, "traceparent")
    new = parse_traceparent(forwarded)
    assert new is not None and new.trace_id != TRACE
    # The gate started that trace, so its request id is the trace id; no stray tracestate.
    assert echo.header(0, "x-request-id") == [new.trace_id] == [reply.headers["x-request-id"]]
    assert echo.header(0, "tracestate") == []


async def test_each_request_without_a_trace_starts_its_own(
    echo_gate: httpx.AsyncClient, echo: Echo
) -> None:
    for _ in range(3):
        assert (await echo_gate.get("/products")).status_code == 299
    traces = {parse_traceparent(echo.header(i, "traceparent")[0]) for i in range(3)}
    assert len({t.trace_id for t in traces if t is not None}) == 3
