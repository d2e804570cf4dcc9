"""A gate in front of several shops takes them in turn, and steps over one that is down."""

from __future__ import annotations

import httpx

from infra.settings import Settings
from tests.support import running, serving
from tests.token_gate.conftest import Echo, echo_app, free_port
from tests.token_gate.test_proxy import auth
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec


async def test_the_shops_are_taken_in_turn(gate_settings: Settings) -> None:
    a, b = Echo(), Echo()
    async with serving(echo_app(a)) as a_url, serving(echo_app(b)) as b_url:
        settings = gate_settings.replace(shop_upstream_url=f"{a_url},{b_url}")
        async with running(create_gate(settings)) as gate:
            for _ in range(10):
                assert (await gate.get("/products")).status_code == 299
    assert len(a.seen) == len(b.seen) == 5


async def test_a_shop_that_refuses_connections_is_stepped_over(
    gate_settings: Settings, codec: TokenCodec
) -> None:
    up = Echo()
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with serving(echo_app(up)) as up_url:
        settings = gate_settings.replace(shop_upstream_url=f"{down},{up_url}")
        async with running(create_gate(settings)) as gate:
            replies = [await gate.get("/products") for _ in range(6)]
            # Orders too: a refused connection means nothing was sent, so the next shop gets it.
            post = await gate.post(
                "/products/shoe-1/orders", headers=auth(codec), json={"quantity": 1}
            )
    assert [r.status_code for r in replies] == [299] * 6
    assert post.status_code == 299
    assert len(up.seen) == 7


async def test_with_every_shop_down_the_gate_answers_503(gate_settings: Settings) -> None:
    downs = ",".join(f"http://127.0.0.1:{free_port()}" for _ in range(2))
    async with running(create_gate(gate_settings.replace(shop_upstream_url=downs))) as gate:
        reply: httpx.Response = await gate.get("/products")
    assert reply.status_code == 503
    assert reply.json()["error"] == "upstream_unavailable"
    assert "retry-after" in reply.headers
