"""The shop page for people: ``GET /shop/{product_id}`` on the gate.

The page is one static HTML file with its script and style beside it (``static/shop.js`` with
its dictionaries in both languages, ``static/shop.css``), served as files under ``/assets/``:
the page's Content-Security-Policy (infra.web.pages) runs no inline script. The script calls
the same JSON API as every other client, through this gate, so the access token travels as
the ``fs_access`` cookie. The route itself only decides who may see the page:

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
import time
from functools import cache
from importlib import resources

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from infra.constants import ACCESS_COOKIE
from infra.sale.keys import is_product_id
from infra.web import errors
from infra.web.assets import page_language, static_files, with_asset_urls
from infra.web.cookies import CookieSecurity
from infra.web.pages import PAGE_HEADERS
from token_gate.codec import AccessToken, TokenCodec, TokenError

# Personal and short-lived: no cache (a shared one, or the back button after the token moved
# into the cookie) may keep either the page or a redirect that carried a token.
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_STATIC = resources.files("token_gate") / "static"


@cache
def page_files() -> dict[str, bytes]:
    """The page's own script and style, which the gate serves under /assets/."""
    return static_files(_STATIC)


@cache
def _template() -> str:
    return with_asset_urls((_STATIC / "shop.html").read_text(encoding="utf-8"), page_files())


class ShopPage:
    """The route (`endpoint`); `queue_url` is where browsers reach the waiting room, and
    `cookies` says whether the cookie is Secure (the visitor reached the gate over https)."""

    def __init__(self, codec: TokenCodec, queue_url: str, cookies: CookieSecurity) -> None:
        self.codec = codec
        self.queue_url = queue_url.rstrip("/")
        self.cookies = cookies

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
                    secure=self.cookies.secure(request),
                )
            return response
        if from_cookie is None:
            return self._to_waiting_room(product_id)
        return self._page(request, product_id, from_cookie)

    def _page(self, request: Request, product_id: str, token: AccessToken) -> Response:
        # product_id passed is_product_id: safe in HTML as it is, and the JSON of it and of
        # an integer holds no "<" that could end its data block. The waiting room's URL comes
        # from the settings, so it is escaped, and the script reads it back from the link's
        # href.
        page_json = orjson.dumps(
            {"product_id": product_id, "access_expires_ms": token.expires_at * 1000}
        ).decode()
        body = (
            _template()
            .replace("{{lang}}", page_language(request.headers.get("accept-language")))
            .replace("{{wait_url}}", html.escape(f"{self.queue_url}/wait/{product_id}"))
            .replace("{{page_json}}", page_json)
            .replace("{{product_id}}", product_id)
        )
        return HTMLResponse(body, headers=PAGE_HEADERS)
