"""`python -m scheduler`: how production runs the scheduler (several replicas are safe)."""

from infra.web.serve import main_for

main_for("scheduler.app", "scheduler_port")
