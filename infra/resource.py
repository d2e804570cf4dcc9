"""The lifecycle every resource wrapper shares (DESIGN.md, Conventions): ``start()``, a
``stop()`` that is safe to call twice, and ``async with`` for the pair."""

from __future__ import annotations

from typing import Self


class Resource:
    async def start(self) -> None:
        """Open what the resource owns. Subclasses override."""

    async def stop(self) -> None:
        """Close what the resource owns; safe to call twice. Subclasses override."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
