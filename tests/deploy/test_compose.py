"""docker-compose.yml: valid against the compose-spec schema (as vendored by check-jsonschema), GPU reservation,
healthcheck, restart policy, required variables that fail fast, settings the service really has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from service.config import Settings
from tests.deploy.conftest import COMPOSE, DASHBOARD, DEPLOY, REPO, load_yaml, run_tool, venv_tool
from tests.deploy.dockerfile import parse_dockerfile

REQUIRED = {"RESMTNET_MODEL_VERSION", "GRAFANA_ADMIN_PASSWORD", "RESMTNET_API_KEYS_PATH"}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value, env: dict[str, str], errors: list[str]):
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, errors) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and unset:
            errors.append(f"{name}: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return current or ""

    return VARIABLE.sub(one, value)


def resolved(env: dict[str, str]) -> tuple[dict, list[str]]:
    errors: list[str] = []
    return interpolate(load_yaml(COMPOSE), env, errors), errors


def check_compose_schema(path: Path) -> None:
    result = run_tool(venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def compose() -> dict:
    return resolved(dict.fromkeys(REQUIRED, "set"))[0]


def test_compose_file_is_valid_against_the_compose_spec():
    check_compose_schema(COMPOSE)


def test_compose_file_stays_valid_once_variables_are_substituted(compose, tmp_path):
    out = tmp_path / "compose.json"
    out.write_text(json.dumps(compose))
    check_compose_schema(out)


def test_required_variables_fail_fast_with_a_message():
    _, errors = resolved({})
    assert {e.split(":")[0] for e in errors} == REQUIRED
    assert all(len(e.split(":", 1)[1].strip()) > 10 for e in errors), errors
    assert resolved(dict.fromkeys(REQUIRED, "x"))[1] == []


def test_gpu_service_reserves_an_nvidia_gpu_and_requires_cuda(compose):
    service = compose["services"]["resmtnet"]
    assert service["profiles"] == ["gpu"] and service["build"]["target"] == "gpu"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["environment"]["RESMTNET_PROVIDER"] == "cuda"


def test_cpu_profile_runs_the_cpu_image_without_a_gpu(compose):
    service = compose["services"]["resmtnet-cpu"]
    assert service["profiles"] == ["cpu"] and service["build"]["target"] == "cpu"
    assert "deploy" not in service
    assert service["environment"]["RESMTNET_PROVIDER"] == "cpu"


@pytest.mark.parametrize("name", ["resmtnet", "resmtnet-cpu"])
def test_service_requires_api_keys_from_a_secret_file(compose, name):
    service = compose["services"][name]
    assert service["secrets"] == ["resmtnet_api_keys"]
    assert service["environment"]["RESMTNET_API_KEYS_FILE"] == "/run/secrets/resmtnet_api_keys"
    assert compose["secrets"]["resmtnet_api_keys"]["file"] == "set"  # from RESMTNET_API_KEYS_PATH, required


def test_build_targets_exist_in_the_dockerfile(compose):
    stages = {stage.name for stage in parse_dockerfile(REPO / "Dockerfile").stages}
    assert {compose["services"][s]["build"]["target"] for s in ("resmtnet", "resmtnet-cpu")} <= stages


@pytest.mark.parametrize("name", ["resmtnet", "resmtnet-cpu"])
def test_service_has_healthcheck_restart_and_valid_settings(compose, name):
    service = compose["services"][name]
    assert service["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py", "/readyz"]  # serving
    assert service["mem_limit"]
    assert service["healthcheck"]["start_period"] and service["healthcheck"]["retries"] >= 1
    assert service["restart"] in {"always", "unless-stopped"}
    env = service["environment"]
    fields = {f"RESMTNET_{field.upper()}" for field in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings(**{k.removeprefix("RESMTNET_").lower(): v for k, v in env.items()})
    assert str(settings.model_store) == "/models" and settings.model_version == "set"
    mounts = [v.split(":") for v in service["volumes"]]
    assert ["./model_store", "/models", "ro"] in mounts


def test_every_service_restarts_belongs_to_a_profile_and_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        assert service["restart"] == "unless-stopped", name
        assert service["profiles"], f"{name}: without a profile it would start beside both variants"
        assert "healthcheck" in service, name


def test_prometheus_and_grafana_mount_the_provisioned_files(compose):
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = next(c.split("=", 1)[1] for c in prometheus["command"] if c.startswith("--config.file="))
    assert (DEPLOY / "prometheus" / Path(config).relative_to("/etc/prometheus")).is_file()
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "resmtnet.yml")["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "set"


def test_grafana_datasource_points_at_the_compose_prometheus_by_the_uid_the_dashboard_uses(compose):
    source = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    uids = {p["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert uids == {source["uid"]}


def test_prometheus_and_grafana_listen_on_this_host_only_by_default(compose):
    for name in ("prometheus", "grafana"):
        (port,) = compose["services"][name]["ports"]
        assert port.startswith("127.0.0.1:"), (name, port)  # Prometheus has no authentication of its own
