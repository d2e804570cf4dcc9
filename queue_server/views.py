"""The queue API of API.md: join, status, leave, public sale info, the waiting-room page."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from infra.constants import ACCESS_COOKIE, TICKET_COOKIE_PREFIX
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from infra.sale.views import existing_sale_info, path_sale_keys, sale_info_view
from infra.settings import Settings
from infra.web import errors
from infra.web.app import ClientAddress, JSONResponse, retry_after_s
from infra.web.assets import page_language
from infra.web.cookies import CookieSecurity
from infra.web.metrics import Metrics
from infra.web.pages import PAGE_HEADERS
from queue_server.page import waiting_room_html
from queue_server.status import Reply, status_body
from token_gate.codec import TokenCodec, TokenError, new_visitor_id

TRUSTED_USER_MAX_CHARS = 128


@dataclass
class QueueContext:
    settings: Settings
    redis: Redis
    scripts: SaleScripts
    codec: TokenCodec
    metrics: Metrics
    client_address: ClientAddress
    cookies: CookieSecurity


def _ctx(request: Request) -> QueueContext:
    return request.app.state.ctx


def _presented_ticket(request: Request, product_id: str) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(TICKET_COOKIE_PREFIX + product_id) or None


def _trusted_user(ctx: QueueContext, request: Request) -> str | None:
    """The visitor id of a user named by the trusted upstream header, if one is configured
    and the request came from that upstream (a trusted proxy): from anyone else the header is
    only a claim, and believing it would hand them the user's place and access token."""
    header = ctx.settings.trusted_user_header
    if not header or not ctx.client_address.from_trusted_proxy(request):
        return None
    user = request.headers.get(header, "").strip()
    if not user or len(user) > TRUSTED_USER_MAX_CHARS or not user.isprintable():
        return None
    return f"u:{user}"


def _identify(ctx: QueueContext, request: Request, product_id: str, required: bool) -> str | None:
    """The caller's visitor id from the trusted user header or its ticket.

    For status and leave (`required`), a missing or bad ticket is an error; for join it only
    means a new visitor.
    """
    user = _trusted_user(ctx, request)
    if user:
        return user
    raw = _presented_ticket(request, product_id)
    if raw is None:
        if required:
            raise errors.TicketMissing("send the ticket as a Bearer token or the ticket cookie")
        return None
    try:
        ticket = ctx.codec.read_ticket(raw)
    except TokenError:
        if required:
            raise errors.TicketInvalid("the ticket is not valid") from None
        return None
    if ticket.product_id != product_id:
        if required:
            raise errors.NotFound("this ticket belongs to another product")
        return None
    return ticket.visitor_id


async def _complete_admission(ctx: QueueContext, keys: SaleKeys, v: str, reply: Reply) -> Reply:
    """Admitted, no token stored yet: mint it here. On a pass-through that is the normal
    path; after a scheduler tick it spares the visitor the wait for (or the loss of its turn
    to) a scheduler that is still storing the token, or died before it could."""
    minted = ctx.codec.mint_access(v, keys.product_id, reply.token_expiry_ms // 1000)
    token = await ctx.scripts.run("complete", keys, args=[v, minted])
    if not token:
        return dataclasses.replace(reply, state="expired")
    return dataclasses.replace(reply, state="admitted", token=token)


def _token_expiry(ctx: QueueContext, reply: Reply) -> Reply:
    """A visitor that has ordered keeps its token; its expiry is read from the token."""
    if reply.state != "admitted" or reply.token_expiry_ms:
        return reply
    try:
        token = ctx.codec.read_access(reply.token)
    except TokenError:
        return dataclasses.replace(reply, state="expired", token="")
    return dataclasses.replace(reply, token_expiry_ms=token.expires_at * 1000)


def _respond(
    ctx: QueueContext,
    request: Request,
    keys: SaleKeys,
    v: str,
    reply: Reply,
    status_code: int = 200,
    ticket: str | None = None,
) -> Response:
    reply = _token_expiry(ctx, reply)
    body: dict[str, Any] = status_body(keys.product_id, reply, v, ctx.settings.gate_url)
    if ticket is not None:
        body["ticket"] = ticket
    response = JSONResponse(body, status_code=status_code)
    if ticket is not None:
        secure = ctx.cookies.secure(request)
        _set_cookie(response, TICKET_COOKIE_PREFIX + keys.product_id, ticket, secure=secure)
    if reply.state == "admitted":
        # Cookies are per host, not per port: the gate on the same host receives this one.
        max_age = max(0, (reply.token_expiry_ms - reply.now_ms) // 1000)
        _set_cookie(response, ACCESS_COOKIE, reply.token, ctx.cookies.secure(request), max_age)
    return response


def _set_cookie(
    response: Response, name: str, value: str, secure: bool, max_age: int | None = None
) -> None:
    """Starlette's set_cookie goes through http.cookies, a real cost on the join path. Our
    names and values (product ids, URL-safe base64 tokens) never need quoting. `secure`: the
    visitor came over https (infra.web.cookies), asked only when a cookie is set, so a poll
    in line pays nothing for it."""
    cookie = f"{name}={value}; HttpOnly; Path=/; SameSite=lax"
    if secure:
        cookie += "; Secure"
    if max_age is not None:
        cookie += f"; Max-Age={max_age}"
    response.raw_headers.append((b"set-cookie", cookie.encode("latin-1")))


async def join(request: Request) -> Response:
    ctx = _ctx(request)
    keys = path_sale_keys(request)
    known = _identify(ctx, request, keys.product_id, required=False)
    visitor = known or new_visitor_id()
    raw = await ctx.scripts.join(
        keys, visitor, known is not None, ctx.client_address(request), ctx.settings.join_rate_per_ip
    )
    code = raw[0]
    if code == "not_found":
        raise errors.NotFound("no such product")
    if code == "not_open":
        raise errors.NotOpen("the pre-queue of this sale has not opened yet")
    if code == "closed":
        raise errors.Closed("this sale has ended or is sold out")
    if code == "rate_limited":
        ctx.metrics.inc("join_rate_limited_total")
        raise errors.RateLimited(
            "too many joins from this address", headers={"Retry-After": retry_after_s(raw[1])}
        )
    reply = Reply.parse(raw)
    created = bool(int(raw[13]))
    if reply.state == "passthrough":
        ctx.metrics.inc("passthrough_total")
    if reply.state in ("passthrough", "admitting"):
        reply = await _complete_admission(ctx, keys, visitor, reply)
    ctx.metrics.inc("joins_total", product=keys.product_id, created="true" if created else "false")
    ticket = ctx.codec.mint_ticket(visitor, keys.product_id)
    return _respond(ctx, request, keys, visitor, reply, 201 if created else 200, ticket)


async def status(request: Request) -> Response:
    ctx = _ctx(request)
    keys = path_sale_keys(request)
    visitor = _identify(ctx, request, keys.product_id, required=True)
    assert visitor is not None
    raw = await ctx.scripts.status(keys, visitor)
    code = raw[0]
    if code == "not_found":
        raise errors.NotFound("no such product")
    if code == "place_lost":
        raise errors.PlaceLost(
            "this place was given up because its page stopped asking; join again"
        )
    if code == "ticket_invalid":
        raise errors.TicketInvalid("this ticket no longer holds a place; join again")
    reply = Reply.parse(raw)
    if reply.state == "admitting":
        reply = await _complete_admission(ctx, keys, visitor, reply)
    return _respond(ctx, request, keys, visitor, reply)


async def leave(request: Request) -> Response:
    ctx = _ctx(request)
    keys = path_sale_keys(request)
    visitor = _identify(ctx, request, keys.product_id, required=True)
    assert visitor is not None
    if await ctx.scripts.leave(keys, visitor) == "not_found":
        raise errors.NotFound("no such product")
    response = Response(status_code=204)
    response.delete_cookie(TICKET_COOKIE_PREFIX + keys.product_id, path="/")
    return response


async def sale_info(request: Request) -> Response:
    ctx = _ctx(request)
    keys = path_sale_keys(request)
    info = await existing_sale_info(ctx.scripts, keys)
    return JSONResponse(sale_info_view(keys.product_id, info))


async def waiting_room(request: Request) -> Response:
    """The page for people. The product's name and the sale's public info are filled in here
    (escaped), so the page shows them at once without a request of its own; the language is
    the server's reading of Accept-Language, which the visitor's switch then overrides."""
    ctx = _ctx(request)
    keys = path_sale_keys(request)
    info = await existing_sale_info(ctx.scripts, keys)
    page = waiting_room_html(
        keys.product_id,
        info.get("name") or keys.product_id,
        page_language(request.headers.get("accept-language")),
        sale_info_view(keys.product_id, info),
    )
    # no-store among them: the page carries the sale's state of this moment.
    return HTMLResponse(page, headers=PAGE_HEADERS)
