"""X-Request-Id at the gate: the one id that follows a request into the shop and into Kafka.

A client's id is kept when it is one header of 1 to 128 visible ASCII characters (so it can be
logged and echoed without escaping); otherwise the gate makes one (uuid4 hex). The chosen id
replaces the header in the request scope, so whatever the routes forward carries it, and it is
set on every response, the gate's own errors included.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.constants import HEADER_REQUEST_ID, REQUEST_ID_MAX_CHARS

_NAME = HEADER_REQUEST_ID.encode()


def _acceptable(value: bytes) -> bool:
    return 1 <= len(value) <= REQUEST_ID_MAX_CHARS and all(0x21 <= b <= 0x7E for b in value)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = [value for key, value in scope["headers"] if key == _NAME]
        # Two ids are no id: which one would the logs believe?
        chosen = sent[0] if len(sent) == 1 and _acceptable(sent[0]) else uuid.uuid4().hex.encode()
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != _NAME] + [(_NAME, chosen)]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _NAME]
                message = {**message, "headers": [*headers, (_NAME, chosen)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
