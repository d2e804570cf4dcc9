"""TokenCodec: minting and reading queue tickets and access tokens, key rotation, attacks."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from infra.constants import ACCESS_SALT, TICKET_SALT
from token_gate.codec import (
    MAX_TOKEN_CHARS,
    AccessToken,
    Ticket,
    TokenCodec,
    TokenExpired,
    TokenInvalid,
    new_token_id,
    new_visitor_id,
)

OLD_KEY = "old-secret-key-0123456789abcdef"
NEW_KEY = "new-secret-key-fedcba9876543210"
OTHER_KEY = "someone-elses-key-000000000000000"


def in_s(seconds: float) -> int:
    return int(time.time() + seconds)


def signed_with(key: str, salt: str, payload: bytes) -> str:
    """A string signed exactly as the codec signs, around an arbitrary payload."""
    serializer = URLSafeSerializer(
        [key], salt=salt, signer_kwargs={"digest_method": hashlib.sha256}
    )
    return serializer.make_signer(salt).sign(payload).decode()


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec((NEW_KEY,))


def test_needs_a_key() -> None:
    with pytest.raises(ValueError):
        TokenCodec(())


def test_ids_are_random_hex() -> None:
    assert len(new_visitor_id()) == 32
    int(new_visitor_id(), 16)
    assert new_visitor_id() != new_visitor_id()
    assert new_token_id() != new_token_id()


def test_ticket_round_trip(codec: TokenCodec) -> None:
    raw = codec.mint_ticket("visitor-1", "shoe-1")
    assert isinstance(raw, str)
    assert codec.read_ticket(raw) == Ticket("visitor-1", "shoe-1")


def test_access_round_trip(codec: TokenCodec) -> None:
    expires = in_s(60)
    raw = codec.mint_access("visitor-1", "shoe-1", expires, token_id="tok-1")
    assert isinstance(raw, str)
    assert len(raw) < MAX_TOKEN_CHARS
    assert codec.read_access(raw) == AccessToken("visitor-1", "shoe-1", "tok-1", expires)


def test_access_token_gets_a_fresh_token_id(codec: TokenCodec) -> None:
    expires = in_s(60)
    first = codec.read_access(codec.mint_access("v", "p", expires))
    second = codec.read_access(codec.mint_access("v", "p", expires))
    assert first.token_id and second.token_id
    assert first.token_id != second.token_id


def test_round_trip_survives_unusual_text(codec: TokenCodec) -> None:
    visitor, product = 'vïsitor "quoted" ✓', "p" * 64
    assert codec.read_ticket(codec.mint_ticket(visitor, product)) == Ticket(visitor, product)


@given(visitor=st.text(max_size=40), product=st.text(max_size=64))
def test_minted_bytes_are_itsdangerous_own(visitor: str, product: str) -> None:
    """The codec mints without itsdangerous's call chain, for speed: the bytes must be what
    itsdangerous itself signs around the same payload, so any itsdangerous reader verifies them."""
    codec = TokenCodec((NEW_KEY, OLD_KEY))
    token = codec.mint_ticket(visitor, product)
    payload = b64(orjson.dumps({"v": visitor, "p": product}))
    assert token == signed_with(NEW_KEY, TICKET_SALT, payload)


def test_old_key_still_verifies_after_rotation() -> None:
    before = TokenCodec((OLD_KEY,))
    ticket = before.mint_ticket("v", "p")
    access = before.mint_access("v", "p", in_s(60), token_id="t")
    after = TokenCodec((NEW_KEY, OLD_KEY))
    assert after.read_ticket(ticket) == Ticket("v", "p")
    assert after.read_access(access).token_id == "t"


def test_newest_key_signs() -> None:
    rotated = TokenCodec((NEW_KEY, OLD_KEY))
    ticket = rotated.mint_ticket("v", "p")
    access = rotated.mint_access("v", "p", in_s(60))
    # Only the new key alone can read them: they were not signed with the old one.
    assert TokenCodec((NEW_KEY,)).read_ticket(ticket) == Ticket("v", "p")
    assert TokenCodec((NEW_KEY,)).read_access(access).visitor_id == "v"
    with pytest.raises(TokenInvalid):
        TokenCodec((OLD_KEY,)).read_ticket(ticket)
    with pytest.raises(TokenInvalid):
        TokenCodec((OLD_KEY,)).read_access(access)


def test_retired_key_no_longer_verifies() -> None:
    ticket = TokenCodec((OLD_KEY,)).mint_ticket("v", "p")
    with pytest.raises(TokenInvalid):
        TokenCodec((NEW_KEY,)).read_ticket(ticket)


def test_unknown_key_fails(codec: TokenCodec) -> None:
    forger = TokenCodec((OTHER_KEY,))
    with pytest.raises(TokenInvalid):
        codec.read_ticket(forger.mint_ticket("v", "p"))
    with pytest.raises(TokenInvalid):
        codec.read_access(forger.mint_access("v", "p", in_s(60)))


def test_ticket_is_not_an_access_token(codec: TokenCodec) -> None:
    with pytest.raises(TokenInvalid):
        codec.read_access(codec.mint_ticket("v", "p"))


def test_access_token_is_not_a_ticket(codec: TokenCodec) -> None:
    with pytest.raises(TokenInvalid):
        codec.read_ticket(codec.mint_access("v", "p", in_s(60)))


def test_ticket_shaped_payload_under_access_salt_is_invalid(codec: TokenCodec) -> None:
    # Even correctly signed as an access token, a ticket's payload lacks `t` and `e`.
    raw = signed_with(NEW_KEY, ACCESS_SALT, b64(orjson.dumps({"v": "v", "p": "p"})))
    with pytest.raises(TokenInvalid):
        codec.read_access(raw)


def test_tampered_payload_fails(codec: TokenCodec) -> None:
    raw = codec.mint_access("victim", "shoe-1", in_s(60))
    payload, _, signature = raw.rpartition(".")
    forged = b64(orjson.dumps({"v": "attacker", "p": "shoe-1", "t": "x", "e": in_s(9999)}))
    with pytest.raises(TokenInvalid):
        codec.read_access(f"{forged.decode()}.{signature}")
    flipped = ("A" if payload[0] != "A" else "B") + payload[1:]
    with pytest.raises(TokenInvalid):
        codec.read_access(f"{flipped}.{signature}")


def test_tampered_signature_fails(codec: TokenCodec) -> None:
    raw = codec.mint_ticket("v", "p")
    payload, _, signature = raw.rpartition(".")
    for bad in (signature[:-1], signature + "A", signature[::-1], "", "A" * len(signature)):
        if bad == signature:
            continue
        with pytest.raises(TokenInvalid):
            codec.read_ticket(f"{payload}.{bad}")
    with pytest.raises(TokenInvalid):
        codec.read_ticket(payload)  # no signature at all


def test_expired_access_token(codec: TokenCodec) -> None:
    with pytest.raises(TokenExpired):
        codec.read_access(codec.mint_access("v", "p", in_s(-1)))


def test_expiry_is_exclusive_and_uses_the_given_clock(codec: TokenCodec) -> None:
    raw = codec.mint_access("v", "p", 1_000_000)
    assert codec.read_access(raw, now=999_999.5).expires_at == 1_000_000
    with pytest.raises(TokenExpired):
        codec.read_access(raw, now=1_000_000)
    with pytest.raises(TokenExpired):
        codec.read_access(raw, now=2_000_000)


def test_expired_token_with_a_bad_signature_is_invalid_not_expired(codec: TokenCodec) -> None:
    raw = TokenCodec((OTHER_KEY,)).mint_access("v", "p", in_s(-60))
    with pytest.raises(TokenInvalid):
        codec.read_access(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        ".",
        "..",
        "garbage",
        "a.b",
        "a.b.c",
        "Bearer x",
        "null",
        "{}",
        "\x00\x01\x02",
        "é.ü",
        "x" * 5 * 1024,
        "." * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_garbage_is_invalid(codec: TokenCodec, raw: str) -> None:
    with pytest.raises(TokenInvalid):
        codec.read_ticket(raw)
    with pytest.raises(TokenInvalid):
        codec.read_access(raw)


def test_oversized_but_well_signed_token_is_invalid(codec: TokenCodec) -> None:
    raw = codec.mint_ticket(secrets.token_hex(1000), "p")  # random: zlib cannot shrink it
    assert len(raw) > MAX_TOKEN_CHARS
    with pytest.raises(TokenInvalid):
        codec.read_ticket(raw)


@pytest.mark.parametrize(
    "payload",
    [
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"null",
        b'{"v": 1, "p": "p", "t": "t", "e": 9999999999}',
        b'{"v": "v", "p": null, "t": "t", "e": 9999999999}',
        b'{"v": "v", "p": "p", "t": 7, "e": 9999999999}',
        b'{"v": "v", "p": "p", "t": "t", "e": "9999999999"}',
        b'{"v": "v", "p": "p", "t": "t", "e": 9999999999.5}',
        b'{"v": "v", "p": "p", "t": "t", "e": true}',
        b'{"v": "v", "p": "p", "t": "t"}',
        b"{}",
    ],
)
def test_well_signed_but_malformed_access_payload(codec: TokenCodec, payload: bytes) -> None:
    with pytest.raises(TokenInvalid):
        codec.read_access(signed_with(NEW_KEY, ACCESS_SALT, b64(payload)))


@pytest.mark.parametrize(
    "payload",
    [b"[]", b'{"v": "v"}', b'{"v": "v", "p": 3}', b'{"p": "p"}'],
)
def test_well_signed_but_malformed_ticket_payload(codec: TokenCodec, payload: bytes) -> None:
    with pytest.raises(TokenInvalid):
        codec.read_ticket(signed_with(NEW_KEY, TICKET_SALT, b64(payload)))


@pytest.mark.parametrize(
    "payload",
    [
        b"!!not base64!!",  # base64 fails
        b64(b"\xff\xfe not json"),  # not UTF-8, not JSON
        b64(b'{"v": "v",'),  # truncated JSON
        b"." + b64(b"not zlib data"),  # claims compression, is not
    ],
)
def test_well_signed_but_undecodable_payload(codec: TokenCodec, payload: bytes) -> None:
    # Only a key holder can produce these, but the codec still answers only TokenInvalid.
    with pytest.raises(TokenInvalid):
        codec.read_ticket(signed_with(NEW_KEY, TICKET_SALT, payload))
    with pytest.raises(TokenInvalid):
        codec.read_access(signed_with(NEW_KEY, ACCESS_SALT, payload))


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(), st.text(alphabet="abcXYZ019-_.=", max_size=300)))
def test_arbitrary_text_raises_only_token_errors(raw: str) -> None:
    codec = TokenCodec((NEW_KEY, OLD_KEY))
    for read in (codec.read_ticket, codec.read_access):
        try:
            read(raw)
        except (TokenInvalid, TokenExpired):
            pass


@settings(max_examples=200, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=400),
    insert=st.text(max_size=5),
)
def test_mangled_real_tokens_raise_only_token_errors(cut: int, insert: str) -> None:
    codec = TokenCodec((NEW_KEY,))
    raw = codec.mint_access("visitor", "shoe-1", 2_000_000_000, token_id="t")
    cut = min(cut, len(raw))
    mangled = raw[:cut] + insert + raw[cut + len(insert) :]
    try:
        token = codec.read_access(mangled)
    except (TokenInvalid, TokenExpired):
        return
    # Whatever still verifies (base64 ignores stray characters) carries the minted payload.
    assert token == AccessToken("visitor", "shoe-1", "t", 2_000_000_000)
