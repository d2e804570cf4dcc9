"""POST/GET/DELETE /admin/webhooks and the attempts' listing: strict bodies, the secret shown
once, 404s, the limit, and no partial write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import DEV_VIEWER_KEY, WEBHOOKS_MAX
from infra.events import EVENT_KINDS
from tests.shop.helpers import ADMIN, assert_error
from tests.webhooks.conftest import Subscribe

VIEWER = {"Authorization": f"Bearer {DEV_VIEWER_KEY}"}
URL = "https://hooks.example.com/services/T000/B000/XXXXSECRETPATH"


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM webhooks"))).scalar_one())


async def test_create_list_and_delete(shop: httpx.AsyncClient, subscribe: Subscribe) -> None:
    made = await subscribe(URL, events=["sale.sold_out", "sale.opened"], format="slack")
    assert set(made) == {"id", "url", "events", "format", "created_at", "secret"}
    assert made["id"].startswith("wh_") and made["secret"].startswith("whsec_")
    assert made["events"] == ["sale.opened", "sale.sold_out"]  # the documented order
    assert made["format"] == "slack" and made["url"] == URL
    default = await subscribe("http://127.0.0.1:9/x")
    assert default["events"] == list(EVENT_KINDS) and default["format"] == "json"

    listed = (await shop.get("/admin/webhooks", headers=ADMIN)).json()
    mine = {w["id"]: w for w in listed if w["id"] in (made["id"], default["id"])}
    assert len(mine) == 2
    assert all("secret" not in w for w in listed)  # shown once, at creation only
    assert mine[made["id"]]["url"] == URL
    # The viewer reads the list but not a URL's path, which is a Slack webhook's credential.
    seen = (await shop.get("/admin/webhooks", headers=VIEWER)).json()
    shown = {w["id"]: w["url"] for w in seen}
    assert shown[made["id"]] == "https://hooks.example.com/…"
    assert "SECRETPATH" not in str(seen) and "whsec_" not in str(seen)

    assert (await shop.get(f"/admin/webhooks/{made['id']}/deliveries", headers=ADMIN)).json() == []
    reply = await shop.delete(f"/admin/webhooks/{made['id']}", headers=ADMIN)
    assert reply.status_code == 204 and reply.content == b""
    assert_error(
        await shop.delete(f"/admin/webhooks/{made['id']}", headers=ADMIN), 404, "not_found"
    )
    listed = (await shop.get("/admin/webhooks", headers=ADMIN)).json()
    assert made["id"] not in {w["id"] for w in listed}


@pytest.mark.parametrize(
    "webhook_id", ["wh_0000000000000000", "nope", "wh_0000000000000000%0A", "WH_0000000000000000"]
)
async def test_unknown_webhooks_are_404(shop: httpx.AsyncClient, webhook_id: str) -> None:
    assert_error(
        await shop.delete(f"/admin/webhooks/{webhook_id}", headers=ADMIN), 404, "not_found"
    )
    reply = await shop.get(f"/admin/webhooks/{webhook_id}/deliveries", headers=ADMIN)
    assert_error(reply, 404, "not_found")


BAD_BODIES: list[Any] = [
    {},
    {"url": None},
    {"url": 5},
    {"url": ""},
    {"url": "ftp://example.com/x"},
    {"url": "javascript:alert(1)"},
    {"url": "http://"},
    {"url": "http:///path"},
    {"url": "example.com/hook"},
    {"url": "http://example.com:0/x"},
    {"url": "http://example.com:99999/x"},
    {"url": "http://user:pw@example.com/x"},
    {"url": "http://example.com/x#frag"},
    {"url": "http://example.com/a b"},
    {"url": "http://example.com/\n"},
    {"url": "http://exämple.com/"},
    {"url": "http://example.com/" + "a" * 2100},
    {"url": URL, "events": []},
    {"url": URL, "events": "sale.opened"},
    {"url": URL, "events": ["sale.opened", "sale.opened"]},
    {"url": URL, "events": ["sale.exploded"]},
    {"url": URL, "events": [1]},
    {"url": URL, "events": None},
    {"url": URL, "format": "xml"},
    {"url": URL, "format": None},
    {"url": URL, "secret": "mine"},  # the server makes the secret
    {"url": URL, "id": "wh_0000000000000000"},
    [URL],
    "url",
    None,
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_bad_bodies_are_422_and_write_nothing(
    shop: httpx.AsyncClient, engine: AsyncEngine, body: Any
) -> None:
    before = await _count(engine)
    reply = await shop.post("/admin/webhooks", json=body, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")
    assert await _count(engine) == before


async def test_malformed_json_is_422(shop: httpx.AsyncClient) -> None:
    for raw in (b"", b"{", b"\xff", b'{"url": "http://a/"'):
        reply = await shop.post("/admin/webhooks", content=raw, headers=ADMIN)
        assert_error(reply, 422, "invalid_request")


async def test_at_most_the_limit_then_409(
    shop: httpx.AsyncClient, engine: AsyncEngine, subscribe: Subscribe
) -> None:
    for _ in range(WEBHOOKS_MAX - await _count(engine)):
        await subscribe("http://127.0.0.1:9/limit")
    assert await _count(engine) == WEBHOOKS_MAX
    reply = await shop.post("/admin/webhooks", json={"url": URL}, headers=ADMIN)
    assert_error(reply, 409, "conflict")
    assert await _count(engine) == WEBHOOKS_MAX
