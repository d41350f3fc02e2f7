"""``/healthz``, ``/readyz`` and ``/metrics`` for every process, served by aiohttp."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: A process's readiness: whether it is ready, and one line per part saying why (a queue
#: consuming, a circuit open and when its next probe is, a broker not connected).
Readiness = tuple[bool, Sequence[str]]


class HealthServer:
    """Liveness answers while the event loop runs; readiness asks ``is_ready`` and says why."""

    def __init__(
        self, registry: CollectorRegistry, is_ready: Callable[[], Readiness], host: str, port: int
    ) -> None:
        self._registry = registry
        self._is_ready = is_ready
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Listen; returns the port, the one picked when the given port was 0."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port: int = self._runner.addresses[0][1]
        self.port = port
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, parts = self._is_ready()
        text = "".join(f"{line}\n" for line in ("ready" if ready else "not ready", *parts))
        return web.Response(status=200 if ready else 503, text=text)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
