"""The token codec: every signed string the platform hands out is minted and read here.

Two kinds, each with its own itsdangerous salt, so a queue ticket never verifies as an access
token and vice versa. Signatures are HMAC-SHA256. ``secret_keys`` is newest first: the first
key signs, every key verifies, so a key can be rotated in without logging anyone out.
Verification is pure CPU, no I/O: the gate checks tokens in-process.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from itsdangerous import BadData, BadSignature, Signer, URLSafeSerializer
from itsdangerous.encoding import want_bytes

from infra.constants import ACCESS_SALT, TICKET_SALT

MAX_TOKEN_CHARS = 1024  # a real token is ~200 chars; anything longer is not worth decoding
# Verified strings kept, per kind. Measured: ~625 bytes per access token and ~450 per ticket,
# the raw string included, so the gate holds at most ~40 MB (the soak of issue 9 saw its RSS
# grow ~0.7 KB per visitor, this cache filling; it stops at the bound).
VERIFIED_CACHE_SIZE = 65_536
# The one spelling of an HMAC-SHA256 signature that we mint: 32 bytes are 43 base64url
# characters, the last of which holds 4 bits and two zero bits of padding. itsdangerous
# decodes more leniently (the padding bits ignored, "=" appended, characters outside the
# alphabet dropped), so one token had many spellings that all verified: a tampered string
# was honoured, and anything keyed by the token's text could be sidestepped.
_CANONICAL_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


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


class _KeyCachingSigner(Signer):
    """itsdangerous derives the HMAC key from the secret and salt on every call; the result
    never changes, and a hot path (every join, poll and gated request) should not pay it.
    Signing copies an HMAC already keyed with the signing key instead of keying a new one
    (the same bytes, in a third of the time): every join mints a ticket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[str | bytes | None, bytes] = {}
        self._keyed = hmac.new(self.derive_key(), digestmod=self.digest_method)

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        try:
            return self._derived[secret_key]
        except KeyError:
            key = self._derived[secret_key] = super().derive_key(secret_key)
            return key

    def get_signature(self, value: str | bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(want_bytes(value))
        return _b64(mac.digest())


def _b64(data: bytes) -> bytes:
    """itsdangerous's base64_encode (URL-safe, unpadded), in one C call and two C methods."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


class _Serializer(URLSafeSerializer):
    """One signer per salt, built once; payloads are never zlib-compressed (ours are ~80
    bytes: compression only costs time). Reading still accepts compressed payloads."""

    default_signer = _KeyCachingSigner

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signers: dict[str | bytes | None, Signer] = {}

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        try:
            return self._signers[salt]
        except KeyError:
            signer = self._signers[salt] = super().make_signer(salt)
            return signer

    def dump_payload(self, obj: Any) -> bytes:
        return _b64(orjson.dumps(obj))

    def dumps(self, obj: Any, salt: str | bytes | None = None) -> str:
        # itsdangerous's own dumps, less a dozen small calls per token: every join mints one.
        # The bytes are the same (tests/token_gate/test_codec.py compares them).
        payload = self.dump_payload(obj)
        return (payload + b"." + self.make_signer(salt).get_signature(payload)).decode()


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
    # 128 random bits (API.md). Shorter text would not save Valkey memory: a sorted-set member
    # of 22 to 35 characters costs the same (~92 bytes, one allocator size class), and the
    # next class down (21 characters or fewer) cannot hold 128 bits in base64url.
    return secrets.token_hex(16)


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
        self._tickets = _Serializer(keys, salt=TICKET_SALT, **kwargs)
        self._access = _Serializer(keys, salt=ACCESS_SALT, **kwargs)
        # The same ticket comes back on every poll and the same token on every gated request:
        # verify each string once. Only successes are cached (lru_cache does not keep
        # exceptions), expiry is still checked on every read, and the keys are fixed for the
        # codec's life, so a cached answer is always the answer verification would give.
        self._read_ticket = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._verify_ticket)
        self._read_access = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._verify_access)

    # --- queue tickets ---------------------------------------------------------------------
    def mint_ticket(self, visitor_id: str, product_id: str) -> str:
        return self._tickets.dumps({"v": visitor_id, "p": product_id})

    def read_ticket(self, raw: str) -> Ticket:
        return self._read_ticket(raw)

    def _verify_ticket(self, raw: str) -> Ticket:
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
        token = self._read_access(raw)
        if token.expires_at <= (time.time() if now is None else now):
            raise TokenExpired("access token expired")
        return token

    def _verify_access(self, raw: str) -> AccessToken:
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
        return AccessToken(visitor, product, token_id, expires)

    @staticmethod
    def _load(serializer: _Serializer, raw: str) -> dict[str, Any]:
        if not raw or len(raw) > MAX_TOKEN_CHARS:
            raise TokenInvalid("missing or oversized token")
        if not _CANONICAL_SIGNATURE.fullmatch(raw.rpartition(".")[2]):
            raise TokenInvalid("bad signature")
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
