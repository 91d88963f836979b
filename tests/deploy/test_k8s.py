"""deploy/k8s: valid against the Kubernetes schemas kubernetes-validate ships (strict), and wired together."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from service.config import Settings
from tests.deploy.conftest import COMPOSE, K8S, REPO, load_all_yaml, load_yaml, run_tool, venv_tool
from tests.deploy.dockerfile import parse_dockerfile

KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path != KUSTOMIZATION)


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    """Every resource by kind (one of each here)."""
    found = [doc for path in MANIFESTS for doc in load_all_yaml(path)]
    by_kind = {doc["kind"]: doc for doc in found}
    assert len(by_kind) == len(found), "one resource of each kind expected"
    return by_kind


def pod_spec(resources: dict[str, dict]) -> dict:
    return resources["Deployment"]["spec"]["template"]["spec"]


def container(resources: dict[str, dict]) -> dict:
    (only,) = pod_spec(resources)["containers"]
    return only


# The oldest Kubernetes release still common in managed clusters, and the newest the validator knows.
@pytest.mark.parametrize("kubernetes", ["1.29.0", "1.37.0"])
def test_manifests_are_valid_kubernetes_resources(kubernetes):
    result = run_tool(venv_tool("kubernetes-validate"), "--strict", "-k", kubernetes, *MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(MANIFESTS)


def test_the_expected_resources_apply_in_file_order(resources):
    kinds = {doc["kind"]: doc["apiVersion"] for doc in resources.values()}
    assert kinds == {
        "Namespace": "v1",
        "ConfigMap": "v1",
        "Deployment": "apps/v1",
        "Service": "v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodDisruptionBudget": "policy/v1",
        "NetworkPolicy": "networking.k8s.io/v1",
    }
    assert load_all_yaml(MANIFESTS[0])[0]["kind"] == "Namespace", "the namespace comes first"
    namespace = resources["Namespace"]["metadata"]["name"]
    assert all(doc["metadata"].get("namespace") == namespace for kind, doc in resources.items() if kind != "Namespace")


def test_deployment_requests_one_gpu(resources):
    limits, requests = container(resources)["resources"]["limits"], container(resources)["resources"]["requests"]
    assert str(limits["nvidia.com/gpu"]) == str(requests["nvidia.com/gpu"]) == "1"
    assert "cpu" in requests and limits["memory"] == requests["memory"]  # not the first evicted under pressure
    limit_gib = int(limits["memory"].removesuffix("Gi"))
    settings = resources["ConfigMap"]["data"]
    assert int(settings["RESMTNET_MAX_INFLIGHT_BYTES"]) <= (limit_gib << 30) // 8  # bodies: a share of the limit
    tolerated = {t["key"] for t in pod_spec(resources)["tolerations"]}
    assert "nvidia.com/gpu" in tolerated


def test_probes_use_healthz_for_liveness_and_readyz_for_readiness_on_the_serving_port(resources):
    c = container(resources)
    (port,) = c["ports"]
    assert port["containerPort"] == Settings.model_fields["port"].default
    probes = {kind: c[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert all(probe["port"] == port["name"] for probe in probes.values())
    startup = c["startupProbe"]
    allowed_s = startup["periodSeconds"] * startup["failureThreshold"]
    assert allowed_s >= 120, "time to load and warm the model"
    (down,) = [r for g in load_yaml(K8S.parent / "prometheus" / "alerts.yml")["groups"] for r in g["rules"]
               if r["alert"] == "ResMTNetDown"]  # fmt: skip
    assert int(down["for"].removesuffix("m")) * 60 >= allowed_s, "a pod still starting must not page anyone"
    grace = pod_spec(resources)["terminationGracePeriodSeconds"]
    assert grace > 30 + 5, "uvicorn's 30 s graceful shutdown after the 5 s preStop pause"


def test_service_hpa_and_pdb_select_the_deployments_pods(resources):
    labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict) -> bool:
        return selector.items() <= labels.items()

    assert selects(resources["Deployment"]["spec"]["selector"]["matchLabels"])
    assert selects(resources["Service"]["spec"]["selector"])
    assert selects(resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    (port,) = resources["Service"]["spec"]["ports"]
    assert port["targetPort"] == container(resources)["ports"][0]["name"]
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        resources["Deployment"]["metadata"]["name"],
    )
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert hpa["minReplicas"] > pdb["maxUnavailable"], "a drain must never take every replica"
    assert "replicas" not in resources["Deployment"]["spec"], "the HPA owns the count; re-applying must not reset it"
    assert hpa["minReplicas"] >= 2


def test_configmap_holds_real_settings_and_feeds_the_container(resources):
    config = resources["ConfigMap"]
    data = config["data"]
    fields = {f"RESMTNET_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, set(data) - fields
    settings = Settings(**{k.removeprefix("RESMTNET_").lower(): v for k, v in data.items()})
    assert settings.provider == "cuda"
    assert container(resources)["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]


def test_pods_are_scraped_on_the_metrics_path(resources):
    annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container(resources)["ports"][0]["containerPort"]


def test_pods_meet_the_restricted_pod_security_standard_as_the_images_user(resources):
    assert resources["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = pod_spec(resources)["securityContext"]
    assert pod["runAsNonRoot"] and pod["seccompProfile"]["type"] == "RuntimeDefault"
    user = parse_dockerfile(REPO / "Dockerfile").stage("gpu").all("USER")[0]
    assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == user
    c = container(resources)["securityContext"]
    assert c["allowPrivilegeEscalation"] is False and c["readOnlyRootFilesystem"] is True
    assert c["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container(resources)["volumeMounts"]}
    assert "/tmp" in mounts, "a writable /tmp on a read-only root filesystem"


def test_image_is_the_one_compose_builds_for_gpus(resources):
    assert container(resources)["image"] == load_yaml(COMPOSE)["services"]["resmtnet"]["image"]


def test_api_keys_come_from_a_required_secret(resources):
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container(resources).get("env", [])}
    mounts = {m["name"]: m for m in container(resources)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["api-keys"]["secret"]
    assert secret["secretName"] == "resmtnet-api-keys" and not secret.get("optional", False)
    (item,) = secret["items"]
    assert env["RESMTNET_API_KEYS_FILE"] == f"{mounts['api-keys']['mountPath']}/{item['path']}"
    assert mounts["api-keys"]["readOnly"] is True


def test_the_pods_take_connections_on_the_serving_port_only_and_open_none(resources):
    policy = resources["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == resources["Deployment"]["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": container(resources)["ports"][0]["containerPort"], "protocol": "TCP"}]


def test_the_kustomization_applies_every_manifest_with_the_pushed_image(resources):
    kustomization = load_yaml(KUSTOMIZATION)
    assert kustomization["resources"] == [path.name for path in MANIFESTS]
    (image,) = kustomization["images"]
    assert container(resources)["image"].split(":")[0] == image["name"]
    assert image["newName"] != image["name"], "the image is pushed to a registry the nodes pull from"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_kubectl_kustomize_builds_the_deployment_with_the_pushed_image():
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted(doc["kind"] for doc in docs) == sorted(doc["kind"] for p in MANIFESTS for doc in load_all_yaml(p))
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    (image,) = load_yaml(KUSTOMIZATION)["images"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image['newName']}:{image['newTag']}"
