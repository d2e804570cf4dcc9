"""The shop page for people: ``GET /shop/{product_id}`` on the gate.

The page is one static HTML file (its script inline, its dictionaries in both languages) that
calls the same JSON API as every other client, through this gate, so the access token travels
as the ``fs_access`` cookie. The route itself only decides who may see the page:

- a valid access token for this product in ``?token=`` (how the waiting room hands a visitor
  over) is moved into the cookie, and the answer is a 303 to the same path without the query,
  so the token stays out of the address bar, the history and any Referer;
- a valid token in the cookie gets the page;
- anything else (none, garbage, a queue ticket, expired, another product's) is a 303 to the
  waiting room, where a person can do something about it, instead of the API's JSON 401.

Tokens are never logged: nothing here logs, and the gate's servers keep no access log.
"""

from __future__ import annotations

import html
import secrets
import time
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from infra.constants import ACCESS_COOKIE
from infra.sale.keys import is_product_id
from infra.web import errors
from infra.web.assets import page_language
from token_gate.codec import AccessToken, TokenCodec, TokenError

# Personal and short-lived: no cache (a shared one, or the back button after the token moved
# into the cookie) may keep either the page or a redirect that carried a token.
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@cache
def _template() -> str:
    return (resources.files("token_gate") / "static" / "shop.html").read_text(encoding="utf-8")


def _policy(nonce: str) -> str:
    """Nothing but this origin: the page's own script and style (by nonce), /assets/ and the
    JSON API. A buy button is also never framed by another site (clickjacking)."""
    return (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class ShopPage:
    """The route (`endpoint`); `queue_url` is where browsers reach the waiting room, and
    `secure_cookie` is true when visitors reach the gate over https."""

    def __init__(self, codec: TokenCodec, queue_url: str, secure_cookie: bool) -> None:
        self.codec = codec
        self.queue_url = queue_url.rstrip("/")
        self.secure_cookie = secure_cookie

    def _token(self, raw: str | None, product_id: str) -> AccessToken | None:
        if not raw:
            return None
        try:
            token = self.codec.read_access(raw)
        except TokenError:
            return None
        return token if token.product_id == product_id else None

    def _to_waiting_room(self, product_id: str) -> Response:
        return RedirectResponse(f"{self.queue_url}/wait/{product_id}", 303, headers=NO_STORE)

    async def endpoint(self, request: Request) -> Response:
        product_id = request.path_params["product_id"]
        if not is_product_id(product_id):
            raise errors.NotFound("no such product")
        clean = f"/shop/{product_id}"
        from_cookie = self._token(request.cookies.get(ACCESS_COOKIE), product_id)
        if request.url.query:
            from_query = self._token(request.query_params.get("token"), product_id)
            if from_query is None and from_cookie is None:
                return self._to_waiting_room(product_id)
            # Either way the query goes: a stale ?token= next to a good cookie is dropped too.
            response = RedirectResponse(clean, 303, headers=NO_STORE)
            if from_query is not None:
                response.set_cookie(
                    ACCESS_COOKIE,
                    request.query_params["token"],
                    max_age=max(1, from_query.expires_at - int(time.time())),
                    path="/",
                    httponly=True,
                    samesite="lax",
                    secure=self.secure_cookie,
                )
            return response
        if from_cookie is None:
            return self._to_waiting_room(product_id)
        return self._page(request, product_id, from_cookie)

    def _page(self, request: Request, product_id: str, token: AccessToken) -> Response:
        nonce = secrets.token_urlsafe(16)
        # product_id passed is_product_id and the nonce is URL-safe base64: both are safe in
        # HTML and in a JS string as they are. The waiting room's URL comes from the settings,
        # so it is escaped, and the script reads it back from the link's href.
        body = (
            _template()
            .replace("{{lang}}", page_language(request.headers.get("accept-language")))
            .replace("{{nonce}}", nonce)
            .replace("{{wait_url}}", html.escape(f"{self.queue_url}/wait/{product_id}"))
            .replace("{{access_expires_ms}}", str(token.expires_at * 1000))
            .replace("{{product_id}}", product_id)
        )
        headers = {
            **NO_STORE,
            "Content-Security-Policy": _policy(nonce),
            "X-Content-Type-Options": "nosniff",
        }
        return HTMLResponse(body, headers=headers)
