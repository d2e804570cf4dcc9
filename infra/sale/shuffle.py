"""The verifiable shuffle of the pre-queue: a secret seed, its public commitment, and each
early visitor's draw. The shop makes the seed, the scheduler orders the line by the draws,
and the queue server shows each visitor its own; all three use these definitions."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_seed() -> str:
    """32 random bytes, hex; secret until the draw at the start."""
    return secrets.token_hex(32)


def commitment(seed_hex: str) -> str:
    """What is published from the opening of the pre-queue: hex SHA-256 of the seed's bytes."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def draw(seed_hex: str, visitor_id: str) -> str:
    """An early visitor's draw: hex HMAC-SHA256(seed, visitor_id); the line is ordered by it."""
    return hmac.new(bytes.fromhex(seed_hex), visitor_id.encode(), hashlib.sha256).hexdigest()
