"""Prometheus config and alert rules, checked and unit-tested by promtool (Debian's prometheus package)."""

from __future__ import annotations

import yaml

from tests.deploy.conftest import COMPOSE, K8S, PROMETHEUS, load_yaml, run_tool
from tests.deploy.queries import dashboard_queries, hpa_queries


def test_promtool_accepts_the_config_and_the_rule_files_it_names(promtool):
    result = run_tool(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules(promtool):
    result = run_tool(promtool, "check", "rules", PROMETHEUS / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass(promtool):
    result = run_tool(promtool, "test", "rules", PROMETHEUS / "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_unit_tests_cover_not_ready_and_error_ratio():
    tests = load_yaml(PROMETHEUS / "alerts.test.yml")["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert {"ResMTNetNotReady", "ResMTNetHighErrorRatio"} <= tested


def test_rules_cover_errors_latency_saturation_and_readiness():
    rules = [rule for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {"ResMTNetHighErrorRatio", "ResMTNetHighLatencyP99", "ResMTNetQueueSaturated", "ResMTNetNotReady"} <= names
    assert all(rule["labels"]["severity"] in {"critical", "warning"} for rule in rules)
    assert all({"summary", "description"} <= set(rule["annotations"]) for rule in rules)


def test_scrape_job_reaches_the_compose_service_on_its_port():
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "resmtnet")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["resmtnet:8000"]
    services = load_yaml(COMPOSE)["services"]
    for name in ("resmtnet", "resmtnet-cpu"):  # both profiles answer to the name the job scrapes
        assert "resmtnet" in services[name]["networks"]["default"]["aliases"]
    # the alerts select targets by the label Kubernetes pods carry; the compose target is given it too
    assert job["static_configs"][0]["labels"] == {"app_kubernetes_io_name": "resmtnet-serve"}
    pod_labels = load_yaml(K8S / "20-deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == "resmtnet-serve"
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    assert 'up{app_kubernetes_io_name="resmtnet-serve"}' in alerts


def test_promtool_parses_every_dashboard_and_hpa_query(promtool, tmp_path):
    queries = dashboard_queries() + hpa_queries()
    rules = [{"record": f"dashboard:query_{i}", "expr": query.expr} for i, query in enumerate(queries)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout + result.stderr
