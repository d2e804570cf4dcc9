"""`python -m shop`: how production runs the shop."""

from infra.web.serve import main_for

main_for("shop.app", "shop_port")
