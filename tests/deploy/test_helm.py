"""infra/helm/flashsale, without a cluster.

Rendered by Helm's own template engine where it is available: the `helm` binary (`helm
template`), else the `helm-python-sdk` package (Helm's Go SDK as a C library, rendering offline).
Without either those tests skip, and the structural ones below still run: they read the
templates' text, which needs nothing but PyYAML.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tempfile
from typing import Any

import pytest
import yaml

from tests.deploy.common import (
    APPS,
    CHART_DIR,
    TEST_ADMIN_KEY,
    TEST_SECRET_KEYS,
    TOPICS,
    load_yaml,
    module_exists,
    port_of,
    process_problems,
    python_module,
    unknown_flashsale_vars,
)

TEMPLATES = sorted((CHART_DIR / "templates").glob("*.yaml")) + sorted(
    (CHART_DIR / "templates").glob("*.tpl")
)
VALUES = load_yaml(CHART_DIR / "values.yaml")
TEST_VALUES: dict[str, Any] = {
    "secrets": {
        "secretKeys": TEST_SECRET_KEYS,
        "adminKey": TEST_ADMIN_KEY,
        "redisUrl": "redis://:pw@redis-master:6379/0",
        "databaseUrl": "postgresql://flashsale:pw@postgres:5432/flashsale",
    },
    "kafka": {"bootstrap": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "config": {"publicGateUrl": "https://shop.example", "publicQueueUrl": "https://queue.example"},
}
HOOKED = "pre-install,pre-upgrade"


class RenderError(Exception):
    pass


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def renderer() -> Any:
    """A function (values, release name) -> manifests, from Helm itself; None without it."""
    helm = shutil.which("helm")
    if helm:

        def with_binary(values: dict[str, Any], release: str) -> list[dict[str, Any]]:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                yaml.safe_dump(values, f)
                f.flush()
                done = subprocess.run(
                    [helm, "template", release, str(CHART_DIR), "-f", f.name, "-n", "shop"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            if done.returncode != 0:
                raise RenderError(done.stderr)
            return [d for d in yaml.safe_load_all(done.stdout) if d]

        return with_binary
    try:
        import helm_python
    except ImportError:
        return None

    def with_sdk(values: dict[str, Any], release: str) -> list[dict[str, Any]]:
        chart = helm_python.Chart.load(str(CHART_DIR))
        try:
            out = chart.render(values, name=release, namespace="shop", is_install=True)
        except helm_python.HelmError as exc:
            raise RenderError(str(exc)) from None
        docs: list[dict[str, Any]] = []
        for path, text in out.items():
            if path.endswith(".yaml"):
                docs += [d for d in yaml.safe_load_all(text) if d]
        return docs

    return with_sdk


@pytest.fixture(scope="module")
def render() -> Any:
    fn = renderer()
    if fn is None:
        pytest.skip(
            "helm is not installed (no `helm` binary, no `pip install helm-python-sdk`): "
            "the chart was not rendered; the structural checks still ran"
        )
    return fn


# --- checks on the rendered manifests -----------------------------------------------------------


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's environment as the pod would see it, secrets resolved."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        data = secrets.get(ref["name"])
        if data is None or ref["key"] not in data:
            raise AssertionError(f"{item['name']}: no key {ref['key']} in Secret {ref['name']}")
        env[item["name"]] = data[ref["key"]]
    return env


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def manifest_problems(
    docs: list[dict[str, Any]], external: dict[str, dict[str, str]] | None = None
) -> list[str]:
    """What is wrong with a rendered chart; `external`: the Secrets an operator made."""
    problems: list[str] = []
    secrets = {n: s.get("stringData", {}) for n, s in _kind(docs, "Secret").items()}
    secrets.update(external or {})
    deployments = _kind(docs, "Deployment")
    modules: dict[str, str] = {}
    pods = [(n, d["spec"]["template"]) for n, d in deployments.items()]
    pods += [(n, j["spec"]["template"]) for n, j in _kind(docs, "Job").items()]
    for name, pod in pods:
        spec = pod["spec"]
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{name}: Service links on (FLASHSALE_*_PORT=tcp://... injected)")
        if not (spec.get("securityContext") or {}).get("runAsNonRoot"):
            problems.append(f"{name}: runAsNonRoot is not set")
        for c in spec["containers"]:
            module = python_module(c.get("command"))
            if module is None:
                continue
            modules[module] = name
            env = _env(c, secrets)
            mistakes = process_problems(name, module, env)
            problems += mistakes
            port = None if mistakes else port_of(module, env)
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if port is not None and ports.get("http") != port:
                problems.append(f"{name}: containerPort {ports.get('http')}, listens on {port}")
            for probe in ("livenessProbe", "readinessProbe") if port is not None else ():
                get = (c.get(probe) or {}).get("httpGet", {})
                if get.get("path") != "/healthz" or get.get("port") not in ("http", port):
                    problems.append(f"{name}: no {probe} on /healthz")
    if missing := (APPS | {"shop.migrate"}) - set(modules):
        problems.append(f"nothing runs {sorted(missing)}")
    containers = [
        c for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]
    ]
    shop_urls = {
        e["value"]
        for c in containers
        for e in c.get("env", [])
        if e["name"] == "FLASHSALE_SHOP_URL"
    }
    shop_url = shop_urls.pop() if len(shop_urls) == 1 else ""
    services = _kind(docs, "Service")
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    if shop_url.split("//")[-1].split(":")[0] not in services:
        problems.append(f"FLASHSALE_SHOP_URL {shop_url} names no Service of the chart")
    for name, svc in services.items():
        sel = svc["spec"]["selector"]
        if not any(_matches(sel, labels) for labels in pod_labels):
            problems.append(f"Service {name} selects no Deployment's pods")
    hpas = _kind(docs, "HorizontalPodAutoscaler")
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if hpa["apiVersion"] != "autoscaling/v2" or target not in deployments:
            problems.append(f"HPA {name}: not autoscaling/v2 on a Deployment of the chart")
        elif "replicas" in deployments[target]["spec"]:
            problems.append(f"{target}: sets replicas although an HPA scales it")
        metrics = hpa["spec"].get("metrics", [])
        if not any(m.get("resource", {}).get("name") == "cpu" for m in metrics):
            problems.append(f"HPA {name}: not on CPU")
    for name, pdb in _kind(docs, "PodDisruptionBudget").items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(_matches(sel, labels) for labels in pod_labels):
            problems.append(f"PDB {name} selects no Deployment's pods")
    weights = {}
    for kind in ("Job", "Secret"):
        for name, doc in _kind(docs, kind).items():
            notes = doc["metadata"].get("annotations", {})
            if notes.get("helm.sh/hook") != HOOKED:
                problems.append(f"{kind} {name}: not a {HOOKED} hook")
            weights[kind, name] = int(notes.get("helm.sh/hook-weight", "0"))
    jobs = _kind(docs, "Job")
    if secret_weights := [w for (k, _), w in weights.items() if k == "Secret"]:
        if any(w <= max(secret_weights) for (k, _), w in weights.items() if k == "Job"):
            problems.append("a Job hook runs before the Secret it reads exists")
    for name, job in jobs.items():
        text = yaml.safe_dump(job)
        if "kafka-topics.sh" in text:
            container = job["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
            if set(env.get("TOPICS", "").split()) != TOPICS:
                problems.append(f"{name}: creates {env.get('TOPICS')!r}, not {sorted(TOPICS)}")
    return problems


SECRET_DATA = {
    "FLASHSALE_SECRET_KEYS": TEST_SECRET_KEYS,
    "FLASHSALE_ADMIN_KEY": TEST_ADMIN_KEY,
    "FLASHSALE_REDIS_URL": "redis+cluster://:pw@redis-cluster:6379",
    "FLASHSALE_DATABASE_URL": "postgresql://flashsale:pw@postgres:5432/flashsale",
}


# --- rendered by Helm ---------------------------------------------------------------------------


def test_chart_renders_a_sound_release(render: Any) -> None:
    docs = render(TEST_VALUES, "rel")
    assert manifest_problems(docs) == []
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 5 and kinds.count("HorizontalPodAutoscaler") == 2
    assert kinds.count("Service") == 4 and kinds.count("PodDisruptionBudget") == 5
    assert kinds.count("Job") == 2 and kinds.count("Secret") == 1
    scaled = _kind(docs, "HorizontalPodAutoscaler").values()
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in scaled}
    assert hpas == {"rel-flashsale-queue-server", "rel-flashsale-token-gate"}


def test_every_pod_with_a_port_is_scraped_on_it(render: Any) -> None:
    """The prometheus.io annotations name each process's own port, the worker's included;
    turned off, they are gone."""
    docs = render(TEST_VALUES, "rel")
    scraped = {}
    for name, deployment in _kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]
        notes = pod["metadata"].get("annotations") or {}
        port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert notes.get("prometheus.io/scrape") == "true", name
        assert notes["prometheus.io/port"] == str(port), name
        assert notes["prometheus.io/path"] == "/metrics", name
        scraped[name] = port
    assert scraped["rel-flashsale-worker"] == 8004
    assert len(scraped) == 5
    quiet = render(_merge(TEST_VALUES, {"metrics": {"scrapeAnnotations": False}}), "rel")
    for deployment in _kind(quiet, "Deployment").values():
        notes = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        assert "prometheus.io/scrape" not in notes


def test_release_named_like_the_chart(render: Any) -> None:
    # "flashsale" collapses the names to flashsale-shop etc.: the Services' names then match
    # FLASHSALE_SHOP_PORT & co, which is why the pods run without Service links.
    docs = render(TEST_VALUES, "flashsale")
    assert "flashsale-shop" in _kind(docs, "Service")
    assert manifest_problems(docs) == []


def test_existing_secret_and_no_autoscaling(render: Any) -> None:
    values = _merge(TEST_VALUES, {"secrets": {"existingSecret": "ops-made"}})
    values["secrets"].update(secretKeys="", adminKey="", redisUrl="", databaseUrl="")
    values = _merge(values, {"queueServer": {"autoscaling": {"enabled": False}, "replicas": 3}})
    docs = render(values, "rel")
    assert _kind(docs, "Secret") == {}
    assert manifest_problems(docs, {"ops-made": SECRET_DATA}) == []
    assert _kind(docs, "Deployment")["rel-flashsale-queue-server"]["spec"]["replicas"] == 3
    assert len(_kind(docs, "HorizontalPodAutoscaler")) == 1


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        (("secrets", "secretKeys"), "secrets.secretKeys is required"),
        (("secrets", "adminKey"), "secrets.adminKey is required"),
        (("secrets", "databaseUrl"), "secrets.databaseUrl is required"),
        (("kafka", "bootstrap"), "kafka.bootstrap is required"),
    ],
)
def test_chart_refuses_without(render: Any, unset: tuple[str, str], message: str) -> None:
    values = _merge(TEST_VALUES, {unset[0]: {unset[1]: ""}})
    with pytest.raises(RenderError, match=re.escape(message)):
        render(values, "rel")


def test_the_rendered_checks_can_fail(render: Any) -> None:
    docs = render(TEST_VALUES, "rel")
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    gate = by_name["rel-flashsale-token-gate"]["spec"]["template"]["spec"]
    gate["enableServiceLinks"] = True
    gate["containers"][0]["ports"][0]["containerPort"] = 9000
    worker = by_name["rel-flashsale-worker"]["spec"]["template"]["spec"]["containers"][0]
    worker["env"].append({"name": "FLASHSALE_DEV", "value": "1"})
    by_name["rel-flashsale-queue-server"]["spec"]["replicas"] = 2
    found = "\n".join(manifest_problems(docs))
    assert "rel-flashsale-token-gate: Service links on" in found
    assert "rel-flashsale-token-gate: containerPort 9000, listens on 8000" in found
    assert "rel-flashsale-worker: runs in dev mode" in found
    assert "sets replicas although an HPA scales it" in found


# --- structural: the templates' text, with no renderer ------------------------------------------

VALUES_RE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
INCLUDE_RE = re.compile(r'(?:include|template) "([^"]+)"')
DEFINE_RE = re.compile(r'define "([^"]+)"')
# The component lists in the templates: (dict "component" ... "values" .Values.<key>).
COMPONENT_RE = re.compile(r'"values" \.Values\.([A-Za-z]+)\)')


def _lookup(values: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def test_every_values_reference_exists() -> None:
    missing = []
    for template in TEMPLATES:
        for ref in VALUES_RE.findall(template.read_text()):
            if not _lookup(VALUES, ref.strip(".").split(".")):
                missing.append(f"{template.name}: .Values{ref}")
    assert missing == []


def test_component_keys_used_by_the_helpers_exist() -> None:
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    # $v.key / .values.key inside the helpers, except where guarded by (and $v.key ...).
    used = set(re.findall(r"(?:\$v|\.values)\.([A-Za-z_]+)", helpers))
    used -= set(re.findall(r"\(and \$v\.([A-Za-z_]+)", helpers))
    components: set[str] = set()
    for template in TEMPLATES:
        components |= set(COMPONENT_RE.findall(template.read_text()))
    assert {"queueServer", "tokenGate", "shop", "scheduler", "worker"} <= components
    missing = [f"{c}.{k}" for c in sorted(components) for k in sorted(used) if k not in VALUES[c]]
    assert missing == []


def test_every_include_is_defined() -> None:
    defined: set[str] = set()
    used: set[str] = set()
    for template in TEMPLATES:
        text = template.read_text()
        defined |= set(DEFINE_RE.findall(text))
        used |= set(INCLUDE_RE.findall(text))
    assert used - defined == set()


def test_templates_name_only_real_settings_and_processes() -> None:
    text = "\n".join(t.read_text() for t in TEMPLATES) + (CHART_DIR / "values.yaml").read_text()
    assert unknown_flashsale_vars(text) == set()
    modules = set(re.findall(r'"module" "([a-z_.]+)"', text))
    modules |= set(re.findall(r'"-m", "([a-z_.]+)"', text))
    assert modules == APPS | {"shop.migrate"}
    assert all(module_exists(m) for m in modules)
    given = (*SECRET_DATA, "FLASHSALE_KAFKA_BOOTSTRAP", "FLASHSALE_HOST")
    for var in given:
        assert var in text, f"the pods are not given {var}"


def test_values_topics_are_the_platforms() -> None:
    assert set(VALUES["kafka"]["topics"]["names"]) == TOPICS


def test_values_ports_are_distinct() -> None:
    ports = [VALUES[c]["port"] for c in ("queueServer", "tokenGate", "shop", "scheduler", "worker")]
    assert len(set(ports)) == len(ports)


def test_structural_checks_can_fail() -> None:
    bad = '{{ .Values.secrets.nope }} {{ include "flashsale.nowhere" . }} FLASHSALE_SHOP_ULR'
    assert VALUES_RE.findall(bad) == [".secrets.nope"]
    assert not _lookup(VALUES, ["secrets", "nope"])
    assert INCLUDE_RE.findall(bad) == ["flashsale.nowhere"]
    assert unknown_flashsale_vars(bad) == {"FLASHSALE_SHOP_ULR"}


def test_chart_lints(render: Any) -> None:
    """`helm lint --strict`: what Helm itself warns about (deprecated APIs, bad YAML, ...)."""
    helm = shutil.which("helm")
    if helm:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(TEST_VALUES, f)
            f.flush()
            done = subprocess.run(
                [helm, "lint", "--strict", str(CHART_DIR), "-f", f.name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        assert done.returncode == 0, done.stdout + done.stderr
        return
    import helm_python

    report = helm_python.lint(str(CHART_DIR), TEST_VALUES, strict=True)
    # Severity 2 is a warning, 3 an error; 1 (info) is the advice to add an icon.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["errors"] == []
