"""What every command group shares: errors as one line, a broker connected for one command."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from esb.broker import Broker
from esb.errors import BrokerUnavailable, EsbError
from esb.metrics import Metrics
from esb.settings import ProcessSettings

T = TypeVar("T")


class EsbGroup(click.Group):
    """Turns any :class:`EsbError` into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EsbError as exc:
            raise click.ClickException(str(exc)) from None


def run_connected(
    settings: ProcessSettings, service: str, work: Callable[[Broker], Awaitable[T]]
) -> T:
    """Run ``work`` on a broker connected as ``service`` and closed however it ends; a broker
    that cannot be reached is one line saying how to start one."""

    async def connected() -> T:
        broker = Broker(settings.broker, service, Metrics())
        try:
            await broker.connect()
        except BrokerUnavailable as exc:  # nothing answers; a refusal is a ConfigError of its own
            raise click.ClickException(
                f"{exc} (is RabbitMQ running? `make broker` starts one)"
            ) from None
        try:
            return await work(broker)
        finally:
            await broker.close()

    return asyncio.run(connected())
