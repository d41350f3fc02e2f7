"""Health and metrics ports: a free one per process unless one is set, each advertised to
Prometheus; a set port that is taken is one line naming the setting."""

from __future__ import annotations

import json
import re
import signal
import socket
from functools import partial
from pathlib import Path

from tests.support.processes import (
    EsbProcess,
    esb_cli,
    is_ready,
    scrape,
    start_unported,
    wait_for,
)
from tests.support.prometheus import metric


def announced(log: Path) -> list[str]:
    """The ``HOST:PORT`` a process's log says it serves health and metrics on."""
    return re.findall(r"health and metrics on http://([\d.:]+)", log.read_text())


def test_processes_on_one_machine_each_pick_a_free_port_say_it_and_advertise_it(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    targets = tmp_path / "targets"
    env = {
        **esb_env,
        "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
        "ESB_SERVICE__DISCOVERY_DIR": str(targets),
    }
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    sinks = [start_unported(["run", "sink", "jsonl"], env, tmp_path, log) for log in logs]

    def both_logs() -> str:
        return "".join(log.read_text() for log in logs)

    try:
        files = [targets / f"jsonl-sink-{sink.pid}.json" for sink in sinks]
        wait_for(lambda: all(f.exists() for f in files), 30, both_logs)
        advertised = [json.loads(f.read_text()) for f in files]
        said = [announced(log) for log in logs]
        assert said == [group[0]["targets"] for group in advertised]
        assert said[0] != said[1]
        for [target] in said:
            wait_for(partial(is_ready, target), 30, both_logs)
            objective = metric(scrape(target), "esb_age_objective_seconds", service="jsonl-sink")
            assert objective == 300
        assert all(sink.poll() is None for sink in sinks)

        for sink in sinks:
            sink.send_signal(signal.SIGTERM)
            assert sink.wait(timeout=30) == 0
        assert list(targets.iterdir()) == []
    finally:
        for sink in sinks:
            if sink.poll() is None:
                sink.kill()
                sink.wait(timeout=10)


def test_a_process_with_a_set_port_serves_on_it_and_writes_no_target_file(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    targets = tmp_path / "targets"
    env = {
        **esb_env,
        "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
        "ESB_SERVICE__DISCOVERY_DIR": str(targets),
    }
    sink = EsbProcess(["run", "sink", "jsonl"], env, tmp_path / "sink.log")
    try:
        sink.wait_ready()
        assert f"health and metrics on http://127.0.0.1:{sink.health_port}" in sink.tail()
        assert not targets.exists()
    finally:
        sink.stop()


def test_a_free_port_with_discovery_dir_null_is_only_logged(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "esb.yaml"
    config.write_text("service:\n  discovery_dir: null\n")
    env = {**esb_env, "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl")}
    log = tmp_path / "sink.log"
    sink = start_unported(["run", "sink", "jsonl", "--config", str(config)], env, tmp_path, log)
    try:
        wait_for(lambda: bool(announced(log)), 30, log.read_text)
        [target] = announced(log)
        wait_for(partial(is_ready, target), 30, log.read_text)
        assert list(tmp_path.glob("**/*.json")) == []
    finally:
        sink.terminate()
        sink.wait(timeout=30)


def test_a_set_port_another_process_holds_is_one_line_naming_the_setting(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))  # where the process binds by default
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **esb_env,
            "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
            "ESB_SERVICE__HEALTH_PORT": str(port),
        }
        done = esb_cli(env, "run", "sink", "jsonl")
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: service.health_port {port} is in use by another process: set "
        "ESB_SERVICE__HEALTH_PORT or leave it unset for a free one\n"
    )


def test_a_health_host_or_discovery_dir_that_cannot_be_used_is_one_line(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**esb_env, "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl")}
    unassigned = esb_cli({**env, "ESB_SERVICE__HEALTH_HOST": "192.0.2.1"}, "run", "sink", "jsonl")
    assert unassigned.returncode == 1
    assert unassigned.stderr == (
        "Error: service.health_host '192.0.2.1' port 0: cannot listen: Cannot assign requested "
        "address (set ESB_SERVICE__HEALTH_HOST or ESB_SERVICE__HEALTH_PORT)\n"
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    unwritable = esb_cli(
        {**env, "ESB_SERVICE__DISCOVERY_DIR": str(a_file / "targets")}, "run", "sink", "jsonl"
    )
    assert unwritable.returncode == 1
    [line] = [line for line in unwritable.stderr.splitlines() if '"level"' not in line]
    assert re.fullmatch(
        rf"Error: service\.discovery_dir {a_file}/targets: cannot write jsonl-sink-\d+\.json: "
        r"Not a directory \(set ESB_SERVICE__DISCOVERY_DIR, or a fixed service\.health_port\)",
        line,
    ), unwritable.stderr
