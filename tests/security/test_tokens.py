"""Token attacks over HTTP, end to end: each is refused by the process it is sent to, and
nothing of it reaches the shop (the stock never moves, the visitor's place never changes).

The codec's own unit tests (tests/token_gate/test_codec.py) prove the same refusals on
strings; these prove that the running gate and queue server apply them to real requests.
"""

from __future__ import annotations

import base64

import httpx
import orjson
from redis.asyncio import Redis

from infra.constants import ACCESS_COOKIE, HEADER_GATE_SECRET
from infra.settings import Settings
from tests.security.conftest import (
    NEW_KEY,
    OLD_KEY,
    RETIRED_KEY,
    Platform,
    admitted,
    bearer,
    cookie,
    in_,
    open_sale,
    platform_of,
    security_settings,
    stock_left,
)
from tests.shop.helpers import assert_error
from token_gate.codec import TokenCodec

ORDER = {"quantity": 1}


def _payload(token: str) -> dict[str, object]:
    head = token.split(".", 1)[0]
    return orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def _with_payload(token: str, payload: dict[str, object]) -> str:
    """The same signature over another payload: what an attacker who edits a token sends."""
    head = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    return head + "." + token.split(".", 1)[1]


async def _order(
    client: httpx.AsyncClient, platform: Platform, product_id: str, token: str, **kw: object
) -> httpx.Response:
    return await client.post(
        f"{platform.gate_url}/products/{product_id}/orders",
        json=ORDER,
        headers=bearer(token),
        **kw,  # type: ignore[arg-type]
    )


async def test_forged_tampered_and_expired_access_tokens_are_refused_by_the_gate(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    keys = await open_sale(redis)
    pid = keys.product_id
    real = (await admitted(client, platform, pid))["access_token"]
    victim = _payload(real)
    forged = TokenCodec(("an-attackers-own-key-0123456789abcdef",)).mint_access(
        str(victim["v"]), pid, in_(300)
    )
    # Another visitor's identity, a later expiry, another product: each under the real
    # signature, which then no longer matches.
    tampered = [
        _with_payload(real, {**victim, "v": "someone-else"}),
        _with_payload(real, {**victim, "e": in_(86_400)}),
        _with_payload(real, {**victim, "p": "other-product"}),
        # One character of the signature (not the last: its low bits are base64 padding).
        real[:-10] + ("A" if real[-10] != "A" else "B") + real[-9:],
    ]
    expired = platform.codec.mint_access(str(victim["v"]), pid, in_(-1))
    before = await stock_left(client, platform, pid)
    for token in [forged, *tampered]:
        assert_error(await _order(client, platform, pid, token), 401, "token_invalid")
        # The cookie is checked just the same.
        reply = await client.post(
            f"{platform.gate_url}/products/{pid}/orders",
            json=ORDER,
            headers=cookie(ACCESS_COOKIE, token),
        )
        assert_error(reply, 401, "token_invalid")
    assert_error(await _order(client, platform, pid, expired), 401, "token_expired")
    # An expired token re-signed by an attacker is a forgery first: invalid, not expired.
    forged_expired = TokenCodec((RETIRED_KEY,)).mint_access("v", pid, in_(-1))
    assert_error(await _order(client, platform, pid, forged_expired), 401, "token_invalid")
    assert await stock_left(client, platform, pid) == before
    # The real token still works: the refusals were about the attacks, not the sale.
    assert (await _order(client, platform, pid, real)).status_code == 202


async def test_forged_and_tampered_tickets_are_refused_by_the_queue_server(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    keys = await open_sale(redis, stock=1, max_active=1)
    pid = keys.product_id
    await admitted(client, platform, pid)  # the one slot: everyone after waits in line
    join = await client.post(f"{platform.queue_url}/queue/{pid}/join")
    assert join.status_code == 201
    ticket = join.json()["ticket"]
    mine = _payload(ticket)
    forged = TokenCodec(("an-attackers-own-key-0123456789abcdef",)).mint_ticket(str(mine["v"]), pid)
    tampered = _with_payload(ticket, {**mine, "v": "someone-else"})
    status_url = f"{platform.queue_url}/queue/{pid}/status"
    for bad in (forged, tampered, ticket[:-2]):
        assert_error(await client.get(status_url, headers=bearer(bad)), 401, "ticket_invalid")
        leave = await client.delete(f"{platform.queue_url}/queue/{pid}/ticket", headers=bearer(bad))
        assert_error(leave, 401, "ticket_invalid")
    # A forged ticket on join is no identity at all: a new place at the back, not the
    # victim's place, and not a 200 "you already hold one".
    rejoin = await client.post(f"{platform.queue_url}/queue/{pid}/join", headers=bearer(forged))
    assert rejoin.status_code == 201
    assert _payload(rejoin.json()["ticket"])["v"] != mine["v"]
    assert rejoin.json()["position"] == 2
    still = await client.get(status_url, headers=bearer(ticket))
    assert (still.status_code, still.json()["position"]) == (200, 1)


async def test_a_ticket_is_no_access_token_and_an_access_token_is_no_ticket(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    keys = await open_sale(redis)
    pid = keys.product_id
    body = await admitted(client, platform, pid)
    ticket, token = body["ticket"], body["access_token"]
    before = await stock_left(client, platform, pid)
    assert_error(await _order(client, platform, pid, ticket), 401, "token_invalid")
    reply = await client.post(
        f"{platform.gate_url}/products/{pid}/orders",
        json=ORDER,
        headers=cookie(ACCESS_COOKIE, ticket),
    )
    assert_error(reply, 401, "token_invalid")
    # The ticket in its own cookie is no access token either: the gate does not read it.
    reply = await client.post(
        f"{platform.gate_url}/products/{pid}/orders",
        json=ORDER,
        headers=cookie(f"fs_ticket_{pid}", ticket),
    )
    assert_error(reply, 401, "token_missing")
    # The shop page turns it away to the waiting room, as any token it cannot honour.
    page = await client.get(f"{platform.gate_url}/shop/{pid}", params={"token": ticket})
    assert page.status_code == 303 and "/wait/" in page.headers["location"]
    assert "set-cookie" not in page.headers
    assert await stock_left(client, platform, pid) == before

    status_url = f"{platform.queue_url}/queue/{pid}/status"
    assert_error(await client.get(status_url, headers=bearer(token)), 401, "ticket_invalid")
    reply = await client.get(status_url, headers=cookie(f"fs_ticket_{pid}", token))
    assert_error(reply, 401, "ticket_invalid")
    # On join an access token names nobody: a new visitor, never the token's.
    join = await client.post(f"{platform.queue_url}/queue/{pid}/join", headers=bearer(token))
    assert join.status_code == 201
    assert _payload(join.json()["ticket"])["v"] != _payload(token)["v"]


async def test_a_token_for_another_product_is_refused(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    mine, other = await open_sale(redis), await open_sale(redis)
    body = await admitted(client, platform, mine.product_id)
    token, ticket = body["access_token"], body["ticket"]
    before = await stock_left(client, platform, other.product_id)
    for path in ("/orders", "/orders/o_" + "0" * 24, "/orders/o_" + "0" * 24 + "/pay"):
        reply = await client.post(
            f"{platform.gate_url}/products/{other.product_id}{path}",
            json=ORDER,
            headers=bearer(token),
        )
        assert_error(reply, 403, "token_wrong_product")
    # Nor may a request carry the product it claims past the gate: the shop checks the
    # gate's X-Product-Id against the path, and the gate sets it from the token.
    spoofed = await client.post(
        f"{platform.gate_url}/products/{other.product_id}/orders",
        json=ORDER,
        headers={**bearer(token), "X-Product-Id": other.product_id},
    )
    assert_error(spoofed, 403, "token_wrong_product")
    assert await stock_left(client, platform, other.product_id) == before
    # The ticket of one sale holds no place in another.
    reply = await client.get(
        f"{platform.queue_url}/queue/{other.product_id}/status", headers=bearer(ticket)
    )
    assert_error(reply, 404, "not_found")
    # The shop page of the other product does not take it either.
    page = await client.get(f"{platform.gate_url}/shop/{other.product_id}", params={"token": token})
    assert page.status_code == 303 and "/wait/" in page.headers["location"]


async def test_a_retired_key_is_refused_after_rotation(
    client: httpx.AsyncClient, stack_settings: Settings, redis: Redis
) -> None:
    """Rotation: (old) -> (new, old) -> (new). Mid-rotation both verify; once the old key is
    retired, its tokens, tickets and gate secret are dead everywhere."""
    keys = await open_sale(redis, stock=1, max_active=1)
    pid = keys.product_id
    before = security_settings(stack_settings, secret_keys=(OLD_KEY,))
    async with platform_of(before) as old:
        body = await admitted(client, old, pid)
        waiting = await client.post(f"{old.queue_url}/queue/{pid}/join")
        assert waiting.status_code == 201
    old_token, old_ticket = body["access_token"], waiting.json()["ticket"]
    old_gate_secret = before.gate_secrets()[0]
    during = security_settings(stack_settings, secret_keys=(NEW_KEY, OLD_KEY))
    after = security_settings(stack_settings, secret_keys=(NEW_KEY,))

    async with platform_of(during) as mid:
        # Nobody is logged out mid-rotation: the ticket keeps its place...
        status = await client.get(f"{mid.queue_url}/queue/{pid}/status", headers=bearer(old_ticket))
        assert (status.status_code, status.json()["position"]) == (200, 1)
        # ... and a gate already on the new key still reaches a shop on either.
        direct = await client.get(
            f"{mid.shop_url}/products/{pid}", headers={HEADER_GATE_SECRET: old_gate_secret}
        )
        assert direct.status_code == 200

    async with platform_of(after) as new:
        stock = await stock_left(client, new, pid)
        assert_error(await _order(client, new, pid, old_token), 401, "token_invalid")
        status = await client.get(f"{new.queue_url}/queue/{pid}/status", headers=bearer(old_ticket))
        assert_error(status, 401, "ticket_invalid")
        page = await client.get(f"{new.gate_url}/shop/{pid}", params={"token": old_token})
        assert page.status_code == 303 and "/wait/" in page.headers["location"]
        # The gate secret derived from the retired key no longer opens the shop.
        direct = await client.post(
            f"{new.shop_url}/products/{pid}/orders",
            json=ORDER,
            headers={
                HEADER_GATE_SECRET: old_gate_secret,
                "X-Visitor-Id": "v",
                "X-Product-Id": pid,
            },
        )
        assert_error(direct, 403, "forbidden")
        assert await stock_left(client, new, pid) == stock
        # A token of the new key goes through the same gate: the refusal was the key's.
        fresh = new.codec.mint_access("rotated-visitor", pid, in_(300))
        assert (await _order(client, new, pid, fresh)).status_code == 202


def _respellings(token: str) -> list[str]:
    """Other spellings of the same signature bytes, which a lenient base64 decoder reads
    back as the very same signature: the padding bits of the last character changed, a "="
    appended, a character from outside the alphabet slipped in."""
    head, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    padded = [sig[:-1] + alphabet[(last & ~3) | bits] for bits in (1, 2, 3)]
    return [f"{head}.{s}" for s in [*padded, sig + "=", sig[:10] + "!" + sig[10:], sig + "*"]]


async def test_another_spelling_of_a_real_signature_is_refused(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    keys = await open_sale(redis, stock=1, max_active=1)
    pid = keys.product_id
    body = await admitted(client, platform, pid)
    token = body["access_token"]
    waiting = await client.post(f"{platform.queue_url}/queue/{pid}/join")
    ticket = waiting.json()["ticket"]
    read = f"{platform.gate_url}/products/{pid}/orders/o_{'0' * 24}"
    assert_error(await client.get(read, headers=bearer(token)), 404, "not_found")  # honoured
    for respelled in _respellings(token):
        assert_error(await client.get(read, headers=bearer(respelled)), 401, "token_invalid")
    status_url = f"{platform.queue_url}/queue/{pid}/status"
    assert (await client.get(status_url, headers=bearer(ticket))).status_code == 200
    for respelled in _respellings(ticket):
        reply = await client.get(status_url, headers=bearer(respelled))
        assert_error(reply, 401, "ticket_invalid")


async def test_a_token_in_the_url_is_no_credential_for_the_api(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    """URLs end up in logs, histories and Referers: the order API takes the token only as a
    Bearer header or the HttpOnly cookie. (Only the shop page reads ?token=, once, and moves
    it into the cookie.)"""
    keys = await open_sale(redis)
    pid = keys.product_id
    token = (await admitted(client, platform, pid))["access_token"]
    before = await stock_left(client, platform, pid)
    for query in ({"token": token}, {"access_token": token}, {"authorization": f"Bearer {token}"}):
        reply = await client.post(
            f"{platform.gate_url}/products/{pid}/orders", json=ORDER, params=query
        )
        assert_error(reply, 401, "token_missing")
    assert await stock_left(client, platform, pid) == before
