from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from infra.constants import HEADER_GATE_SECRET
from infra.settings import Settings
from shop.app import create_app
from tests.shop.helpers import ADMIN
from tests.support import running, sale_body

CreateProduct = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    return stack_settings


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the shop that carries the gate's secret, as the gate does."""
    app = create_app(settings)
    async with running(app) as c:
        # Connected before the test, so that its end never cancels a producer mid-start.
        await app.state.ctx.producer.wait_connected(30)
        c.headers[HEADER_GATE_SECRET] = settings.gate_secrets()[0]
        yield c


@pytest.fixture
def create_product(client: httpx.AsyncClient) -> CreateProduct:
    """POSTs a sale (tests.support.sale_body with overrides) and returns the 201 body."""

    async def create(**overrides: Any) -> dict[str, Any]:
        reply = await client.post("/admin/products", json=sale_body(**overrides), headers=ADMIN)
        assert reply.status_code == 201, reply.text
        return reply.json()

    return create
