"""`python -m token_gate`: how production runs the gate."""

from infra.web.serve import main_for

main_for("token_gate.app", "gate_port")
