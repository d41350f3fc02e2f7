"""Run the shell commands a document shows, as written, the way a reader pastes them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from esb.teardown import delete_deployment
from tests.support.processes import wait_for

#: Where ``esb`` is installed beside this interpreter: the commands find it on PATH.
BIN = str(Path(sys.executable).parent)


def shell_commands(text: str, first: str) -> list[str]:
    """The commands of the ```sh block of ``text`` from the line starting with ``first``:
    continued lines joined, comments and blank lines left out."""
    start = text.index(first)
    block = text[text.rindex("```sh\n", 0, start) : text.index("```\n", start)]
    block = block[block.index(first) :].replace("\\\n", " ")
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines())
    return [line for line in lines if line]


class Shell:
    """Runs commands in ``cwd`` with ``env`` over this environment and ``esb`` on PATH; what
    a command left running writes goes to a log file in ``logs``."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd = cwd
        self.env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.logs = logs
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run a command to its end."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, command: str) -> subprocess.Popen[bytes]:
        """Start a command ending in ``&``, in a process group of its own to stop it whole."""
        assert command.endswith("&"), command
        log = self.logs / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", command[:-1]],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.background.append((process, log))
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        """SIGTERM to the command's group, as an operator stops it; its exit code."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        return process.wait(timeout=30)

    def output(self, process: subprocess.Popen[bytes]) -> str:
        return next(log for p, log in self.background if p is process).read_text()

    def kill_all(self) -> None:
        for process, _ in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def advertised_targets(directory: Path, timeout: float = 30) -> list[str]:
    """The ``HOST:PORT`` targets of the Prometheus file_sd files in ``directory``, once one is
    written."""

    def written() -> bool:
        return any(directory.glob("*.json"))

    wait_for(written, timeout, lambda: f"no target file in {directory}")
    return [
        target
        for path in sorted(directory.glob("*.json"))
        for group in json.loads(path.read_text())
        for target in group["targets"]
    ]


@contextlib.asynccontextmanager
async def prefixed_broker(url: str, sinks: Iterable[str]) -> AsyncIterator[dict[str, str]]:
    """The ``ESB_BROKER__*`` settings of a page's commands, under names of one test; what
    they declare (router, unrouted, ``sinks``' queues, the exchange) is deleted after it."""
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    env = {
        "ESB_BROKER__URL": url,
        "ESB_BROKER__PREFIX": prefix,
        "ESB_BROKER__EXCHANGE": f"{prefix}.events",
    }
    yield env
    await delete_deployment(url, prefix, env["ESB_BROKER__EXCHANGE"], sinks)
