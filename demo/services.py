"""The esb processes of the example integrations and each one's settings file.

Every process is a plain ``esb run ...`` with a ``--config`` YAML file,
written where an operator can read it: what the demo runs is what a
deployment would run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROUTES = Path(__file__).resolve().parents[1] / "routes"


@dataclass
class Service:
    """One esb process: what it runs, its settings and, once started, the process."""

    name: str
    command: list[str]
    settings: dict[str, Any]
    health_port: int
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/metrics"

    async def start(self, out: Path, env: dict[str, str]) -> None:
        config = out / "config" / f"{self.name}.yaml"
        settings = {**self.settings, "service": {"name": self.name}}
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        log = (out / "logs" / f"{self.name}.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "esb.cli",
            "run",
            *self.command,
            "--config",
            str(config),
            cwd=out / "state",
            env={
                **os.environ,
                **env,
                "ESB_SERVICE__HEALTH_PORT": str(self.health_port),
                # Its stores stay in the demo's output, also in the image, which sets /data.
                "ESB_SERVICE__DATA_DIR": str(out / "state"),
            },
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops each in turn
        )
        log.close()

    async def wait_ready(self, session: aiohttp.ClientSession, out: Path, within: float) -> None:
        deadline = asyncio.get_running_loop().time() + within
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while asyncio.get_running_loop().time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready; {self._log_end(out)}")

    def check_running(self, out: Path) -> None:
        """Fail when the process has exited (a port taken under it, a bad setting)."""
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError(f"{self.name} exited; {self._log_end(out)}")

    def _log_end(self, out: Path) -> str:
        log = (out / "logs" / f"{self.name}.log").read_text(errors="replace")[-2000:]
        return f"its log ends:\n{log}"

    async def stop(self, grace: float = 10) -> None:
        """SIGTERM, as an orchestrator stops a container; SIGKILL if it hangs."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
