"""infra/prometheus and infra/grafana: the scrape config, the alert rules and the dashboard.

With promtool on PATH (Debian's `prometheus` package), the config and the rules go through
`promtool check`, and every alert through `promtool test rules` on made-up series: it fires
when it should and stays quiet when it should not. Without promtool, those tests skip and the
YAML's structure is still checked. That the names in the rules and the dashboard exist in a
real scrape is tests/ops/test_sale_metrics.py's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "alerts.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "flashsale.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)
# The six questions, each an alert (plus a target that cannot be scraped).
ALERTS = {
    "FlashsaleDeadLetters",
    "FlashsaleConsumerLagGrowing",
    "FlashsaleLineNotMoving",
    "FlashsaleHighErrorRate",
    "FlashsaleReconcilerRepublishing",
    "FlashsaleCircuitOpen",
    "FlashsaleTargetDown",
}
ROWS = ["Line", "Admissions", "Gate", "Orders", "Kafka"]
DURATION = re.compile(r"^(\d+[smhd])+$")


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_every_alert_has_its_expression_duration_severity_and_words() -> None:
    found = rules()
    assert {r["alert"] for r in found} == ALERTS
    for rule in found:
        name = rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
        assert DURATION.match(str(rule["for"])), (name, rule.get("for"))
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"]) > 40, name
        expr = rule["expr"]
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), (name, opening)
        assert expr.count('"') % 2 == 0, name


def test_the_scrape_config_names_each_process_on_its_default_port() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    defaults = Settings()
    assert targets == {
        "flashsale-gate": [f"127.0.0.1:{defaults.gate_port}"],
        "flashsale-queue": [f"127.0.0.1:{defaults.queue_port}"],
        "flashsale-shop": [f"127.0.0.1:{defaults.shop_port}"],
        "flashsale-scheduler": [f"127.0.0.1:{defaults.scheduler_port}"],
        "flashsale-worker": [f"127.0.0.1:{defaults.worker_port}"],
    }
    # The jobs the rules name are the jobs scraped.
    for rule in rules():
        for job in re.findall(r'job=~?"([^"]+)"', rule["expr"]):
            assert any(re.fullmatch(job, name) for name in targets), (rule["alert"], job)


def test_the_dashboard_has_a_row_per_concern_on_a_chosen_prometheus() -> None:
    model = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert [p["title"] for p in model["panels"] if p["type"] == "row"] == ROWS
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    row = None
    per_row: dict[str, int] = {}
    for panel in model["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
        per_row[str(row)] = per_row.get(str(row), 0) + 1
    assert set(per_row) == set(ROWS) and min(per_row.values()) >= 3, per_row


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    for args in (["check", "config", str(CONFIG)], ["check", "rules", str(RULES)]):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_queries_of_the_dashboard_parse() -> None:
    # promtool has no "check query"; a rule file of recording rules parses each expression.
    exprs = sorted(set(dashboard_exprs()))
    group = {
        "name": "dashboard",
        "rules": [{"record": f"d:{i}", "expr": e} for i, e in enumerate(exprs)],
    }
    path = PROMETHEUS_DIR.parent.parent / ".flashsale-dashboard-rules.yml"
    try:
        path.write_text(yaml.safe_dump({"groups": [group]}))
        done = subprocess.run(
            [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
    finally:
        path.unlink(missing_ok=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _annotations(alert: str, labels: dict[str, str], value: str) -> dict[str, str]:
    """The annotations promtool will render for `alert` (the templates the rules use)."""
    rule = next(r for r in rules() if r["alert"] == alert)
    rendered = {}
    for key, template in rule["annotations"].items():
        if "humanizePercentage" in template:
            percent = f"{float(value) * 100:g}%"
            template = template.replace("{{ $value | humanizePercentage }}", percent)
        text = template
        text = text.replace("{{ $value }}", value)
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)
        rendered[key] = text
    return rendered


def _case(
    alert: str, series: dict[str, str], at: str, fires: list[tuple[dict[str, str], str]]
) -> dict[str, Any]:
    severity = next(r for r in rules() if r["alert"] == alert)["labels"]["severity"]
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": alert,
                "exp_alerts": [
                    {
                        "exp_labels": {**labels, "severity": severity},
                        "exp_annotations": _annotations(alert, labels, value),
                    }
                    for labels, value in fires
                ],
            }
        ],
    }


def series(name: str, **labels: str) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


W = {"job": "flashsale-worker", "instance": "w:8004"}
S = {"job": "flashsale-scheduler", "instance": "s:8003"}
GATE = {"job": "flashsale-gate", "instance": "g:8000", "method": "POST"}
REQUESTS = "flashsale_gate_http_requests_total"
ORDERS = "/products/{product_id}/orders"
LAG = "flashsale_worker_kafka_consumer_lag"
TOPIC = {"topic": "order.placed"}
BREAKER = "flashsale_gate_upstream_breaker_state"
FLAPPING = " ".join(["1 0"] * 6)
CASES = [
    # Three dead letters for a minute and more: it fires. None: quiet.
    _case(
        "FlashsaleDeadLetters",
        {series("flashsale_worker_dlq_size", **W): "0 0 3x10"},
        "6m",
        [({}, "3")],
    ),
    _case("FlashsaleDeadLetters", {series("flashsale_worker_dlq_size", **W): "0x10"}, "6m", []),
    # Lag that grows for 25 minutes fires; lag that stays (orders waiting, but drained as fast
    # as they come) does not.
    _case(
        "FlashsaleConsumerLagGrowing",
        {
            series(LAG, **W, **TOPIC, partition="0"): "0+100x30",
            series(LAG, **W, **TOPIC, partition="1"): "0+50x30",
        },
        "25m",
        [({}, "3750")],
    ),
    _case(
        "FlashsaleConsumerLagGrowing",
        {series(LAG, **W, **TOPIC, partition="0"): "500x30"},
        "25m",
        [],
    ),
    # p: open, 50 waiting, no admission for 15 minutes: fires. q: the same, but sold out
    # (not open). r: open and admitting.
    _case(
        "FlashsaleLineNotMoving",
        {
            series("flashsale_scheduler_line_length", **S, product="p"): "50x20",
            series("flashsale_scheduler_sale_state", **S, product="p", state="open"): "1x20",
            series("flashsale_scheduler_admissions_total", **S, product="p"): "100x20",
            series("flashsale_scheduler_line_length", **S, product="q"): "50x20",
            series("flashsale_scheduler_sale_state", **S, product="q", state="open"): "0x20",
            series("flashsale_scheduler_admissions_total", **S, product="q"): "100x20",
            series("flashsale_scheduler_line_length", **S, product="r"): "50x20",
            series("flashsale_scheduler_sale_state", **S, product="r", state="open"): "1x20",
            series("flashsale_scheduler_admissions_total", **S, product="r"): "0+60x20",
        },
        "15m",
        [({"product": "p"}, "50")],
    ),
    # The gate: half its answers 503; the queue: none.
    _case(
        "FlashsaleHighErrorRate",
        {
            series(REQUESTS, **GATE, route=ORDERS, status="503"): "0+60x20",
            series(REQUESTS, **GATE, route=ORDERS, status="202"): "0+60x20",
            series(
                "flashsale_queue_http_requests_total",
                job="flashsale-queue",
                instance="q:8001",
                route="/queue",
                status="200",
            ): "0+600x20",
        },
        "15m",
        [({"job": "flashsale-gate"}, "0.5")],
    ),
    _case(
        "FlashsaleReconcilerRepublishing",
        {
            series("flashsale_worker_orders_republished_total", **W): "0 0 0 4x10",
            series("flashsale_worker_orders_recovered_total", **W): "0x13",
        },
        "5m",
        [({}, "")],
    ),
    _case(
        "FlashsaleReconcilerRepublishing",
        {
            series("flashsale_worker_orders_republished_total", **W): "7x20",
            series("flashsale_worker_orders_recovered_total", **W): "2x20",
        },
        "15m",
        [],
    ),
    # One gate's breaker has not closed for minutes; another's flaps back closed.
    _case(
        "FlashsaleCircuitOpen",
        {
            series(BREAKER, job="flashsale-gate", instance="g1:8000", state="closed"): "1 1 0x10",
            series(BREAKER, job="flashsale-gate", instance="g2:8000", state="closed"): FLAPPING,
        },
        "8m",
        [({"job": "flashsale-gate", "instance": "g1:8000", "state": "closed"}, "0")],
    ),
    _case(
        "FlashsaleTargetDown",
        {series("up", **W): "1 0x10", series("up", job="other", instance="o:1"): "0x10"},
        "5m",
        [({"job": "flashsale-worker", "instance": "w:8004"}, "0")],
    ),
]


@needs_promtool
def test_each_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    # The reconciler's summary has no $value: its expected annotations need none.
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": CASES}
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {c["alert_rule_test"][0]["alertname"] for c in CASES} == ALERTS
