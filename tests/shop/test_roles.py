"""The admin key and the read-only viewer key (API.md's roles): the viewer may call every
reading route, and gets 403 `forbidden` (writing nothing) from every other; no key, or another
one, is 401. Both keys are refused at start when they are defaults outside dev mode, short, or
equal to each other."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.constants import DEV_ADMIN_KEY, DEV_VIEWER_KEY
from infra.sale.keys import SaleKeys
from infra.settings import ConfigError, Settings
from infra.web.openapi import operations
from shop.openapi import ADMIN_API, SHOP_API
from tests.infra.test_settings_edge import _assert_refused, _env, _run
from tests.shop.conftest import CreateProduct
from tests.shop.helpers import ADMIN, assert_error

VIEWER = {"Authorization": f"Bearer {DEV_VIEWER_KEY}"}
NO_HOOK = "wh_0000000000000000"
# Every admin route, by what it does. A route the document lists and this table does not
# fails test_every_admin_route_is_classified: a new one cannot be forgotten here.
READING = [
    ("GET", "/admin/products"),
    ("GET", "/admin/products/{product_id}"),
    ("GET", "/admin/sales/{product_id}/stats"),
    ("GET", "/admin/dlq"),
    ("GET", "/admin/webhooks"),
    ("GET", "/admin/webhooks/{webhook_id}/deliveries"),
    ("GET", "/admin/role"),
]
WRITING = [
    ("POST", "/admin/products"),
    ("PATCH", "/admin/products/{product_id}"),
    ("POST", "/admin/sales/{product_id}/pause"),
    ("POST", "/admin/sales/{product_id}/resume"),
    ("POST", "/admin/dlq/replay"),
    ("POST", "/admin/webhooks"),
    ("DELETE", "/admin/webhooks/{webhook_id}"),
]
BODIES = {
    "/admin/products": {
        "id": "roles-never",
        "name": "x",
        "price": 1,
        "currency": "EUR",
        "stock": 1,
        "sale_start": "2030-01-01T00:00:00Z",
    },
    "/admin/products/{product_id}": {"batch_size": 7},
    "/admin/webhooks": {"url": "http://127.0.0.1:9/never"},
}


def _path(template: str, product_id: str, webhook_id: str) -> str:
    return template.format(product_id=product_id, webhook_id=webhook_id)


def test_every_admin_route_is_classified_and_documented_so() -> None:
    admin_ops = {(m, p) for p, m in operations(ADMIN_API)}
    assert admin_ops == set(READING) | set(WRITING)
    for method, path in admin_ops:
        op = ADMIN_API["paths"][path][method.lower()]
        schemes = {name for requirement in op["security"] for name in requirement}
        if (method, path) in READING:
            assert schemes == {"adminKey", "viewerKey"}, (method, path)
        else:
            assert schemes == {"adminKey"} and op["responses"]["403"], (method, path)
    assert "/admin/dashboard" in SHOP_API["paths"]


async def _webhook(client: httpx.AsyncClient) -> str:
    reply = await client.post(
        "/admin/webhooks", json={"url": "http://127.0.0.1:9/roles"}, headers=ADMIN
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


async def test_the_viewer_may_read(
    client: httpx.AsyncClient, create_product: CreateProduct
) -> None:
    pid = (await create_product())["id"]
    hook = await _webhook(client)
    try:
        for method, template in READING:
            path = _path(template, pid, hook)
            as_admin = await client.request(method, path, headers=ADMIN)
            as_viewer = await client.request(method, path, headers=VIEWER)
            assert as_viewer.status_code == 200, (path, as_viewer.text)
            if template not in ("/admin/role", "/admin/webhooks"):
                assert as_viewer.json() == as_admin.json(), path  # the same answer
        assert (await client.get("/admin/role", headers=VIEWER)).json() == {"role": "viewer"}
        assert (await client.get("/admin/role", headers=ADMIN)).json() == {"role": "admin"}
        page = await client.get("/admin/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    finally:
        await client.delete(f"/admin/webhooks/{hook}", headers=ADMIN)


async def test_the_viewer_may_change_nothing(
    client: httpx.AsyncClient, create_product: CreateProduct, redis: Redis, settings: Settings
) -> None:
    pid = (await create_product())["id"]
    hook = await _webhook(client)
    keys = SaleKeys(pid)
    engine = create_async_engine(settings.database_url)
    try:
        before = await redis.hgetall(keys.sale)
        async with engine.connect() as conn:
            hooks = (await conn.execute(text("SELECT count(*) FROM webhooks"))).scalar_one()
        for method, template in WRITING:
            path = _path(template, pid, hook)
            reply = await client.request(method, path, json=BODIES.get(template), headers=VIEWER)
            assert_error(reply, 403, "forbidden")
            assert "admin key" in reply.json()["detail"]
        assert await redis.hgetall(keys.sale) == before  # not paused, not changed
        assert not await redis.exists(SaleKeys("roles-never").sale)
        async with engine.connect() as conn:
            after = (await conn.execute(text("SELECT count(*) FROM webhooks"))).scalar_one()
        assert after == hooks  # none made, none deleted
    finally:
        await engine.dispose()
        await client.delete(f"/admin/webhooks/{hook}", headers=ADMIN)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {DEV_VIEWER_KEY}"},
        {"Authorization": f"Bearer {DEV_VIEWER_KEY}x"},
        {"Authorization": f"Bearer {DEV_VIEWER_KEY[:-1]}"},
        {"Authorization": f"Bearer {DEV_ADMIN_KEY}{DEV_VIEWER_KEY}"},
    ],
)
async def test_without_a_key_everything_is_401(
    client: httpx.AsyncClient, create_product: CreateProduct, headers: dict[str, str]
) -> None:
    pid = (await create_product())["id"]
    for method, template in READING + WRITING:
        path = _path(template, pid, NO_HOOK)
        reply = await client.request(method, path, json=BODIES.get(template), headers=headers)
        assert_error(reply, 401, "unauthorized")


# --- the settings --------------------------------------------------------------------------

STRONG_ADMIN = "admin-" + "a" * 30
STRONG_VIEWER = "viewer-" + "v" * 30


def _production(**extra: str) -> dict[str, str]:
    return {
        "FLASHSALE_SECRET_KEYS": "s" * 32,
        "FLASHSALE_ADMIN_KEY": STRONG_ADMIN,
        **extra,
    }


def test_the_viewer_key_is_optional_and_checked() -> None:
    assert Settings.from_env(_production()).viewer_key == ""
    assert Settings.from_env(_production(FLASHSALE_VIEWER_KEY=STRONG_VIEWER)).viewer_key == (
        STRONG_VIEWER
    )
    assert Settings.from_env({"FLASHSALE_DEV": "1"}).viewer_key == DEV_VIEWER_KEY
    # In dev mode, an admin key that is the dev viewer key leaves the viewer unset.
    dev = Settings.from_env({"FLASHSALE_DEV": "1", "FLASHSALE_ADMIN_KEY": DEV_VIEWER_KEY})
    assert dev.viewer_key == ""
    settings = Settings.from_env(_production(FLASHSALE_VIEWER_KEY=STRONG_VIEWER))
    assert STRONG_VIEWER in settings.log_secrets()
    assert settings.to_env()["FLASHSALE_VIEWER_KEY"] == STRONG_VIEWER


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (_production(FLASHSALE_VIEWER_KEY=STRONG_ADMIN), "equals FLASHSALE_ADMIN_KEY"),
        ({"FLASHSALE_DEV": "1", "FLASHSALE_VIEWER_KEY": DEV_ADMIN_KEY}, "equals"),
        (_production(FLASHSALE_VIEWER_KEY=DEV_VIEWER_KEY), "dev default"),
        (_production(FLASHSALE_VIEWER_KEY=DEV_ADMIN_KEY), "dev default"),
        (_production(FLASHSALE_VIEWER_KEY="short-key"), "16 characters"),
        (_production(FLASHSALE_VIEWER_KEY="v" * 20 + "\n"), "control"),
    ],
)
def test_a_bad_viewer_key_is_one_line(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("FLASHSALE_VIEWER_KEY"), message
    assert words in message, message
    for secret in (STRONG_ADMIN, "short-key", "v" * 20):
        assert secret not in message  # a refusal never shows a key


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"FLASHSALE_VIEWER_KEY": STRONG_ADMIN}, "FLASHSALE_VIEWER_KEY equals"),
        ({"FLASHSALE_VIEWER_KEY": DEV_VIEWER_KEY}, "FLASHSALE_VIEWER_KEY is a dev default"),
        ({"FLASHSALE_VIEWER_KEY": "short"}, "FLASHSALE_VIEWER_KEY is a dev default or shorter"),
    ],
)
async def test_the_shop_refuses_to_start_with_a_bad_viewer_key(
    tmp_path: Path, extra: dict[str, str], words: str
) -> None:
    env = {**_env(), **_production(**extra)}
    env.pop("FLASHSALE_DEV")
    for module in ("shop", "shop.worker"):
        _assert_refused(*await _run([sys.executable, "-m", module], env, tmp_path), words)
