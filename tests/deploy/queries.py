"""Every PromQL query the deployment uses (alert rules, Grafana dashboard, HPA metrics), and a check of each against
the series a live scrape of the service exposes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import promql_parser as promql
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import DASHBOARD, K8S, PROMETHEUS, load_all_yaml, load_yaml

# Series names each metric type puts in the exposition (and so in Prometheus).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
BUILTIN_SERIES = {"up": "gauge"}  # written by Prometheus for every target, not by the service
# attached by Prometheus at scrape time (app_kubernetes_io_name: the pod's label, or prometheus.yml's for compose)
TARGET_LABELS = {"instance", "job", "app_kubernetes_io_name"}
RATE_FUNCTIONS = {"rate", "irate", "increase"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}
LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,)]+)(,\s*\w+)?\)$")


@dataclass(frozen=True)
class Query:
    source: str
    expr: str


def alert_queries() -> list[Query]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [Query(f"alert {rule['alert']}", rule["expr"]) for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[Query]:
    """Panel targets (rows included) and templating queries, Grafana's variables replaced by sample values."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []

    def panels(items: list[dict]):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        queries += [Query(f"panel {panel['title']!r}", target["expr"]) for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"variable {variable['name']}: only label_values(metric, label) is supported here"
            queries.append(Query(f"variable {variable['name']}", match["metric"]))
    for query in queries:
        object.__setattr__(query, "expr", grafana_substitute(query.expr))
    return queries


def grafana_substitute(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def hpa_queries() -> list[Query]:
    queries = []
    for path in K8S.glob("*.yaml"):
        for doc in load_all_yaml(path):
            if doc["kind"] == "HorizontalPodAutoscaler":
                for metric in doc["spec"]["metrics"]:
                    if metric["type"] in ("Pods", "Object", "External"):
                        key = metric["type"][0].lower() + metric["type"][1:]
                        queries.append(Query(f"HPA {doc['metadata']['name']}", metric[key]["metric"]["name"]))
    return queries


def exposed_series(metrics_text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(series name -> metric type, series name -> label names seen on its samples) of one scrape."""
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            types[family.name + suffix] = family.type
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return types, labels


def problems(query: Query, types: dict[str, str], labels: dict[str, set[str]]) -> list[str]:
    """What is wrong with one query against a scrape: unknown series, unknown labels, rate() of a gauge, a
    histogram_quantile that drops `le`."""
    found: list[str] = []
    known = {**BUILTIN_SERIES, **types}

    def visit(node) -> None:
        if isinstance(node, promql.VectorSelector):
            if node.name not in known:
                found.append(f"{query.source}: {node.name} is not exposed by the service")
            elif node.name in labels:
                for matcher in node.matchers.matchers:
                    if matcher.name not in labels[node.name] | TARGET_LABELS | {"__name__"}:
                        found.append(f"{query.source}: {node.name} has no label {matcher.name}")
        elif isinstance(node, promql.Call) and node.func.name in RATE_FUNCTIONS:
            name = node.args[0].vector_selector.name
            if name in known and known[name] not in ("counter", "histogram", "summary"):
                found.append(f"{query.source}: {node.func.name}() of {name}, a {known.get(name)}")
        elif isinstance(node, promql.Call) and node.func.name == "histogram_quantile":
            inner = node.args[1]
            if not (
                isinstance(inner, promql.AggregateExpr) and "le" in (inner.modifier.labels if inner.modifier else [])
            ):
                found.append(f"{query.source}: histogram_quantile over an aggregation that drops le")

    try:
        promql.walk(promql.parse(query.expr), pre_visit=visit)
    except Exception as exc:  # noqa: BLE001 - the parser raises its own error types
        return [f"{query.source}: does not parse: {exc}"]
    return found
