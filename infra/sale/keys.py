"""The Redis key names of one sale.

Every key of a sale carries the hash tag ``{product_id}``, so that all of a sale's Lua scripts
run on a single Redis Cluster shard.
"""

from __future__ import annotations

import functools

from infra.constants import PRODUCT_ID_RE


class InvalidProductId(ValueError):
    """A string that API.md's product id rule refuses (``PRODUCT_ID_RE``)."""


def is_product_id(value: str) -> bool:
    """API.md's rule for product ids, the one every app applies (paths, bodies, keys)."""
    return PRODUCT_ID_RE.fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def sale_keys(product_id: str) -> SaleKeys:
    """The (immutable) key names of a sale, built once per product: hot paths ask per request.

    The way services get keys: an id that API.md's rule refuses (a control character, a "}"
    that would end the hash tag early and put one sale's keys on another's shard, a "..")
    raises InvalidProductId, before it is cached, so garbage never fills the cache either.
    (``SaleKeys(...)`` itself builds names for any string: tests use it to look for keys a
    refused id must not have written.)"""
    if not is_product_id(product_id):
        raise InvalidProductId(f"{product_id!r} is not a product id")
    return SaleKeys(product_id)


class SaleKeys:
    """The key names of one sale; all carry the hash tag ``{product_id}``."""

    __slots__ = (
        "admitted",
        "base",
        "bought",
        "fate",
        "idem",
        "line",
        "open_lock",
        "orders",
        "pending",
        "product_id",
        "rate_log",
        "sale",
        "seen",
        "seq",
        "stock",
        "tokens",
        "unpicked",
    )

    def __init__(self, product_id: str) -> None:
        base = f"fs:{{{product_id}}}"
        self.product_id = product_id
        self.sale = f"{base}:sale"  # hash: config and state
        self.seq = f"{base}:seq"  # INCR counter: join order
        # zset visitor -> slot (join seq, or draw rank for early joiners) + when it last
        # asked, as a fraction of the slot (lib.lua: one member per waiting visitor, no more)
        self.line = f"{base}:line"
        self.seen = f"{base}:seen"  # zset visitor -> last asked, ms: the quiet ones only
        self.admitted = f"{base}:admitted"  # zset visitor -> access token expiry, ms
        self.unpicked = f"{base}:unpicked"  # zset visitor -> pickup deadline, ms
        self.tokens = f"{base}:tokens"  # hash visitor -> minted access token
        self.fate = f"{base}:fate"  # hash visitor -> why the place ended (lost|expired|left)
        self.stock = f"{base}:stock"  # string: units left
        self.rate_log = f"{base}:ratelog"  # zset "tick:count" -> tick time, ms
        self.open_lock = f"{base}:openlock"  # SET NX: one scheduler runs the opening draw
        self.bought = f"{base}:bought"  # hash visitor -> units held by its live orders
        self.orders = f"{base}:orders"  # hash order_id -> reservation record (JSON)
        self.idem = f"{base}:idem"  # hash "visitor:Idempotency-Key" -> order_id
        self.pending = f"{base}:pending"  # zset order_id -> reserved at, ms; until stored in PG
        # KEYS 1-9 of every sale script, in lib.lua's order.
        self.base = (
            self.sale,
            self.seq,
            self.line,
            self.seen,
            self.admitted,
            self.unpicked,
            self.tokens,
            self.fate,
            self.stock,
        )

    def tick(self, n: int) -> str:
        return f"fs:{{{self.product_id}}}:tick:{n}"

    def opening_tick(self, n: int) -> str:
        """The claim of tick n run again by the scheduler that opened the sale in it."""
        return f"fs:{{{self.product_id}}}:tick:{n}:opened"

    def join_rate(self, client_ip: str) -> str:
        return f"fs:{{{self.product_id}}}:rl:{client_ip}"

    def visitor_rate(self, visitor_id: str) -> str:
        return f"fs:{{{self.product_id}}}:vrl:{visitor_id}"

    def order_keys(self) -> list[str]:
        """KEYS 10-13 of the order scripts."""
        return [self.bought, self.orders, self.idem, self.pending]

    def all_data(self) -> list[str]:
        """Keys that hold a sale's data (tick and rate-limit keys expire on their own)."""
        return [*self.base, self.rate_log, self.open_lock, *self.order_keys()]
