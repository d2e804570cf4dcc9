"""The order worker stores several batches at once; its offsets must still be committed in
fetch order, never past a batch that is not stored yet."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from shop.consumer import CommitLine

TP0, TP1 = TopicPartition("order.placed", 0), TopicPartition("order.placed", 1)


async def _stored_after(delay_s: float, log: list[int], n: int) -> None:
    await asyncio.sleep(delay_s)
    log.append(n)


@settings(max_examples=30, deadline=None)
@given(delays=st.lists(st.floats(min_value=0, max_value=0.01), min_size=1, max_size=12))
async def test_offsets_follow_fetch_order_whatever_order_batches_finish_in(
    delays: list[float],
) -> None:
    line, finished = CommitLine(), list[int]()
    for n, delay in enumerate(delays):
        # Batch n ends at offset 10 * (n + 1) on partition 0; odd ones also carry partition 1.
        offsets = {TP0: 10 * (n + 1)} | ({TP1: n + 1} if n % 2 else {})
        line.add(asyncio.create_task(_stored_after(delay, finished, n)), offsets)
    committed: list[dict[TopicPartition, int]] = []
    while line:
        await asyncio.sleep(random.uniform(0, 0.004))
        if offsets := line.stored():
            committed.append(offsets)
            upto = offsets[TP0] // 10  # batches 0 .. upto-1 are claimed stored
            assert set(range(upto)) <= set(finished), "an offset passed an unstored batch"
    assert committed[-1][TP0] == 10 * len(delays)
    assert [c[TP0] for c in committed] == sorted(c[TP0] for c in committed)
    odd = [n for n in range(len(delays)) if n % 2]
    assert max((c.get(TP1, 0) for c in committed), default=0) == (odd[-1] + 1 if odd else 0)


async def test_a_failed_batch_stops_the_commits_at_it() -> None:
    line = CommitLine()

    async def fails() -> None:
        raise RuntimeError("database said no")

    line.add(asyncio.create_task(asyncio.sleep(0)), {TP0: 10})
    line.add(asyncio.create_task(fails()), {TP0: 20})
    line.add(asyncio.create_task(asyncio.sleep(0)), {TP0: 30})
    await asyncio.sleep(0.01)
    # The worker ends on it (and restarts): nothing from the failed batch on is committed,
    # and the batch before it is simply delivered again (the insert is idempotent).
    with pytest.raises(RuntimeError, match="said no"):
        line.stored()
    await line.cancel()
    assert len(line) == 0


async def test_cancel_stops_every_batch_in_flight() -> None:
    line = CommitLine()
    tasks = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    for i, task in enumerate(tasks):
        line.add(task, {TP0: i + 1})
    await line.cancel()
    assert all(task.cancelled() for task in tasks)
    assert line.stored() == {}
