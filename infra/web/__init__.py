"""The HTTP plumbing the apps share (queue_server, scheduler, shop, token_gate, and the order
worker's port).

- ``app``: ``build_app``, ``JSONResponse``, bodies (``read_body``, ``read_json_object``) and
  ``ClientAddress``.
- ``errors``: one exception type per error code of API.md, and the one JSON shape they answer
  with.
- ``middleware``: the header and body limits, and each request's id and trace in the logging
  context.
- ``trace``: X-Request-Id and the W3C traceparent, kept or made, on HTTP and in Kafka headers.
- ``tracing``: OpenTelemetry's spans, imported only when ``FLASHSALE_OTEL`` switches it on.
- ``hotroutes``: the few routes a storm hammers, served around Starlette's stack.
- ``metrics``: ``/metrics`` and the per-request counters.
- ``logs``: JSON-lines logging and the ``request_id`` and ``trace_context`` context variables.
- ``serve``: uvicorn with the platform's limits, and the settings read at a process's edge.
- ``openapi`` (and ``openapi_shop``): the pieces every OpenAPI document is built from.
- ``assets``: the pages' shared files and each service page's own, under ``/assets/``.
- ``pages``: the headers and the Content-Security-Policy of every HTML page.
- ``cookies``: whether a cookie is ``Secure`` (https public URL, TLS, a trusted proxy).

May import the ground floor (``infra.settings``, ``infra.constants``). Never ``infra.sale``,
never ``infra.stack``, never a service package.
"""
