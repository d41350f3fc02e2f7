"""deploy/k8s, checked without a cluster: the Kubernetes schemas, every esb container's
arguments and settings as esb itself reads them, KEDA scaling on the queue each sink
really consumes, and what running the image there needs: probes, a disruption budget,
requests from measured runs, a grace period past esb's own and the data volume."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from esb.cli import main
from esb.permissions import load_users
from esb.registry import load_adapter
from esb.settings import load_settings
from esb.topology import QueueNames
from tests.support.dockerfile import environment, last

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
KUBERNETES_DOC = K8S.parents[1] / "docs" / "kubernetes.md"
#: Past service.shutdown_grace, the seconds a process may take to close its broker connection,
#: flush its journal and export its spans; a sink stops within 5 s mid-stream
#: (tests/integration/test_flow.py).
STOP_MARGIN = 10


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return found


def deployments() -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == "Deployment"]


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(deployment name, container, pod spec) of every esb container."""
    for doc in documents():
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                if container["image"] == "esb":
                    yield doc["metadata"]["name"], container, pod


def test_every_manifest_is_listed_and_valid_for_kubernetes() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")
    tool = Path(sys.executable).with_name("kubernetes-validate")
    done = subprocess.run(
        [str(tool), "--strict", *(str(K8S / name) for name in listed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout + done.stderr


@pytest.mark.parametrize("name", [name for name, _, _ in containers()])
def test_each_container_runs_a_real_command_with_settings_esb_accepts(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, pod = next(c for c in containers() if c[0] == name)
    args = container["args"]
    help_args = [*args[: 3 if args[1] in ("source", "sink") else 2], "--help"]
    assert CliRunner().invoke(main, help_args).exit_code == 0, f"{name}: esb {args} is unknown"
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if "--routes" in args:
        routes = args[args.index("--routes") + 1]
        assert volumes[mounts[routes]]["configMap"]["name"] == "esb-routes"
    for variable in container["env"]:
        if "valueFrom" in variable:
            value = "from-a-secret"
        elif variable["name"].endswith("_FILE"):
            # A file the pod gets from a mounted secret: the test writes a stand-in for it.
            directory = str(Path(variable["value"]).parent)
            assert directory in mounts, f"{name}: {variable['value']} is not on a mounted volume"
            stand_in = tmp_path / Path(variable["value"]).name
            stand_in.write_text(
                "amqp://esb:secret@rabbitmq:5672/"
                if "broker" in directory
                else "postgresql://esb@db/esb"
            )
            value = str(stand_in)
        else:
            value = variable["value"]
        monkeypatch.setenv(variable["name"], value)
    model = None
    if args[1] in ("source", "sink"):
        adapter = load_adapter(args[2])
        model = getattr(adapter, args[1]).settings_model
    settings = load_settings(model)
    assert settings.service.name == name.removeprefix("esb-")
    # Probes and scrapes go to the metrics port: set, not a free one picked at start.
    [metrics] = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    assert settings.service.health_port == metrics


def test_keda_scales_each_sink_on_the_queue_it_consumes() -> None:
    found = documents()
    auths = {d["metadata"]["name"] for d in found if d["kind"] == "TriggerAuthentication"}
    by_deployment = {name: container for name, container, _ in containers()}
    scaled = [d for d in found if d["kind"] == "ScaledObject"]
    assert scaled
    for doc in scaled:
        target = doc["spec"]["scaleTargetRef"]["name"]
        env = {v["name"]: v.get("value") for v in by_deployment[target]["env"]}
        names = QueueNames(env.get("ESB_BROKER__PREFIX") or "esb")
        for trigger in doc["spec"]["triggers"]:
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["queueName"] == names.sink(env["ESB_SERVICE__NAME"])
            assert trigger["authenticationRef"]["name"] in auths


def test_each_process_connects_as_its_own_least_privileged_user() -> None:
    """No two Deployments share a broker credential, none declares, and the users file
    beside the manifests gives each one a user of its role (the sink: its own queue)."""
    users = load_users(K8S.parent / "broker-users.yaml").users
    secrets = []
    for name, container, pod in containers():
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env["ESB_BROKER__DECLARE"] == "false", name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v["name"] == mounts["/secrets/broker"])
        secrets.append(volume["secret"]["secretName"])
        assert secrets[-1] == f"esb-broker-{env['ESB_SERVICE__NAME']}", name
        role = container["args"][1]
        user = next(u for u in users if u.name == f"esb-{env['ESB_SERVICE__NAME']}")
        assert user.role == role, name
        if role == "sink":
            assert user.sink == env["ESB_SERVICE__NAME"], name
    assert len(secrets) == len(set(secrets)) == len(users)


def settings_of(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The container's settings as esb reads them (secrets stood in: only service is read)."""
    for variable in container["env"]:
        if "value" in variable and not variable["name"].endswith("_FILE"):
            monkeypatch.setenv(variable["name"], variable["value"])
    return load_settings(None).service


@pytest.mark.parametrize("name", [name for name, _, _ in containers()])
def test_probes_ask_esb_on_its_configured_port(name: str) -> None:
    _, container, _ = next(c for c in containers() if c[0] == name)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {v["name"]: v.get("value") for v in container["env"]}
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    health_port = int(env["ESB_SERVICE__HEALTH_PORT"])
    assert ports[live["port"]] == ports[ready["port"]] == health_port


def test_each_deployment_has_a_disruption_budget_that_lets_a_drain_through() -> None:
    budgets = [doc for doc in documents() if doc["kind"] == "PodDisruptionBudget"]
    for deployment in deployments():
        labels = deployment["spec"]["selector"]["matchLabels"]
        [budget] = [b for b in budgets if b["spec"]["selector"]["matchLabels"] == labels]
        spec = budget["spec"]
        # maxUnavailable, not minAvailable: a one-replica Deployment can still be drained.
        assert spec.get("maxUnavailable", 0) >= 1, budget["metadata"]["name"]
        assert "minAvailable" not in spec
    assert len(budgets) == len(deployments())


@pytest.mark.parametrize("name", [name for name, _, _ in containers()])
def test_the_grace_period_outlasts_esb_s_own_shutdown(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, pod = next(c for c in containers() if c[0] == name)
    service = settings_of(container, monkeypatch)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= service.shutdown_grace + STOP_MARGIN


@pytest.mark.parametrize("name", [name for name, _, _ in containers()])
def test_the_image_runs_as_its_user_with_its_data_dir_on_a_volume(name: str) -> None:
    _, container, pod = next(c for c in containers() if c[0] == name)
    data = environment("esb")["ESB_SERVICE__DATA_DIR"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert data in mounts, f"{name}: nothing mounted on service.data_dir {data}"
    assert not mounts[data].get("readOnly", False)
    assert pod["securityContext"]["runAsUser"] == int(last("esb", "USER"))
    assert pod["securityContext"]["fsGroup"] == int(last("esb", "USER"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def measured() -> dict[str, tuple[float, float]]:
    """docs/kubernetes.md's table of measured figures: each process's peak RSS (MiB) and CPU a
    message (us)."""
    section = KUBERNETES_DOC.read_text().split("## Resources", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| ([\d.]+) \| ([\d,]+) \|", section, re.M)
    return {name: (float(rss), float(cpu.replace(",", ""))) for name, rss, cpu in rows}


def quantity(text: str) -> float:
    """A Kubernetes quantity in MiB (memory) or cores (cpu)."""
    if text.endswith("Mi"):
        return float(text[:-2])
    if text.endswith("Gi"):
        return float(text[:-2]) * 1024
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


#: The rate per replica the CPU requests are sized for (docs/kubernetes.md#resources).
DESIGN_RATE = 250


@pytest.mark.parametrize("name", [name for name, _, _ in containers()])
def test_requests_cover_what_a_real_run_measured(name: str) -> None:
    _, container, _ = next(c for c in containers() if c[0] == name)
    rss, cpu_us = measured()[name.removeprefix("esb-")]
    resources = container["resources"]
    memory = quantity(resources["requests"]["memory"])
    assert memory >= rss, f"{name}: {memory} MiB requested, {rss} MiB measured"
    assert quantity(resources["limits"]["memory"]) >= 2 * rss
    assert quantity(resources["requests"]["cpu"]) >= cpu_us * DESIGN_RATE / 1e6
