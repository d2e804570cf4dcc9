"""The operator's tools: ``flashsale up`` runs the whole platform on one machine.

(Containers: ``infra/docker-compose.yml``, the root ``Dockerfile`` and ``infra/helm/``.)

- ``cli``: the ``flashsale`` command.
- ``embedded``: Valkey, PostgreSQL and tansu from PyPI wheels, for when no URL is given.
- ``supervisor``: starts children, restarts the ones that die, stops them in order.

May import the ground floor and ``infra.web`` (logging). Nothing else under ``infra`` imports
this room. It starts the services as processes (``python -m queue_server``, ``python -m
shop.migrate``, ...) and never imports them.
"""
