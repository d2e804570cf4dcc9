"""The servers our queue server is compared with, run exactly the way it runs.

    python -m bench.baselines bare    # Starlette hello-world: the ceiling of this stack
    python -m bench.baselines naive   # Starlette awaiting ZADD then ZRANK (ANCHORS.md)

Both take their settings from the environment like every flashsale process and listen on
``FLASHSALE_QUEUE_PORT`` through :func:`infra.web.serve.serve`, so uvicorn's loop, HTTP parser and
limits are the very ones the queue server gets: the ratios measure our code, not a setting.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from infra.settings import Settings
from infra.web.serve import serve

# The naive line lives outside every sale's keys; the bench fills it as long as ours.
NAIVE_LINE_KEY = "bench:naive:line"


def create_bare_app() -> Starlette:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("Hello, world!")

    return Starlette(routes=[Route("/", hello, methods=["GET", "POST"])])


def create_naive_app(redis_url: str) -> Starlette:
    """What a first waiting room looks like: two awaited Redis calls, no script, no pipeline."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(redis_url, decode_responses=True)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    async def join(request: Request) -> Response:
        redis: Redis = request.app.state.redis
        visitor = uuid.uuid4().hex
        # Score = arrival time: FIFO without the INCR a real one would add as a third call.
        await redis.zadd(NAIVE_LINE_KEY, {visitor: time.time()}, nx=True)
        rank = await redis.zrank(NAIVE_LINE_KEY, visitor)
        return JSONResponse({"visitor_id": visitor, "position": rank + 1}, status_code=201)

    return Starlette(routes=[Route("/join", join, methods=["POST"])], lifespan=lifespan)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in ("bare", "naive"):
        raise SystemExit("usage: python -m bench.baselines bare|naive")
    settings = Settings.from_env()
    app = create_bare_app() if argv[0] == "bare" else create_naive_app(settings.redis_url)
    serve(app, settings, settings.queue_port)


if __name__ == "__main__":
    main(sys.argv[1:])
