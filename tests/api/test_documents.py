"""Each process's OpenAPI document: valid, served at /openapi.json, and the same list of
operations as the app's routes (tests.api.routes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.settings import Settings
from infra.web.metrics import Metrics
from infra.web.openapi import OPENAPI_PATH, document, operation, served_document
from queue_server.app import create_app as create_queue
from queue_server.openapi import QUEUE_API
from scheduler.app import create_app as create_scheduler
from scheduler.openapi import SCHEDULER_API
from shop.app import create_app as create_shop
from shop.openapi import ADMIN_API, SHOP_API
from shop.worker_http import WORKER_API, create_worker_app
from tests.api.routes import disagreements
from tests.support import running, running_shop
from token_gate.app import create_app as create_gate
from token_gate.openapi import GATE_API

APPS: dict[str, tuple[Callable[[Settings], Starlette], dict[str, Any]]] = {
    "queue": (create_queue, QUEUE_API),
    "shop": (create_shop, SHOP_API),
    "gate": (create_gate, GATE_API),
    "scheduler": (create_scheduler, SCHEDULER_API),
    "worker": (lambda settings: create_worker_app(Metrics("t"), _healthy), WORKER_API),
}


async def _healthy() -> None:
    return None


@pytest.fixture
def offline_settings() -> Settings:
    # Building an app opens no connection: the routes are known before the lifespan runs.
    return Settings.from_env({}, dev=True)


@pytest.mark.parametrize("name", APPS)
def test_every_route_is_documented_and_every_operation_served(
    name: str, offline_settings: Settings
) -> None:
    create, doc = APPS[name]
    app = create(offline_settings)
    found = disagreements(app.routes, served_document(doc))
    assert found == {"documented, not served": [], "served, not documented": []}


def test_the_comparison_sees_both_kinds_of_drift() -> None:
    async def endpoint(request: Request) -> Response:
        return Response()

    routes = [
        Route("/items/{product_id}", endpoint, methods=["GET"]),
        Route("/items/{product_id}/tail/{rest:path}", endpoint, methods=["POST"]),
    ]
    doc = document(
        "t",
        "t",
        {
            "/items/{product_id}": {"delete": operation("d", "d", {"204": {"description": "x"}})},
            "/items/{product_id}/tail/{order_id}/pay": {
                "post": operation("p", "p", {"200": {"description": "x"}})
            },
        },
    )
    assert disagreements(routes, doc) == {
        "documented, not served": ["DELETE /items/{product_id}"],
        "served, not documented": ["GET /items/{product_id}"],
    }


@pytest.mark.parametrize(
    "doc",
    [QUEUE_API, SHOP_API, ADMIN_API, GATE_API, SCHEDULER_API, WORKER_API],
    ids=["queue", "shop", "admin", "gate", "scheduler", "worker"],
)
def test_documents_are_valid_openapi_whose_operations_all_load(doc: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(served_document(doc))
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert len(loaded) == sum(
        1 for item in served_document(doc)["paths"].values() for method in item
    )
    assert all(op.definition.raw.get("responses") for op in loaded)


async def test_queue_server_serves_its_document(stack_settings: Settings) -> None:
    async with running(create_queue(stack_settings)) as client:
        reply = await client.get(OPENAPI_PATH)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == served_document(QUEUE_API)


async def test_shop_serves_its_document_without_the_gates_secret(stack_settings: Settings) -> None:
    async with running_shop(stack_settings) as client:
        reply = await client.get(OPENAPI_PATH)
    assert reply.status_code == 200
    assert reply.json() == served_document(SHOP_API)


async def test_gate_serves_its_document_with_a_request_id(stack_settings: Settings) -> None:
    async with running(create_gate(stack_settings)) as client:
        reply = await client.get(OPENAPI_PATH)
    assert reply.status_code == 200
    assert reply.headers["x-request-id"]
    assert reply.json() == served_document(GATE_API)
