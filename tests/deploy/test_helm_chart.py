"""helm lint, helm template and kubeconform on the chart, with default, GPU and all-options values.

helm and kubeconform are the real tools (``go install``), and the schemas are Kubernetes 1.34's
(from the kubernetes-validate wheel) plus the CRDs of prometheus-operator and KEDA (from their Go
modules): see tests/deploy_tools.py. kubeconform runs in strict mode, so an unknown field fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests import deploy_tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "streamrec"
KUBE_VERSION = deploy_tools.KUBERNETES_VERSION
REQUIRED = ["--set", "kafka.bootstrapServers=kafka-0.kafka:9092"]
GPU = [
    "--set",
    "inferenceWorker.gpu.count=2",
    "--set-json",
    'inferenceWorker.nodeSelector={"nvidia.com/gpu.present":"true"}',
]
EVERYTHING = [
    "--set", "api.tokenSecret.name=streamrec-api",
    "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
    "--set", "metrics.grafanaDashboard.enabled=true", "--set", "keda.enabled=true",
]  # fmt: skip
SECURED = [
    "--set", "kafka.security.protocol=SASL_SSL", "--set", "kafka.security.saslMechanism=SCRAM-SHA-512",
    "--set", "kafka.security.saslSecret.name=kafka-user", "--set", "kafka.security.tls.secretName=kafka-tls",
    "--set", "kafka.security.tls.certFile=client.crt", "--set", "kafka.security.tls.keyFile=client.key",
    "--set", "kafka.security.tls.keyPasswordKey=key-password",
    "--set", "keda.enabled=true", "--set", "keda.authenticationRef=kafka-keda",
]  # fmt: skip
VALUES = {"default": [], "gpu": GPU, "everything": GPU + EVERYTHING, "secured": SECURED}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(deploy_tools.require(deploy_tools.helm())), *args], capture_output=True, text=True)


def render(extra: list[str]) -> list[dict]:
    result = helm("template", "rec", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED, *extra)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_helm_lint_passes(name):
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED, *VALUES[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", sorted(VALUES))
def test_kubeconform_accepts_the_rendered_chart(name, tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(render(VALUES[name])))
    schemas, crds = (
        deploy_tools.require(deploy_tools.kubernetes_schemas()),
        deploy_tools.require(deploy_tools.crd_schemas()),
    )
    kubeconform = str(deploy_tools.require(deploy_tools.kubeconform()))
    result = subprocess.run(
        [kubeconform, "-strict", "-summary", "-kubernetes-version", KUBE_VERSION,
         "-schema-location", f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
         "-schema-location", f"{crds}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json", str(rendered)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def test_default_values_render_secure_workers_with_probes_and_budgets():
    docs = render([])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "PodDisruptionBudget", "Service", "Service",
                     "Service", "ServiceAccount", "StatefulSet"]  # fmt: skip
    for workload in by_kind(docs, "StatefulSet") + by_kind(docs, "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"
    stream = by_kind(docs, "StatefulSet")[0]
    assert stream["spec"]["replicas"] == 2 and stream["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    inference = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert inference["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in inference["tolerations"]
    config = by_kind(docs, "ConfigMap")[0]["data"]
    assert config["STREAMREC_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9092"
    assert config["STREAMREC_TOPIC_PARTITIONS"] == "12"


def test_gpu_values_set_the_gpu_count_and_node_selector():
    inference = by_kind(render(GPU), "Deployment")[0]["spec"]["template"]["spec"]
    assert inference["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert inference["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_optional_monitoring_and_autoscaling_resources():
    docs = render(EVERYTHING)
    monitors = by_kind(docs, "ServiceMonitor")
    assert sorted(m["spec"]["endpoints"][0]["relabelings"][0]["replacement"] for m in monitors) == [
        "streamrec-inference", "streamrec-stream"]  # fmt: skip
    rules = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"]
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    assert rules == alerts
    scaled = by_kind(docs, "ScaledObject")[0]["spec"]
    assert scaled["scaleTargetRef"]["kind"] == "StatefulSet" and scaled["maxReplicaCount"] == 12
    assert scaled["triggers"][0]["metadata"]["consumerGroup"] == "streamrec"
    assert "replicas" not in by_kind(docs, "StatefulSet")[0]["spec"]  # KEDA owns the replica count
    env = by_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "STREAMREC_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "streamrec-api", "key": "token"}
    dashboard = by_kind(docs, "ConfigMap")[1]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1" and "streamrec.json" in dashboard["data"]


def test_the_chart_refuses_missing_kafka_and_more_workers_than_partitions():
    missing = helm("template", "rec", str(CHART), "--kube-version", KUBE_VERSION)
    assert missing.returncode != 0 and "kafka.bootstrapServers is required" in missing.stderr
    too_many = helm("template", "rec", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED,
                    "--set", "kafka.partitions=4", "--set", "streamWorker.replicas=5")  # fmt: skip
    assert too_many.returncode != 0 and "exceeds kafka.partitions (4)" in too_many.stderr


def test_kafka_security_reaches_both_workers_with_secrets_from_secret_refs_only():
    docs = render(SECURED)
    config = by_kind(docs, "ConfigMap")[0]["data"]
    assert {k: v for k, v in config.items() if k.startswith("STREAMREC_KAFKA_S")} == {
        "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMREC_KAFKA_SSL_CHECK_HOSTNAME": "true",
        "STREAMREC_KAFKA_SSL_CAFILE": "/etc/streamrec/kafka-tls/ca.crt",
        "STREAMREC_KAFKA_SSL_CERTFILE": "/etc/streamrec/kafka-tls/client.crt",
        "STREAMREC_KAFKA_SSL_KEYFILE": "/etc/streamrec/kafka-tls/client.key",
    }
    for workload in by_kind(docs, "StatefulSet") + by_kind(docs, "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in pod["containers"][0]["env"]}
        assert env["STREAMREC_KAFKA_SASL_USERNAME"] == {"name": "kafka-user", "key": "username"}
        assert env["STREAMREC_KAFKA_SASL_PASSWORD"] == {"name": "kafka-user", "key": "password"}
        assert env["STREAMREC_KAFKA_SSL_KEY_PASSWORD"] == {"name": "kafka-tls", "key": "key-password"}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["kafka-tls"] == {"name": "kafka-tls", "mountPath": "/etc/streamrec/kafka-tls", "readOnly": True}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-tls"]["secret"] == {"secretName": "kafka-tls", "defaultMode": 0o440}
    trigger = by_kind(docs, "ScaledObject")[0]["spec"]["triggers"][0]
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    assert trigger["authenticationRef"] == {"name": "kafka-keda"}
    # PLAINTEXT, the default: the protocol is said, and nothing else about security is rendered.
    plain = render([])
    config = by_kind(plain, "ConfigMap")[0]["data"]
    assert [k for k in config if k.startswith("STREAMREC_KAFKA_S")] == ["STREAMREC_KAFKA_SECURITY_PROTOCOL"]
    for workload in by_kind(plain, "StatefulSet") + by_kind(plain, "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        assert not [e for e in pod["containers"][0]["env"] if e["name"].startswith("STREAMREC_KAFKA")]
        assert "kafka-tls" not in {v["name"] for v in pod["volumes"]}


def test_the_chart_refuses_sasl_without_credentials_and_keda_without_authentication():
    base = ["template", "rec", str(CHART), "--kube-version", KUBE_VERSION, *REQUIRED]
    no_secret = helm(*base, "--set", "kafka.security.protocol=SASL_SSL")
    assert no_secret.returncode != 0 and "needs kafka.security.saslSecret.name" in no_secret.stderr
    no_auth = helm(*base, "--set", "kafka.security.protocol=SSL", "--set", "keda.enabled=true")
    assert no_auth.returncode != 0 and "keda.authenticationRef is required" in no_auth.stderr
    typo = helm(*base, "--set", "kafka.security.protocol=SASL")
    assert typo.returncode != 0 and "use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" in typo.stderr


def leaf_keys(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("podSecurityContext", "securityContext", "resources"):
            keys += leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


def test_every_value_is_documented_in_the_charts_readme():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    undocumented = [key for key in leaf_keys(values) if f"`{key}`" not in readme]
    assert not undocumented, f"values missing from helm/streamrec/README.md: {undocumented}"
