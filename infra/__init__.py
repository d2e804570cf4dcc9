"""What every flashsale process shares, in three rooms and a ground floor.

- ``settings``, ``constants``, ``redis``, ``autopipeline``, ``resource``: the ground floor.
  Every service and every room may import them; they import nothing else of ours.
- ``infra.sale``: the rules of a sale. Each decision is one Lua script.
- ``infra.web``: the HTTP plumbing the four apps share.
- ``infra.stack``: ``flashsale up``, the embedded servers and the supervisor.

Nothing under ``infra`` imports a service package (``queue_server``, ``scheduler``, ``shop``,
``token_gate``): the services build on ``infra``, never the other way.
"""
