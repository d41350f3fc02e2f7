"""The alert rules and the dashboard, checked by promtool and evaluated by a real Prometheus
scraping a real esb process and RabbitMQ's own metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from esb import CloudEvent, to_message
from esb.broker import SENT_HEADER, sent_now
from esb.metrics import Metrics
from esb.routing.loader import load_routes
from esb.teardown import delete_deployment
from esb.testing import free_port
from tests.conftest import Names
from tests.support.processes import EsbProcess, read_ids, start_unported, wait_for
from tests.support.rabbit import port_open

DEPLOY = Path(__file__).parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "esb-overview.json"
HOW = "run `make prometheus` (installs Prometheus, enables RabbitMQ's Prometheus plugin)"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: {HOW}")
    return path


def promtool(*args: str) -> str:
    done = subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries(prefix: str = "esb", service: str = ".*") -> dict[str, list[str]]:
    """Every panel's PromQL by panel title, with the variables as Grafana would fill them."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        panel["title"]: [
            target["expr"]
            .replace("$__rate_interval", "1m")
            .replace("$service", service)
            .replace("$prefix", prefix)
            for target in panel["targets"]
        ]
        for panel in panels
    }


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    assert "SUCCESS: 13 rules found" in promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in promtool("test", "rules", str(ALERTS.with_name("alerts.test.yml")))
    promtool("check", "config", str(ALERTS.with_name("prometheus.yml")))


def test_every_esb_metric_the_rules_and_dashboard_read_is_exported() -> None:
    exported = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    read = {m for r in rules for m in re.findall(r"\besb_[a-z_]+", r["expr"])}
    queries = [q for panel in dashboard_queries().values() for q in panel]
    read |= {m for q in queries for m in re.findall(r"\besb_[a-z_]+", q)}
    assert read - exported == set()
    assert len(read) >= 10


class Prometheus:
    """A Prometheus server of the test's own, scraping every second; it finds esb processes
    as ``esb`` says (a static config, or file-based discovery)."""

    def __init__(self, workdir: Path, esb: dict[str, Any]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "esb", **esb},
                {
                    "job_name": "rabbitmq",
                    "metrics_path": "/metrics/detailed",
                    "params": {"family": ["queue_coarse_metrics"]},
                    "static_configs": [{"targets": ["127.0.0.1:15692"]}],
                },
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def tail(self) -> str:
        return "Prometheus log:\n" + self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(timeout=30)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    yield started
    for server in started:
        server.stop()


async def test_a_real_scrape_fills_the_dashboard_and_fires_the_parked_alert(
    esb_env: dict[str, str],
    names: Names,
    amqp_url: str,
    tmp_path: Path,
    prometheus_for: list[Prometheus],
) -> None:
    if not port_open("127.0.0.1", 15692):
        pytest.fail(f"RabbitMQ's Prometheus plugin does not answer on 127.0.0.1:15692: {HOW}")
    out = tmp_path / "out.jsonl"
    env = {**esb_env, "ESB_ADAPTER__PATH": str(out), "ESB_SERVICE__NAME": "watched-sink"}
    sink = EsbProcess(["run", "sink", "jsonl"], env, tmp_path / "sink.log")
    try:
        sink.wait_ready()
        esb = {"static_configs": [{"targets": [f"127.0.0.1:{sink.health_port}"]}]}
        prometheus = Prometheus(tmp_path, esb)
        prometheus_for.append(prometheus)

        def both_scraped() -> bool:
            try:
                return prometheus.value('sum(up{job=~"esb|rabbitmq"})') == 2
            except OSError:
                return False

        wait_for(both_scraped, 30, prometheus.tail)
        events = [CloudEvent.new("t.watched", "urn:t", {"n": n}) for n in range(20)]
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(names.exchange)
            for event in events:
                stamped = to_message(event, {SENT_HEADER: sent_now()})  # as a hop stamps it
                await exchange.publish(stamped, routing_key=event.type)
            await exchange.publish(aio_pika.Message(b'{"broken": '), routing_key="t.watched")
        wait_for(lambda: len(read_ids(out)) == len(events), 30, sink.tail)

        def parked_alert() -> list[dict[str, Any]]:
            alerts = prometheus.api("alerts")["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "EsbMessagesParked"]

        wait_for(lambda: bool(parked_alert()), 60, prometheus.tail)
        (alert,) = parked_alert()
        assert alert["labels"]["service"] == "watched-sink"
        assert alert["state"] == "firing"

        ok = 'esb_consumed_total{job="esb", service="watched-sink", outcome="ok"}'
        wait_for(lambda: prometheus.value(ok) == len(events), 30, prometheus.tail)
        depth = f'rabbitmq_detailed_queue_messages{{queue="{names.queue}.dlq"}}'
        wait_for(lambda: prometheus.value(depth) == 1, 30, prometheus.tail)

        # Every panel's queries evaluate; those a lone sink feeds show its series.
        fed = {
            "Messages handled per second",
            "Errors: retried, parked and refused per second",
            "Handling time p95",
            "Parked messages (parking lots)",
            "Circuit state",
            "Broker connection and messages in flight",
            "End-to-end age p50 / p95 / p99 (occurrence to applied)",
            "Queue wait p50 / p95 / p99",
        }
        panels = dashboard_queries(prefix=names.queue.split(".")[0], service="watched-sink")
        assert fed <= set(panels)
        for title, queries in panels.items():
            results = [prometheus.api("query", query=q)["result"] for q in queries]
            if title in fed:
                assert any(results), f"panel {title!r} shows nothing: {queries}"
        rules = prometheus.api("rules")["groups"][0]["rules"]
        assert [r["name"] for r in rules if r["health"] != "ok"] == []
        assert len(rules) == 13
    finally:
        sink.stop()


async def publish_raw(url: str, exchange: str, body: bytes) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        await target.publish(aio_pika.Message(body), routing_key="t.broken")


def test_every_kind_of_process_exposes_metrics_promtool_accepts_without_created_series(
    amqp_url: str, tmp_path: Path
) -> None:
    """A router, a transformer, a source, a sink and the journal, each after handling events
    (every hop writing its records to the journal): their
    /metrics pass `promtool check metrics` (names, HELP, types, units) and carry no
    `_created` series, which would double the series count for a timestamp nobody reads.
    Every outcome and reason a process exports is named in its metric's HELP."""
    routes = Path(__file__).parents[1] / "routes"
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    env = {
        "ESB_BROKER__URL": amqp_url,
        "ESB_BROKER__EXCHANGE": f"{prefix}.events",
        "ESB_BROKER__PREFIX": prefix,
        "ESB_JOURNAL__ENABLED": "true",
        "ESB_JOURNAL__PATH": str(tmp_path / "journal.sqlite3"),
        "ESB_JOURNAL__FLUSH_SECONDS": "0.1",
    }
    webhook_port = free_port()
    processes = {
        "journal": EsbProcess(["run", "journal"], env, tmp_path / "j.log"),
        "router": EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "r.log"),
        "transformer": EsbProcess(
            ["run", "transformer", "--routes", str(routes)], env, tmp_path / "t.log"
        ),
        "sink": EsbProcess(
            ["run", "sink", "jsonl"],
            {
                **env,
                "ESB_CONSUME__QUEUE": f"{prefix}.sink.all",
                "ESB_CONSUME__BINDINGS": '["#"]',
                "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
            },
            tmp_path / "s.log",
        ),
    }
    try:
        for process in processes.values():
            process.wait_ready()
        source = EsbProcess(
            ["run", "source", "http-webhook"],
            {**env, "ESB_ADAPTER__PORT": str(webhook_port), "ESB_ADAPTER__EVENT_TYPE": "t.x"},
            tmp_path / "src.log",
        )
        processes["source"] = source
        source.wait_ready()
        for n in range(2):
            request = urllib.request.Request(
                f"http://127.0.0.1:{webhook_port}/webhook",
                data=json.dumps({"n": n}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http
                assert answer.status == 202
        wait_for(lambda: len(read_ids(tmp_path / "out.jsonl")) == 2, 30, source.tail)
        # Refusals too, so reasons and outcomes other than ok appear in the text.
        broken = urllib.request.Request(
            f"http://127.0.0.1:{webhook_port}/webhook",
            data=b'{"broken": ',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(broken, timeout=10)  # noqa: S310 - http
        asyncio.run(publish_raw(amqp_url, env["ESB_BROKER__EXCHANGE"], b'{"broken": '))
        parked = 'esb_consumed_total{adapter="jsonl",outcome="parked"'
        wait_for(lambda: parked in processes["sink"].metrics(), 30, processes["sink"].tail)
        operations = {
            (sample.labels["operation"], sample.labels["result"]): sample.value
            for family in text_string_to_metric_families(source.metrics())
            for sample in family.samples
            if sample.name == "esb_adapter_operations_total"
        }
        assert operations == {("request", "202"): 2, ("request", "400"): 1}
        stored = 'esb_journal_stored_records_total{result="stored",service="journal"}'
        wait_for(lambda: stored in processes["journal"].metrics(), 30, processes["journal"].tail)
        for kind, process in processes.items():
            text = process.metrics()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    for label in ("outcome", "reason"):
                        value = sample.labels.get(label)
                        assert value is None or value in family.documentation, (kind, sample)
            assert "esb_" in text, kind
            assert "_created" not in text, f"{kind}: {text[text.index('_created') - 80 :][:200]}"
            done = subprocess.run(
                [tool("promtool"), "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert done.returncode == 0, f"{kind}: {done.stdout}{done.stderr}"
    finally:
        for process in processes.values():
            process.stop()
        asyncio.run(
            delete_deployment(
                amqp_url,
                prefix,
                env["ESB_BROKER__EXCHANGE"],
                {*load_routes(routes).sinks, "all"},
                ("router", "transformer"),
            )
        )


def test_prometheus_finds_processes_on_free_ports_by_their_target_files(
    esb_env: dict[str, str], tmp_path: Path, prometheus_for: list[Prometheus]
) -> None:
    """Two sinks without a health port, found by the file_sd configuration the shipped
    prometheus.yml uses, in the format docs/monitoring.md shows; gone once stopped."""
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [esb_job] = [job for job in shipped["scrape_configs"] if job["job_name"] == "esb"]
    assert "../../esb-targets/*.json" in esb_job["file_sd_configs"][0]["files"]
    doc = (DEPLOY.parent / "docs" / "monitoring.md").read_text()
    documented = json.loads(
        doc.split("$ cat esb-targets/jsonl-sink-48213.json\n")[1].split("\n")[0]
    )

    targets = tmp_path / "esb-targets"
    env = {**esb_env, "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"), "ESB_SERVICE__NAME": "free"}
    sinks = [
        start_unported(["run", "sink", "jsonl"], env, tmp_path, tmp_path / f"sink-{n}.log")
        for n in range(2)
    ]
    try:
        wait_for(lambda: len(list(targets.glob("*.json"))) == 2, 30, lambda: "no target files")
        written = json.loads(next(targets.glob("*.json")).read_text())
        assert [sorted(group) for group in written] == [sorted(group) for group in documented]
        prometheus = Prometheus(tmp_path, {"file_sd_configs": [{"files": [f"{targets}/*.json"]}]})
        prometheus_for.append(prometheus)

        def scraped(query: str) -> float:
            try:
                return prometheus.value(query)
            except OSError:
                return -1

        wait_for(lambda: scraped('sum(up{job="esb"})') == 2, 30, prometheus.tail)
        objective = 'sum(esb_age_objective_seconds{job="esb", service="free"})'
        assert scraped(objective) == 600
        for sink in sinks:
            sink.terminate()
            assert sink.wait(timeout=30) == 0
        assert list(targets.glob("*.json")) == []
        wait_for(lambda: scraped('count(up{job="esb"})') == 0, 30, prometheus.tail)
    finally:
        for sink in sinks:
            if sink.poll() is None:
                sink.kill()
                sink.wait(timeout=10)
