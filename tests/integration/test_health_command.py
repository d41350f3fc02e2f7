"""``esb health``, the image's HEALTHCHECK, against a real ``esb run`` process: it follows the
configured health port, and the process keeps its files in service.data_dir."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from esb.testing import free_port
from tests.support.processes import ESB, esb_cli, is_ready, wait_for


def test_esb_health_checks_the_configured_port_of_a_running_process(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    env = {
        **esb_env,
        "ESB_SERVICE__HEALTH_PORT": str(port),
        "ESB_SERVICE__DATA_DIR": str(data),
        # The http sink keeps an idempotency store (the jsonl sink needs none); its target is
        # never called in this test.
        "ESB_ADAPTER__URL": "http://127.0.0.1:9/never-called",
    }
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        sink = subprocess.Popen(
            [*ESB, "run", "sink", "http"],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=out,
            stderr=out,
        )
    try:
        wait_for(lambda: is_ready(f"127.0.0.1:{port}"), 30, log.read_text)
        healthy = esb_cli(env, "health")
        assert healthy.returncode == 0, healthy.stderr
        assert healthy.stdout == f"http://127.0.0.1:{port}/healthz: healthy\n"
        # Another port is another process: not this one's answer.
        elsewhere = esb_cli({**env, "ESB_SERVICE__HEALTH_PORT": str(free_port())}, "health")
        assert elsewhere.returncode == 1
        # Its store is in the data directory it was given, nothing in its working directory.
        assert (data / "http-sink.idempotency.sqlite3").is_file()
        assert list(cwd.iterdir()) == []
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, log.read_text()

    stopped = esb_cli(env, "health")
    assert stopped.returncode == 1
    [line] = stopped.stderr.splitlines()
    assert line.startswith(f"Error: http://127.0.0.1:{port}/healthz: no answer: ")
    assert "Traceback" not in stopped.stderr


def test_esb_health_without_a_set_port_says_which_setting_to_set() -> None:
    done = esb_cli({"ESB_SERVICE__HEALTH_PORT": "0"}, "health")
    assert done.returncode == 1
    assert done.stderr == (
        "Error: service.health_port is 0, so the process picked a free port at start: set "
        "ESB_SERVICE__HEALTH_PORT for the process and for this check\n"
    )
