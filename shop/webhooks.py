"""The admin API's webhooks: ``POST/GET/DELETE /admin/webhooks`` and each one's attempts.

A webhook is a URL, the event kinds it hears (infra.events.EVENT_KINDS, all by default) and a
format (``json``, or ``slack`` for a Slack incoming webhook). Its signing secret is made here,
shown once in the 201 and never again: it is neither listed nor logged. shop/deliverer.py
sends the events and records every attempt, which ``GET /admin/webhooks/{id}/deliveries``
lists. Listing is a reading route (the viewer key may), creating and deleting are not.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from infra.constants import WEBHOOK_ATTEMPTS_LISTED, WEBHOOK_URL_MAX_CHARS, WEBHOOKS_MAX
from infra.events import EVENT_KINDS
from infra.sale.views import iso_utc
from infra.web import errors
from infra.web.app import JSONResponse, read_json_object
from shop.admin import ADMIN, require_admin, role
from shop.webhook_tables import (
    WEBHOOK_FORMATS,
    WEBHOOK_ID_PATTERN,
    webhook_deliveries,
    webhook_events,
    webhooks,
)

# `\Z`, not `$` (which also matches before a trailing newline).
WEBHOOK_ID_RE = re.compile(WEBHOOK_ID_PATTERN.removesuffix("$") + r"\Z")
FIELDS = ("url", "events", "format")
# Creations take this transaction-scoped lock, so two at once cannot both pass the count.
_CREATE_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('flashsale.webhooks.create'))")


def _ms(value: Any) -> str | None:
    return None if value is None else iso_utc(int(value.timestamp() * 1000))


def _url_problem(url: object) -> str | None:
    if not isinstance(url, str):
        return "url must be a string"
    if not 1 <= len(url) <= WEBHOOK_URL_MAX_CHARS:
        return f"url must be 1 to {WEBHOOK_URL_MAX_CHARS} characters"
    if not (url.isascii() and url.isprintable()) or " " in url:
        return "url has a space, a control or a non-ASCII character (percent-encode it)"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not 0-65535
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "url must be http:// or https://"
    if not parts.hostname:
        return "url names no host"
    if port == 0:
        return "url's port must be 1 to 65535"
    if parts.username is not None or parts.password is not None:
        # It would be listed (and shown to the viewer): the signature authenticates us instead.
        return "url may not carry credentials (user:password@); verify the signature instead"
    if parts.fragment:
        return "url may not carry a #fragment"
    return None


def _events(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise errors.InvalidRequest(f"events must be a non-empty list of: {', '.join(EVENT_KINDS)}")
    if not all(isinstance(kind, str) for kind in value):
        raise errors.InvalidRequest("events must be strings")
    unknown = sorted({kind for kind in value if kind not in EVENT_KINDS})
    if unknown:
        shown = ", ".join(repr(kind[:40]) for kind in unknown[:5])
        raise errors.InvalidRequest(f"unknown event(s) {shown}: expected {', '.join(EVENT_KINDS)}")
    if len(set(value)) != len(value):
        raise errors.InvalidRequest("events lists an event twice")
    return [kind for kind in EVENT_KINDS if kind in value]  # the documented order


def parse_new_webhook(body: dict[str, Any]) -> tuple[str, list[str], str]:
    """(url, events, format) of a POST body, or the 422 that says what is wrong."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise errors.InvalidRequest(f"unknown field(s): {', '.join(k[:40] for k in unknown[:5])}")
    if "url" not in body:
        raise errors.InvalidRequest("url is required")
    if problem := _url_problem(body["url"]):
        raise errors.InvalidRequest(problem)
    kinds = _events(body["events"]) if "events" in body else list(EVENT_KINDS)
    fmt = body.get("format", "json")
    if fmt not in WEBHOOK_FORMATS:
        raise errors.InvalidRequest(f"format must be one of {', '.join(WEBHOOK_FORMATS)}")
    return body["url"], kinds, fmt


def shown_url(url: str, who: str) -> str:
    """The URL as this caller may see it. The path of a Slack (or most) incoming webhook is
    its credential: anyone holding it may post to the channel, so the viewer sees the origin."""
    if who == ADMIN:
        return url
    parts = urlsplit(url)
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{parts.netloc}{rest}"


def _view(row: Any, who: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": shown_url(row.url, who),
        "events": list(row.events),
        "format": row.format,
        "created_at": _ms(row.created_at),
    }


def _webhook_id(request: Request) -> str:
    webhook_id = request.path_params["webhook_id"]
    if not WEBHOOK_ID_RE.match(webhook_id):
        raise errors.NotFound("no such webhook")
    return webhook_id


async def _exists(conn: AsyncConnection, webhook_id: str) -> bool:
    found = await conn.execute(select(webhooks.c.id).where(webhooks.c.id == webhook_id))
    return found.first() is not None


async def create(request: Request) -> Response:
    ctx = require_admin(request)
    url, kinds, fmt = parse_new_webhook(await read_json_object(request))
    webhook_id = "wh_" + secrets.token_hex(8)
    secret = "whsec_" + secrets.token_urlsafe(32)
    async with ctx.engine.begin() as conn:  # one transaction: the row, or nothing
        await conn.execute(_CREATE_LOCK)
        count = (await conn.execute(select(func.count()).select_from(webhooks))).scalar_one()
        if count >= WEBHOOKS_MAX:
            raise errors.Conflict(f"there are {WEBHOOKS_MAX} webhooks already; delete one first")
        row = (
            await conn.execute(
                insert(webhooks)
                .values(id=webhook_id, url=url, events=kinds, format=fmt, secret=secret)
                .returning(webhooks)
            )
        ).one()
    return JSONResponse({**_view(row, ADMIN), "secret": secret}, status_code=201)


async def list_all(request: Request) -> Response:
    ctx, who = role(request)
    async with ctx.engine.connect() as conn:
        rows = await conn.execute(
            select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id).limit(WEBHOOKS_MAX)
        )
        return JSONResponse([_view(row, who) for row in rows])


async def remove(request: Request) -> Response:
    ctx = require_admin(request)
    webhook_id = _webhook_id(request)
    async with ctx.engine.begin() as conn:
        gone = await conn.execute(
            delete(webhooks).where(webhooks.c.id == webhook_id).returning(webhooks.c.id)
        )
        if gone.first() is None:
            raise errors.NotFound("no such webhook")
    return Response(status_code=204)


async def attempts(request: Request) -> Response:
    ctx, _ = role(request)
    webhook_id = _webhook_id(request)
    d = webhook_deliveries.c
    async with ctx.engine.connect() as conn:
        if not await _exists(conn, webhook_id):
            raise errors.NotFound("no such webhook")
        rows = await conn.execute(
            select(webhook_deliveries, webhook_events.c.kind)
            .join(webhook_events, webhook_events.c.id == d.event_id)
            .where(d.webhook_id == webhook_id)
            .order_by(d.id.desc())
            .limit(WEBHOOK_ATTEMPTS_LISTED)
        )
        return JSONResponse(
            [
                {
                    "id": row.id,
                    "event_id": row.event_id,
                    "event": row.kind,
                    "attempt": row.attempt,
                    "state": row.state,
                    "due_at": _ms(row.due_at),
                    "started_at": _ms(row.started_at),
                    "finished_at": _ms(row.finished_at),
                    "status_code": row.status_code,
                    "error": row.error,
                    "duration_ms": row.duration_ms,
                }
                for row in rows
            ]
        )
