"""The migrations build exactly the schema the code declares (shop/models.py and
shop/webhook_tables.py): a table, column or index in one and not the other is a test failure,
not a surprise on an operator's first upgrade."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

import shop.webhook_tables  # noqa: F401 (its tables join the metadata)
from shop.models import metadata


async def test_the_migrated_schema_is_the_declared_one(migrated_database_url: str) -> None:
    engine = create_async_engine(migrated_database_url)  # at head, as flashsale up leaves it
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []
