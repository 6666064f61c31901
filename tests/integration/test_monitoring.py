"""Prometheus (Debian's package) scrapes both workers during a replay; every panel and alert is evaluated.

The stream worker (training, baselines, augmentation), the inference worker (MiniLM on the CPU)
and Prometheus all run for real, on loopback. After a replay of MovieLens-100K events (plus a few
malformed ones and some API calls), every PromQL expression of the provisioned Grafana dashboard
and every alerting rule goes through Prometheus's HTTP API: all must parse, and every panel must
return data except the GPU panels (NVML has no GPU to report here). Then the inference worker is
killed and the "worker down" alert's expression must name it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.stream.kafka.local import port_open
from tests import deploy_tools
from tests.integration.conftest import free_port, streamrec
from tests.integration.test_ingestion import BAD_EVENTS, produce

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "stream" / "dashboards" / "streamrec.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"


def dashboard_queries() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every target of every panel, Grafana's variables substituted."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


class Prometheus:
    def __init__(self, directory: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
            ],
        }
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = open(directory / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [str(deploy_tools.require(deploy_tools.prometheus())), f"--config.file={self.config}",
             f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.ready():  # the port opens before the TSDB and rules are loaded
            assert self.process.poll() is None, (directory / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus was not ready in 60 s"
            time.sleep(0.2)

    def ready(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:  # 503 while starting up, or the connection dropped
            return False

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # a bad query is a 400 with a JSON error body
            body = error.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {error.code}: {body[:200]!r}"}

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def wait(self, expr: str, condition, timeout_s: float = 90) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            answer = self.query(expr)
            result = answer.get("data", {}).get("result", [])
            if answer.get("status") == "success" and condition(result):
                return result
            time.sleep(1)
        raise AssertionError(f"{expr!r} never met the condition; last result {result}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path):
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        started.append(Prometheus(tmp_path / "prometheus", targets))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


def test_promtool_accepts_the_compose_config_and_the_alert_rules():
    promtool = str(deploy_tools.require(deploy_tools.promtool()))
    config = subprocess.run([promtool, "check", "config", str(ALERTS.with_name("prometheus.yml"))],
                            capture_output=True, text=True)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_every_panel_and_alert_evaluates_against_a_live_replay(app_settings, start_worker, prometheus_for):
    settings = {
        **app_settings,
        "augment": True,
        "inference_enable_lm": False,
        "augment_llm": False,
        "augment_text_paraphrases": 0,
        "baselines": "most_popular,biased_mf",
        "metrics_baselines_interval_s": 2,
        "batch_size": 200,
    }
    inference = start_worker(settings, role="augment")
    stream = start_worker(settings)
    prometheus = prometheus_for(
        {
            "streamrec-stream": f"127.0.0.1:{settings['web_port']}",
            "streamrec-inference": f"127.0.0.1:{settings['inference_web_port']}",
        }
    )
    prometheus.wait('up{job=~"streamrec-.*"} == 1', lambda result: len(result) == 2)

    # A live replay: the catalogue, then 4,000 interactions at 400 events/s; a few malformed events.
    replay = streamrec(["replay", "--dataset", "ml-100k", "--limit", "4000", "--rate", "400"], settings, timeout=300)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    bad = [(settings["topic_clicks"], b"u1", raw) for raw, _ in BAD_EVENTS]
    asyncio.run(produce(settings["kafka_bootstrap_servers"], bad))
    stream.wait_for(lambda s: s["consumed_total"] >= 4000 + len(bad) and s["dead_letters_total"] == len(bad))
    for path in ("/recommend/1?k=10", "/recommend/unknown-user", "/similar/50?k=5", "/recommend/1?k=0",
                 "/similar/no-such-item", "/model"):  # fmt: skip
        stream.get(path)
    # The inference worker answered embedding requests for the new items' text.
    prometheus.wait(
        'sum(streamrec_inference_requests_total{outcome="completed"})', lambda r: r and float(r[0]["value"][1]) > 0
    )
    time.sleep(8)  # a few more scrapes, so that every rate() window holds the replay

    empty, failed = [], []
    for title, expr in dashboard_queries():
        answer = prometheus.query(expr)
        if answer.get("status") != "success":
            failed.append((title, expr, answer.get("error")))
        elif not answer["data"]["result"] and "streamrec_gpu_" not in expr:
            empty.append((title, expr))
    assert not failed, f"panels whose PromQL Prometheus rejects: {failed}"
    assert not empty, f"panels with no data after a replay: {empty}"

    # Every alert expression parses and evaluates; Prometheus loaded every rule and evaluates it without error.
    for rule in alert_rules():
        assert prometheus.query(rule["expr"]).get("status") == "success", rule["alert"]
    loaded = prometheus.api("rules")["data"]["groups"][0]["rules"]
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in alert_rules())
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
    # Nothing is wrong in this run: no inference saturation and no worker down.
    down = next(r["expr"] for r in alert_rules() if r["alert"] == "StreamrecWorkerDown")
    assert prometheus.query(down)["data"]["result"] == []

    # Core values are the service's own: the scraped counters equal the worker's /stats.
    stats = stream.get("/stats")[1]
    consumed = prometheus.wait("sum(streamrec_events_consumed_total)", lambda r: r and float(r[0]["value"][1]) >= 4000)
    assert float(consumed[0]["value"][1]) == stats["consumed_total"]
    dead = prometheus.query("sum(streamrec_dead_letters_total)")["data"]["result"]
    assert float(dead[0]["value"][1]) == len(bad)
    models = prometheus.query('streamrec_prequential_hr_at_10{slice="overall"}')["data"]["result"]
    assert sorted(r["metric"]["model"] for r in models) == ["biased_mf", "most_popular", "streamrec"]

    # A worker that stops answering is what the "worker down" alert is about.
    inference.kill()
    result = prometheus.wait(down, lambda r: len(r) == 1, timeout_s=30)
    assert result[0]["metric"]["job"] == "streamrec-inference"
