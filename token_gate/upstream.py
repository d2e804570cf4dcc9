"""The gate's client to the shop: one aiohttp session, opened and closed by the lifespan.

It was httpx. Under 64 concurrent clients the gate then served 3% of what the shop serves
directly (py-spy, bench/README.md): on every request httpcore's pool asks each pooled
connection whether it has expired, a select() per connection, and, as sniffio is not
installed, retries a failing import on every call. aiohttp's pool does neither.

What crosses is what the client sent: the raw request target (so the shop decodes the very
path the gate checked), the headers as a list of pairs (a repeated header stays repeated), and
the body the gate already read whole. What comes back is the raw status, the raw header lines
and the raw body (no decompression: Content-Encoding stays true). The session keeps no cookies:
it is shared by every visitor, so a cookie the shop sets for one must never reach another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from infra.resource import Resource

MAX_CONNECTIONS = 256


@dataclass(frozen=True)
class UpstreamTimeout:
    connect_s: float  # includes the wait for a free pooled connection
    read_s: float  # between two reads of the answer


@dataclass(frozen=True)
class Reply:
    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class UpstreamError(Exception):
    """The shop could not be reached, or did not answer in time. ``cause`` names the failure
    for the metrics, in the words the gate has always used for them."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _cause(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return (
            "ConnectTimeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "ReadTimeout"
        )
    if isinstance(exc, TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "RemoteProtocolError"
    return type(exc).__name__


class Upstream(Resource):
    def __init__(self, base_url: str, timeout: UpstreamTimeout) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.timeout.connect_s,
                sock_read=self.timeout.read_s,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Only Host and Content-Length are the gate's own; nothing the client did not send.
            skip_auto_headers=("User-Agent", "Accept"),
        )

    async def stop(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        timeout_s: float | None = None,
    ) -> Reply:
        """Send `method target` (the raw path and query) and read the whole answer."""
        assert self._session is not None, "the upstream is not started"
        # Left out, the session's timeouts apply (aiohttp reads timeout=None as "none at all").
        extra = {} if timeout_s is None else {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
        try:
            async with self._session.request(
                method,
                URL(self.base_url + target, encoded=True),
                headers=list(headers),
                data=body or None,
                allow_redirects=False,
                **extra,
            ) as reply:
                # Read whole (bodies are small JSON): a timeout in the middle of the body is
                # then a clean failure, not a 200 cut short.
                content = await reply.read()
                return Reply(reply.status, reply.raw_headers, content)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(_cause(exc)) from exc
