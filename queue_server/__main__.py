"""`python -m queue_server`: how production runs the queue server."""

from infra.web.serve import main_for

main_for("queue_server.app", "queue_port")
