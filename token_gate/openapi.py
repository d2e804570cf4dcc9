"""The gate's OpenAPI document: API.md's Shop API as the public reaches it, as data.

The operations and bodies are the shop's (infra.web.openapi_shop); the gate adds the access
token on the orders, the errors it answers itself, and ``X-Request-Id`` on every answer.
"""

from __future__ import annotations

import copy
from typing import Any

from infra.web.openapi import (
    NOT_FOUND,
    PRODUCT_ID,
    RETRY_AFTER,
    SET_COOKIE,
    document,
    error,
    health_path,
    metrics_path,
    operation,
    text,
)
from infra.web.openapi_shop import METHOD_NOT_ALLOWED, shop_paths

ACCESS = [{"accessToken": []}, {"accessCookie": []}]
UPSTREAM = error(
    "The shop is not answering (or said so itself); try again shortly.",
    "upstream_unavailable",
    "unavailable",
    headers={"Retry-After": RETRY_AFTER},
)
TOKEN_ERRORS: dict[str, Any] = {
    "401": error(
        "No access token, or one that is not valid (a queue ticket, garbage) or has expired.",
        "token_missing",
        "token_invalid",
        "token_expired",
    ),
    "403": error("The access token is for another product.", "token_wrong_product"),
    "429": error(
        "Too many requests from this visitor.",
        "rate_limited",
        headers={"Retry-After": RETRY_AFTER},
    ),
    "503": UPSTREAM,
}
REQUEST_ID: dict[str, Any] = {
    "description": "The request's id (the client's, if it sent a fit one), as the shop got it.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"},
}
RATE_LIMIT: dict[str, Any] = {
    "X-RateLimit-Limit": {"description": "The visitor's burst.", "schema": {"type": "string"}},
    "X-RateLimit-Remaining": {"description": "Requests left.", "schema": {"type": "string"}},
}


def _orders_collection(method: str) -> dict[str, Any]:
    """GET and DELETE on the order collection: the gate checks the token for every method
    under /orders before the shop answers; the shop then answers 405."""
    return operation(
        f"{method}OrdersCollection",
        "Not an operation of the shop: the token is checked, then 405.",
        {"404": NOT_FOUND, "405": METHOD_NOT_ALLOWED, **TOKEN_ERRORS},
        tags=["orders"],
        parameters=[PRODUCT_ID],
        security=ACCESS,
    )


def _with_request_id(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every answer of the gate carries X-Request-Id (token_gate.request_id)."""
    paths = copy.deepcopy(paths)
    for item in paths.values():
        for op in item.values():
            for response in op["responses"].values():
                response.setdefault("headers", {})["X-Request-Id"] = REQUEST_ID
                if "orders" in op.get("tags", []):
                    response["headers"].update(RATE_LIMIT)
    return paths


_shop = shop_paths(
    public={"503": UPSTREAM},
    orders=TOKEN_ERRORS,
    order_security=ACCESS,
)
_shop["/products/{product_id}/orders"].update(
    get=_orders_collection("get"), delete=_orders_collection("delete")
)

PATHS: dict[str, dict[str, Any]] = {
    **_shop,
    "/shop/{product_id}": {
        "get": operation(
            "getShopPage",
            "The shop page for people, with an access token for this product.",
            {
                "200": text("The page (cookie `fs_access` held a valid token).", "text/html"),
                "303": {
                    "description": "`?token=` moved into the cookie (to the same path without "
                    "the query), or no valid token: to the waiting room.",
                    "headers": {
                        "Location": {"required": True, "schema": {"type": "string"}},
                        "Set-Cookie": SET_COOKIE,
                    },
                },
                "404": NOT_FOUND,
            },
            tags=["pages"],
            parameters=[
                PRODUCT_ID,
                {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "An access token, handed over once by the waiting room.",
                },
            ],
            security=[{}, {"accessCookie": []}],
        )
    },
    "/healthz": health_path("200 once Valkey and the shop answer.", UPSTREAM),
    "/metrics": metrics_path(),
}

GATE_API = document(
    "flashsale shop API (through the token gate)",
    "The public entry to the shop. Catalog reads need no token; everything under "
    "`/products/{product_id}/orders` needs an access token for that product. Every error is "
    '`{"error": code, "detail": sentence}`.',
    _with_request_id(PATHS),
    security_schemes={
        "accessToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The access token of an admitted visitor (from the queue's status).",
        },
        "accessCookie": {"type": "apiKey", "in": "cookie", "name": "fs_access"},
    },
    tags=[
        {"name": "catalog", "description": "Products, no token needed."},
        {"name": "orders", "description": "An admitted visitor's orders."},
        {"name": "pages", "description": "HTML for people."},
        {"name": "operations", "description": "Health, metrics, this document."},
    ],
)
