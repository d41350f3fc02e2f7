"""A reader's terminal: one bash session that runs a page's blocks in order and keeps what a
terminal keeps between them (the directory, an activated environment, background jobs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


class Terminal:
    """Types blocks into one bash session (``set -e``: a failing command ends the session, and
    :meth:`type` fails with what the session printed)."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path, name: str) -> None:
        self.logs = logs
        self.name = name
        self.log = logs / f"{name}.log"
        self.typed = 0
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._say("set -e")

    def _say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def type(self, block: str, timeout: float = 120) -> None:
        """Run ``block`` to its end, as pasted (its background jobs stay running)."""
        self.typed += 1
        script = self.logs / f"{self.name}-{self.typed}.sh"
        done = self.logs / f"{self.name}-{self.typed}.done"
        script.write_text(block)
        # Sourced, so cd, activate and jobs persist; stdin from /dev/null, so no command
        # reads the rest of the session as its input.
        self._say(f"source {script} < /dev/null; touch {done}")
        deadline = time.monotonic() + timeout
        while not done.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"a command of block {self.typed} failed:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"block {self.typed} still runs after {timeout} s")
            time.sleep(0.2)

    def close(self) -> None:
        """End the session and every job it started (they share its process group)."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
        for stop in (signal.SIGTERM, signal.SIGKILL):  # a second for a graceful stop
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, stop)
                time.sleep(1)
        self.process.wait(timeout=30)
        self._out.close()
