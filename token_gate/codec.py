"""The token codec: every signed string the platform hands out is minted and read here.

Two kinds, each with its own itsdangerous salt, so a queue ticket never verifies as an access
token and vice versa. Signatures are HMAC-SHA256. ``secret_keys`` is newest first: the first
key signs, every key verifies, so a key can be rotated in without logging anyone out.
Verification is pure CPU, no I/O: the gate checks tokens in-process.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from itsdangerous import BadData, BadSignature, URLSafeSerializer

from infra.constants import ACCESS_SALT, TICKET_SALT

MAX_TOKEN_CHARS = 1024  # a real token is ~200 chars; anything longer is not worth decoding


class TokenError(Exception):
    """A token that must not be honoured."""


class TokenInvalid(TokenError):
    """Bad signature, wrong kind, garbage, or a payload of the wrong shape."""


class TokenExpired(TokenError):
    """A well-signed access token past its expiry."""


class _OrjsonText:
    """itsdangerous wants ``dumps``/``loads``; orjson is several times faster than json."""

    @staticmethod
    def dumps(obj: Any) -> str:
        # str, so that itsdangerous hands back str tokens too
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes) -> Any:
        return orjson.loads(data)


@dataclass(frozen=True, slots=True)
class Ticket:
    visitor_id: str
    product_id: str


@dataclass(frozen=True, slots=True)
class AccessToken:
    visitor_id: str
    product_id: str
    token_id: str
    expires_at: int  # unix seconds


def new_visitor_id() -> str:
    return secrets.token_hex(16)  # 128 random bits


def new_token_id() -> str:
    return secrets.token_hex(8)


class TokenCodec:
    def __init__(self, secret_keys: tuple[str, ...] | list[str]) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        # itsdangerous signs with the *last* key of its list; ours is newest first.
        keys = list(reversed(secret_keys))
        kwargs: dict[str, Any] = {
            "serializer": _OrjsonText,
            "signer_kwargs": {"digest_method": hashlib.sha256},
        }
        self._tickets = URLSafeSerializer(keys, salt=TICKET_SALT, **kwargs)
        self._access = URLSafeSerializer(keys, salt=ACCESS_SALT, **kwargs)

    # --- queue tickets ---------------------------------------------------------------------
    def mint_ticket(self, visitor_id: str, product_id: str) -> str:
        return self._tickets.dumps({"v": visitor_id, "p": product_id})

    def read_ticket(self, raw: str) -> Ticket:
        payload = self._load(self._tickets, raw)
        visitor, product = payload.get("v"), payload.get("p")
        if not isinstance(visitor, str) or not isinstance(product, str):
            raise TokenInvalid("malformed ticket")
        return Ticket(visitor, product)

    # --- access tokens ---------------------------------------------------------------------
    def mint_access(
        self, visitor_id: str, product_id: str, expires_at: int, token_id: str | None = None
    ) -> str:
        return self._access.dumps(
            {"v": visitor_id, "p": product_id, "t": token_id or new_token_id(), "e": expires_at}
        )

    def read_access(self, raw: str, now: float | None = None) -> AccessToken:
        payload = self._load(self._access, raw)
        visitor, product = payload.get("v"), payload.get("p")
        token_id, expires = payload.get("t"), payload.get("e")
        if not (
            isinstance(visitor, str)
            and isinstance(product, str)
            and isinstance(token_id, str)
            and type(expires) is int
        ):
            raise TokenInvalid("malformed access token")
        if expires <= (time.time() if now is None else now):
            raise TokenExpired("access token expired")
        return AccessToken(visitor, product, token_id, expires)

    @staticmethod
    def _load(serializer: URLSafeSerializer, raw: str) -> dict[str, Any]:
        if not raw or len(raw) > MAX_TOKEN_CHARS:
            raise TokenInvalid("missing or oversized token")
        try:
            payload = serializer.loads(raw)
        except BadSignature:
            raise TokenInvalid("bad signature") from None
        except (BadData, ValueError, TypeError, UnicodeError):
            # base64 / zlib / orjson failures on a payload that passed the signature:
            # itsdangerous wraps them in BadPayload, a BadData that is not a BadSignature.
            raise TokenInvalid("undecodable token") from None
        if not isinstance(payload, dict):
            raise TokenInvalid("malformed token")
        return payload
