"""deploy/compose.yaml, checked as far as a machine without a Docker engine can: the compose
specification's schema, the files it mounts, the image targets it builds, and the paths its
services share."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_prometheus import promtool

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    tool = str(checker) if checker.exists() else shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is missing: `make install` installs the dev extras"
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_bind_mount_and_build_target_exists() -> None:
    dockerfile_targets = re.findall(
        r"^FROM \S+ AS (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M
    )
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
        if build := service.get("build"):
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
            assert build["target"] in dockerfile_targets, f"{name}: no stage {build['target']}"


def test_prometheus_reads_the_scrape_targets_the_demo_writes() -> None:
    found = services()
    demo, prometheus = found["demo"], found["prometheus"]
    command = demo["command"]
    out = command[command.index("--out") + 1]
    assert f"demo-out:{out}" in demo["volumes"]
    assert f"demo-out:{out}:ro" in prometheus["volumes"]
    assert command[command.index("--metrics-host") + 1] == "demo"
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = DEPLOY / "prometheus" / Path(config_flag.split("=", 1)[1]).name
    scrape = yaml.safe_load(config.read_text())["scrape_configs"]
    esb_files = next(job for job in scrape if job["job_name"] == "esb")["file_sd_configs"][0]
    assert f"{out}/prometheus-targets.json" in esb_files["files"]
    rabbit = next(job for job in scrape if job["job_name"] == "rabbitmq")
    assert rabbit["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    assert "rabbitmq_prometheus" in (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    promtool("check", "config", str(config))
