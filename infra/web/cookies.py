"""Whether a cookie the platform sets carries ``Secure``: the queue server's tickets
(``fs_ticket_<product_id>``) and the access cookie (``fs_access``, set by the queue server at
a visitor's turn and by the gate's shop page).

``Secure`` keeps the browser from ever sending the cookie over plain http, where anyone on
the path reads a ticket or an access token. It is set whenever the visitor reached us over
https, which the process knows in one of three ways:

- its public URL (``FLASHSALE_PUBLIC_QUEUE_URL`` / ``FLASHSALE_PUBLIC_GATE_URL``) is https:
  decided once, for every answer;
- the request itself came over TLS (the ASGI scope's scheme is https);
- a trusted proxy (``FLASHSALE_TRUSTED_PROXIES``, the peers whose X-Forwarded-For is believed)
  says ``X-Forwarded-Proto: https``. From any other peer the header is a claim anyone can
  make, and is ignored, as X-Forwarded-For is.

Otherwise (plain http: local development, the tests) the cookie is not Secure, or browsers
would refuse to store it and the page could not keep its place. When a proxy lists several
values (``https, http``), the last is the one the trusted peer itself saw and set; an earlier
one may come from the client. ``Forwarded: proto=`` (RFC 7239) is not read.

The check runs only when a cookie is set (a join, a visitor's turn), never on a poll: with an
https public URL it is one attribute read, and the header is looked up only when trusted
proxies are configured and the peer is one of them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from infra.constants import HEADER_FORWARDED_PROTO
from infra.web.app import ClientAddress


class CookieSecurity:
    """The ``Secure`` decision of one process, built once from its settings."""

    def __init__(self, public_url: str, client_address: ClientAddress) -> None:
        self.always = urlsplit(public_url).scheme == "https"
        self._client_address = client_address

    def secure(self, request: Request) -> bool:
        if self.always:
            return True
        if request.scope.get("scheme") == "https":
            return True
        if not self._client_address.from_trusted_proxy(request):
            return False
        proto = request.headers.get(HEADER_FORWARDED_PROTO, "")
        return proto.rpartition(",")[2].strip().lower() == "https"
