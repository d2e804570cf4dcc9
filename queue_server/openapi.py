"""The queue server's OpenAPI document (API.md's Queue API), as data; served at /openapi.json."""

from __future__ import annotations

from typing import Any

from infra.web.openapi import (
    HEX_64,
    ISO_INSTANT,
    NON_NEGATIVE,
    NOT_FOUND,
    PRODUCT_ID,
    SALE_INFO,
    SET_COOKIE,
    Schema,
    document,
    error,
    health_path,
    metrics_path,
    ok,
    operation,
    text,
    unavailable,
)
from infra.web.openapi import RETRY_AFTER as RETRY_AFTER_HEADER

STATES = ["not_started", "waiting", "admitted", "expired", "sold_out", "closed", "paused"]


def _when(state: str, required: list[str]) -> Schema:
    return {"if": {"properties": {"state": {"const": state}}}, "then": {"required": required}}


STATUS: Schema = {
    "type": "object",
    "description": "The caller's place; `poll_after_ms` is when to ask again (at the earliest).",
    "required": ["state", "product_id", "position", "waiting", "eta_s", "poll_after_ms"],
    "properties": {
        "state": {"type": "string", "enum": STATES},
        "product_id": {"type": "string"},
        "position": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "1 is next; null when not in line, or early in shuffle mode.",
        },
        "waiting": NON_NEGATIVE,
        "eta_s": {"type": ["integer", "null"], "minimum": 0},
        "poll_after_ms": {"type": "integer", "minimum": 1},
        "starts_in_s": NON_NEGATIVE,
        "access_token": {"type": "string", "minLength": 1},
        "expires_at": ISO_INSTANT,
        "shop_url": {"type": "string", "description": "The shop's API for this product."},
        "shop_page_url": {"type": "string", "description": "The shop page for people."},
        "draw": {
            **HEX_64,
            "description": "Shuffle mode, early visitors: hex HMAC-SHA256(seed, visitor_id).",
        },
        "visitor_id": {
            "type": "string",
            "description": "With `draw`: its message, so that anyone can check the draw.",
        },
    },
    "additionalProperties": False,
    "allOf": [
        _when("admitted", ["access_token", "expires_at", "shop_url"]),
        _when("not_started", ["starts_in_s"]),
    ],
}
JOINED: Schema = {
    **STATUS,
    "required": [*STATUS["required"], "ticket"],
    "properties": {**STATUS["properties"], "ticket": {"type": "string", "minLength": 1}},
}
TICKET = [{}, {"ticket": []}]  # join: optional (a new visitor has none)
TICKET_REQUIRED = [{"ticket": []}]
TICKET_ERRORS = error(
    "No ticket, or one that is not valid (or no longer holds a place).",
    "ticket_missing",
    "ticket_invalid",
)
BUSY = unavailable()

PATHS: dict[str, dict[str, Any]] = {
    "/queue/{product_id}/join": {
        "post": operation(
            "joinLine",
            "Take a place in the line (or get the one the caller holds).",
            {
                "201": ok("A new place.", JOINED, **{"Set-Cookie": SET_COOKIE}),
                "200": ok(
                    "The caller already holds a place (its ticket); it is not moved.",
                    JOINED,
                    **{"Set-Cookie": SET_COOKIE},
                ),
                "403": error("The pre-queue of this sale has not opened yet.", "not_open"),
                "404": NOT_FOUND,
                "409": error("The sale has ended or is sold out.", "closed"),
                "429": error(
                    "This client address joins too often.",
                    "rate_limited",
                    headers={"Retry-After": RETRY_AFTER_HEADER},
                ),
                "503": BUSY,
            },
            tags=["queue"],
            parameters=[PRODUCT_ID],
            security=TICKET,
            description=(
                "The body is empty (and ignored). A ticket for this product, as a Bearer token "
                "or the cookie `fs_ticket_<product_id>`, names a visitor who already joined; "
                "without one, the server chooses a new visitor id. Where the deployment sets "
                "FLASHSALE_TRUSTED_USER_HEADER, that header (from a trusted upstream) names the "
                "visitor instead, on join, status and leave alike."
            ),
        )
    },
    "/queue/{product_id}/status": {
        "get": operation(
            "getStatus",
            "The caller's place in the line.",
            {
                "200": ok("The status object.", STATUS, **{"Set-Cookie": SET_COOKIE}),
                "401": TICKET_ERRORS,
                "404": error("No such product, or a ticket of another product.", "not_found"),
                "410": error("The place was given up: its page stopped asking.", "place_lost"),
                "503": BUSY,
            },
            tags=["queue"],
            parameters=[PRODUCT_ID],
            security=TICKET_REQUIRED,
            description="Sets the `fs_access` cookie once the caller is admitted.",
        )
    },
    "/queue/{product_id}/ticket": {
        "delete": operation(
            "leaveLine",
            "Give up the place; the ticket dies.",
            {
                "204": {
                    "description": "The place is free.",
                    "headers": {"Set-Cookie": SET_COOKIE},
                },
                "401": TICKET_ERRORS,
                "404": error("No such product, or a ticket of another product.", "not_found"),
                "503": BUSY,
            },
            tags=["queue"],
            parameters=[PRODUCT_ID],
            security=TICKET_REQUIRED,
        )
    },
    "/queue/{product_id}": {
        "get": operation(
            "getSaleInfo",
            "The sale's public info (and the shuffle's commitment and seed).",
            {"200": ok("The sale info.", SALE_INFO), "404": NOT_FOUND, "503": BUSY},
            tags=["queue"],
            parameters=[PRODUCT_ID],
        )
    },
    "/wait/{product_id}": {
        "get": operation(
            "getWaitingRoom",
            "The waiting-room page for people (Korean and English).",
            {
                "200": text("The page.", "text/html; charset=utf-8"),
                "404": NOT_FOUND,
                "503": BUSY,
            },
            tags=["pages"],
            parameters=[PRODUCT_ID],
        )
    },
    "/healthz": health_path("200 once Valkey answers.", BUSY),
    "/metrics": metrics_path(),
}

QUEUE_API = document(
    "flashsale queue API",
    "The waiting room: join, status, leave, public sale info, the page. "
    'Every error is `{"error": code, "detail": sentence}`.',
    PATHS,
    security_schemes={
        "ticket": {
            "type": "http",
            "scheme": "bearer",
            "description": "The queue ticket from join; or the cookie `fs_ticket_<product_id>`.",
        }
    },
    tags=[
        {"name": "queue", "description": "The line."},
        {"name": "pages", "description": "HTML for people."},
        {"name": "operations", "description": "Health, metrics, this document."},
    ],
)
