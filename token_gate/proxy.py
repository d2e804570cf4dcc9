"""Headers across the gate: what goes to the shop, and the response that comes back.

Both directions keep headers as lists of pairs, never dicts: a repeated header (two
Set-Cookie lines, two Accept lines) must cross as it came, not merged or cut to its last value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.datastructures import Headers
from starlette.responses import Response

from infra.constants import (
    GATE_STRIPPED_HEADERS,
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
)
from infra.web.trace import outgoing_headers
from token_gate.upstream import Reply

# Hop-by-hop headers (RFC 9110 7.6.1) never cross a proxy, nor do the ones `Connection` names.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set anew for the upstream request: the client writes Host and the length of what it sends.
_REQUEST_ONLY = frozenset({"host", "content-length"})
# The client's own request id and trace are checked at the edge (infra.web.trace): what goes
# on is what the gate kept or made, never the raw header (two of them, CRLF, 10 KB of it).
_TRACE_HEADERS = frozenset({HEADER_REQUEST_ID, HEADER_TRACEPARENT, HEADER_TRACESTATE})
_REQUEST_ID = HEADER_REQUEST_ID.encode()


def _hop_by_hop(connection_values: Iterable[str]) -> set[str]:
    named = {token.strip().lower() for value in connection_values for token in value.split(",")}
    return set(HOP_BY_HOP) | (named - {""})


def upstream_headers(headers: Headers, extra: Mapping[str, str]) -> list[tuple[str, str]]:
    """The client's headers as the shop gets them: no hop-by-hop, no identity the client
    claims (`extra`, set from the verified token, replaces it), nothing left to the upstream
    client's defaults that the client did not ask for; the request's id and trace as the
    gate has them (with tracing on, the client span's position replaces the traceparent)."""
    drop = _hop_by_hop(headers.getlist("connection")) | _REQUEST_ONLY | _TRACE_HEADERS
    drop |= set(GATE_STRIPPED_HEADERS) | {name.lower() for name in extra}
    kept = [(k, v) for k, v in headers.items() if k not in drop]
    if "accept-encoding" not in headers:
        # The upstream client would ask for gzip; the body is passed on raw, so the client
        # would get a compression it never offered to decode.
        kept.append(("accept-encoding", "identity"))
    return kept + outgoing_headers() + list(extra.items())


def build_response(reply: Reply, head: bool = False) -> Response:
    """The shop's answer as the gate's response, repeated headers kept line by line.

    The body is the raw (still encoded) content, so Content-Encoding stays true. Content-Length
    is recomputed from it, except for HEAD, whose empty body stands for the shop's length.
    """
    raw = [(name.lower(), value) for name, value in reply.raw_headers]
    connection = [value.decode("latin-1") for name, value in raw if name == b"connection"]
    drop = {name.encode("latin-1") for name in _hop_by_hop(connection)}
    drop.add(_REQUEST_ID)  # the shop's echo of it: the gate answers the id itself, once
    if not head:
        drop.add(b"content-length")
    kept = [(name, value) for name, value in raw if name not in drop]
    response = Response(status_code=reply.status)
    no_body = head or reply.status < 200 or reply.status in (204, 304)
    if not no_body:
        response.body = reply.body
        kept.append((b"content-length", str(len(reply.body)).encode()))
    response.raw_headers = kept
    return response
