"""Topics are created with the partitions asked for, once; existing ones are left alone."""

from __future__ import annotations

import secrets

from infra.topics import ensure_topics


async def test_topics_get_their_partitions_once(kafka_bootstrap: str) -> None:
    names = tuple(f"test-topics-{secrets.token_hex(4)}-{i}" for i in range(2))
    assert await ensure_topics(kafka_bootstrap, 3, topics=names) == dict.fromkeys(names, 3)
    # A second start asking for more changes nothing: growing partitions moves keys.
    assert await ensure_topics(kafka_bootstrap, 6, topics=names) == dict.fromkeys(names, 3)
