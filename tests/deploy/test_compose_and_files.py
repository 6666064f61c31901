"""docker-compose.yml, the Dockerfile and the monitoring files, checked as the tools that use them would read them.

There is no Docker engine here, so the compose file is loaded with YAML's own anchors and merge
keys (as Compose does), validated against the Compose Specification's JSON schema (from the
compose-go module docker compose is built on) and checked for what a deployment relies on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from tests import deploy_tools

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_compose_file_follows_the_compose_specification():
    schema = json.loads(deploy_tools.require(deploy_tools.compose_schema()).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, errors


def test_every_service_has_a_healthcheck_or_is_one_shot():
    for name, service in SERVICES.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"{name} has neither a healthcheck nor restart: 'no'"
    assert SERVICES["replay"]["restart"] == "no"
    assert SERVICES["replay"]["depends_on"]["stream-worker"]["condition"] == "service_healthy"


def test_every_image_is_pinned_and_ours_is_built_from_the_repo():
    for name, service in SERVICES.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{name}: image {image!r} is not pinned"
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    for name in ("stream-worker", "inference-worker", "inference-worker-cpu", "replay"):
        assert SERVICES[name]["build"]["context"] == "."
        assert SERVICES[name]["user"] == "10001:10001" and SERVICES[name]["read_only"] is True


def test_kafka_runs_kraft_in_one_node():
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert len(env["CLUSTER_ID"]) == 22  # a base64url UUID, as `kafka-storage format` wants
    assert SERVICES["stream-worker"]["environment"]["STREAMREC_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_the_inference_worker_reserves_a_gpu_and_has_a_cpu_variant():
    devices = SERVICES["inference-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert SERVICES["inference-worker"]["environment"]["STREAMREC_INFERENCE_DEVICE"] == "cuda"
    cpu = SERVICES["inference-worker-cpu"]
    assert "deploy" not in cpu and cpu["environment"]["STREAMREC_INFERENCE_DEVICE"] == "cpu"
    assert "inference-worker" in cpu["networks"]["default"]["aliases"]  # the scrape target either way
    assert SERVICES["inference-worker"]["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert "COMPOSE_PROFILES=cpu" in (REPO / ".env").read_text().splitlines()


def test_named_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert {"kafka-data", "stream-state", "prometheus-data", "grafana-data"} <= declared


def test_prometheus_scrapes_both_workers_under_the_job_names_the_alerts_use():
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"streamrec-stream": ["stream-worker:6066"], "streamrec-inference": ["inference-worker:6067"]}
    alerts = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert 'job=~"streamrec-(stream|inference)"' in alerts


def test_the_dockerfile_runs_as_a_non_root_user_with_cached_dependency_layers():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\d.]+-slim-bookworm$", dockerfile, re.M)  # pinned and slim
    # pyproject.toml alone is copied before the dependency install, the code after it
    assert dockerfile.index("COPY pyproject.toml") < dockerfile.index("-r /tmp/requirements.txt")
    assert dockerfile.index("-r /tmp/requirements.txt") < dockerfile.index("COPY stream")
    assert "--mount=type=cache,target=/root/.cache/pip" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".streamrec"} <= set(ignored)


def test_the_committed_dashboard_is_what_its_generator_writes():
    generated = subprocess.run(
        [sys.executable, "-c", "import build_dashboard; print(build_dashboard.render(), end='')"],
        cwd=REPO / "deploy" / "grafana", capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert generated == (REPO / "stream" / "dashboards" / "streamrec.json").read_text(), (
        "run: .venv/bin/python deploy/grafana/build_dashboard.py"
    )
    board = json.loads(generated)
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Throughput and lag", "Quality (prequential, scored before training)", "Augmentation and GPU",
                    "Training and freshness", "API"]  # fmt: skip
    assert board["templating"]["list"][0]["type"] == "datasource"


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "streamrec.yaml").read_text())["providers"][0]
    mounts = SERVICES["grafana"]["volumes"]
    assert f"./stream/dashboards:{provider['options']['path']}:ro" in mounts


def test_the_charts_copies_of_the_alerts_and_dashboard_are_current():
    chart_files = REPO / "helm" / "streamrec" / "files"
    assert (chart_files / "alerts.yml").read_text() == (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert (chart_files / "dashboard.json").read_text() == (
        REPO / "stream" / "dashboards" / "streamrec.json"
    ).read_text()
