"""The platform's Kafka topics, created before anything produces to them.

A broker that creates a topic on first use (Kafka's ``auto.create.topics.enable``, tansu) gives
it its default partition count: one, on a stock Kafka, and one partition means one order worker
at a time, however many run. ``ensure_topics`` creates every topic with the partitions the
settings ask for (``FLASHSALE_KAFKA_PARTITIONS``) and leaves existing ones as they are: a
topic's partitions can only grow, and growing them moves keys between partitions, which is an
operator's decision (``kafka-topics --alter``), not a start-up's.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.constants import (
    TOPIC_ORDER_CANCELLED,
    TOPIC_ORDER_DLQ,
    TOPIC_ORDER_PAID,
    TOPIC_ORDER_PLACED,
)

TOPICS = (TOPIC_ORDER_PLACED, TOPIC_ORDER_PAID, TOPIC_ORDER_CANCELLED, TOPIC_ORDER_DLQ)
TIMEOUT_MS = 10_000


async def ensure_topics(
    bootstrap: str, partitions: int, replication: int = 1, topics: tuple[str, ...] = TOPICS
) -> dict[str, int]:
    """Creates what is missing; returns each topic's partition count as the broker has it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [
                NewTopic(t, num_partitions=partitions, replication_factor=replication)
                for t in missing
            ]
            try:
                await admin.create_topics(new, timeout_ms=TIMEOUT_MS)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile: as good
        described = await admin.describe_topics(list(topics))
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()
