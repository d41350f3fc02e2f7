"""The broker layer against a real RabbitMQ: confirms, mandatory routing, idempotent topology."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator

import aio_pika
import aiormq.abc
import aiormq.exceptions
import pytest
from click.testing import CliRunner

from esb import (
    Broker,
    BrokerSettings,
    BrokerUnavailable,
    CloudEvent,
    ConfigError,
    EnvelopeError,
    Metrics,
    UnroutableError,
)
from esb.amqp_client import CHANNEL_FRAMES, Delivery, RobustChannel
from esb.broker import PUBLISH_WINDOW, Addressed
from esb.cli import main
from esb.dlq import depth
from esb.topology import QueueSpec, declare_queue
from tests.conftest import Names
from tests.support.rabbit import queue_depth


def settings(url: str, names: Names, **extra: object) -> BrokerSettings:
    return BrokerSettings.model_validate({"url": url, "exchange": names.exchange, **extra})


@contextlib.asynccontextmanager
async def connected(url: str, names: Names, **extra: object) -> AsyncIterator[Broker]:
    """A connected broker whose queue ``names.queue`` takes ``shop.#``."""
    broker = Broker(settings(url, names, **extra), "test", Metrics())
    await broker.connect()
    try:
        await declare_queue(broker.channel, QueueSpec(names.queue, ["shop.#"]), broker.settings)
        yield broker
    finally:
        await broker.close()


async def test_publish_returns_after_confirm_and_the_message_is_in_the_queue(
    amqp_url: str, names: Names
) -> None:
    async with connected(amqp_url, names) as broker:
        event = CloudEvent.new("shop.order.created", "urn:shop", {"n": 1})
        await broker.publish(event)
        queue = await broker.channel.declare_queue(names.queue, passive=True)
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.headers["ce-id"] == event.id
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        await message.ack()


async def test_unroutable_publish_is_an_error_not_silence(amqp_url: str, names: Names) -> None:
    metrics = Metrics()
    broker = Broker(settings(amqp_url, names), "test", metrics)
    await broker.connect()
    try:
        with pytest.raises(
            UnroutableError, match=r"no queue is bound for routing key 'nobody\.listens'"
        ):
            await broker.publish(CloudEvent.new("nobody.listens", "urn:t"))
    finally:
        await broker.close()
    value = metrics.registry.get_sample_value(
        "esb_published_total", {"service": "test", "outcome": "unroutable"}
    )
    assert value == 1


async def test_declaring_twice_is_idempotent_and_a_conflict_is_a_clear_error(
    amqp_url: str, names: Names
) -> None:
    broker = Broker(settings(amqp_url, names), "test", Metrics())
    await broker.connect()
    try:
        spec = QueueSpec(names.queue, ["#"])
        first = await declare_queue(broker.channel, spec, broker.settings)
        second = await declare_queue(broker.channel, spec, broker.settings)
        assert first.name == second.name
        channel = await broker.connection.channel()
        with pytest.raises(ConfigError, match=f"queue '{names.queue}' exists with other arguments"):
            await declare_queue(channel, spec, settings(amqp_url, names, queue_type="classic"))
    finally:
        await broker.close()


async def test_publishes_started_together_are_all_queued_for_the_socket_in_one_turn(
    amqp_url: str, names: Names
) -> None:
    """aiormq's own write queue holds 10 frames: the eleventh publish of a turn waited, and
    the rest went out one per turn. Widened, before and after a reconnection. The publishes
    of a turn are gathered into one batch, written in the third turn: the callers' turn,
    the one that starts the batch's task, and the task's."""
    async with connected(amqp_url, names, reconnect_interval=0.2) as broker:
        for attempt in ("first connection", "reconnected"):
            channel = await broker.channel.get_underlay_channel()
            before = channel.delivery_tag
            events = [
                CloudEvent.new("shop.order.created", "urn:shop", {"n": n}) for n in range(200)
            ]
            publishes = [asyncio.create_task(broker.publish(event)) for event in events]
            for _ in range(3):
                await asyncio.sleep(0)
            assert channel.delivery_tag - before == 200, attempt
            await asyncio.gather(*publishes)
            if attempt == "first connection":
                await reconnected(broker)
        assert await queue_depth(amqp_url, names.queue) == 400


async def test_channels_hold_a_chunk_of_frames_before_and_after_a_reconnection(
    amqp_url: str, names: Names
) -> None:
    """aiormq's channels hold 10 frames: the connection's reader, taking what arrived at
    once, waited for the channel's reader every three deliveries. Widened, reconnected too."""
    async with connected(amqp_url, names, reconnect_interval=0.2) as broker:
        consuming = await broker.connection.channel()
        for attempt in ("first connection", "reconnected"):
            for channel in (broker.channel, consuming):
                underlay = await channel.get_underlay_channel()
                assert underlay.frames.maxsize == CHANNEL_FRAMES, attempt
            if attempt == "first connection":
                await reconnected(broker, consuming)


async def reconnected(broker: Broker, *channels: aio_pika.abc.AbstractChannel) -> None:
    """Drop the broker's connection and wait until it, its publishing channel and
    ``channels`` are back."""
    old = await broker.channel.get_underlay_channel()
    await broker.connection.transport.connection.close(ConnectionError("dropped"))
    await reopened(broker, old)
    for channel in channels:
        await channel.ready()


async def reopened(broker: Broker, old: aiormq.abc.AbstractChannel, seconds: float = 20) -> None:
    """Wait until the robust connection has replaced the publishing channel ``old``."""
    for _ in range(int(seconds / 0.1)):
        try:
            if await broker.channel.get_underlay_channel() is not old:
                await broker.channel.ready()
                return
        except aiormq.exceptions.ChannelInvalidStateError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"the publishing channel was not reopened within {seconds} s")


async def test_consumers_get_lean_deliveries_and_get_them_again_after_a_reconnection(
    amqp_url: str, names: Names
) -> None:
    broker = Broker(settings(amqp_url, names, reconnect_interval=0.2), "test", Metrics())
    await broker.connect()
    received: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        await received.put(message)

    try:
        channel = await broker.connection.channel()
        queue = await declare_queue(channel, QueueSpec(names.queue, ["shop.#"]), broker.settings)
        await queue.consume(keep)
        for n in range(2):
            event = CloudEvent.new("shop.order.created", "urn:shop", {"n": n})
            await broker.publish(event)
            message = await asyncio.wait_for(received.get(), timeout=10)
            assert isinstance(message, Delivery)
            assert message.headers["ce-id"] == event.id
            if n == 0:
                await reconnected(broker, channel)
    finally:
        await broker.close()


async def test_no_more_publishes_than_the_window_await_their_confirms_at_once(
    amqp_url: str, names: Names
) -> None:
    async with connected(amqp_url, names) as broker:
        channel = await broker.channel.get_underlay_channel()
        before = channel.delivery_tag
        events = [CloudEvent.new("shop.order.created", "urn:shop", {"n": n}) for n in range(600)]
        publishes = [asyncio.create_task(broker.publish(event)) for event in events]
        for _ in range(3):  # gathered, then written a window at a time
            await asyncio.sleep(0)
        assert channel.delivery_tag - before == PUBLISH_WINDOW
        await asyncio.gather(*publishes)
        assert channel.delivery_tag - before == 600
        assert await queue_depth(amqp_url, names.queue) == 600


async def test_a_publish_waits_for_a_place_in_the_window_no_longer_than_for_a_confirm(
    amqp_url: str, names: Names
) -> None:
    """While the broker confirms nothing (blocked), the window stays full: a publish past it
    fails as unconfirmed after ``publish_timeout`` instead of waiting for good."""
    async with connected(amqp_url, names, publish_timeout=0.5) as broker:
        # The window taken, as by publishes never confirmed.
        assert broker._window.try_take(PUBLISH_WINDOW)
        event = CloudEvent.new("shop.order.created", "urn:shop", {"n": 1})
        with pytest.raises(BrokerUnavailable, match="not confirmed"):
            await asyncio.wait_for(broker.publish(event), timeout=10)
        broker._window.give(1)
        await broker.publish(event)
        assert await queue_depth(amqp_url, names.queue) == 1


async def test_batches_larger_together_than_the_window_are_all_confirmed(
    amqp_url: str, names: Names
) -> None:
    """A hundred batches of ten against a window of 256: taken a place at a time, each batch
    held some while queueing for the rest and all waited out ``publish_timeout``."""
    async with connected(amqp_url, names, publish_timeout=5) as broker:

        def batch(n: int) -> list[Addressed]:
            return [
                Addressed(
                    CloudEvent.new("shop.order.created", "urn:shop", {"n": n}), names.queue, ""
                )
                for _ in range(10)
            ]

        outcomes = await asyncio.wait_for(
            asyncio.gather(*(broker.publish_each(batch(n)) for n in range(100))), timeout=4
        )
        assert [failure for batch_outcomes in outcomes for failure in batch_outcomes] == [
            None
        ] * 1000
        assert await queue_depth(amqp_url, names.queue) == 1000
        assert broker._window.used == 0


async def test_in_a_batch_what_cannot_be_published_fails_alone(amqp_url: str, names: Names) -> None:
    """One write carries the batch; a copy no queue takes and one AMQP cannot encode each get
    their own error, and the others are confirmed and queued."""
    async with connected(amqp_url, names) as broker:
        event = CloudEvent.new("shop.order.created", "urn:shop", {"n": 1})
        outcomes = await broker.publish_each(
            [
                Addressed(event, names.queue, ""),
                Addressed(event, f"{names.queue}.missing", ""),
                Addressed(event, names.queue, "", {"x-bad": object()}),
                Addressed(event, "k" * 256, ""),
                Addressed(event.model_copy(update={"id": "second"}), names.queue, ""),
            ]
        )
        assert [type(outcome) for outcome in outcomes] == [
            type(None),
            UnroutableError,
            EnvelopeError,
            EnvelopeError,
            type(None),
        ]
        assert "x-bad" in str(outcomes[2])
        assert "255" in str(outcomes[3])
        assert await queue_depth(amqp_url, names.queue) == 2


async def test_a_bounded_channel_reads_bodies_over_its_limit_without_keeping_them(
    amqp_url: str, names: Names
) -> None:
    """aiormq gathered a whole body before anyone saw its size: 40 MB took a consumer to
    270 MB (#9.8). Over the limit the body is dropped frame by frame, the size kept;
    under it the body arrives whole; the bound outlives a reconnection."""
    limit = 64 * 1024
    big = b"x" * 20_000_000
    async with connected(amqp_url, names, reconnect_interval=0.2) as broker:
        channel = await broker.connection.channel()
        assert isinstance(channel, RobustChannel)
        await channel.bound_bodies(limit)
        queue = await declare_queue(channel, QueueSpec(names.queue, ["shop.#"]), broker.settings)
        publisher = await broker.connection.channel()
        for attempt in ("first connection", "reconnected"):
            for body in (big, b"y" * limit):
                message = aio_pika.Message(body)
                await publisher.default_exchange.publish(message, routing_key=names.queue)
            del message
            gc.collect()
            tracemalloc.start()
            try:
                large = await queue.get(timeout=20)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            small = await queue.get(timeout=20)
            assert (large.body, large.body_size) == (b"", len(big)), attempt
            assert peak < 4_000_000, f"{attempt}: {peak:,} bytes taken reading a withheld body"
            assert small.body == b"y" * limit, attempt
            await large.ack()
            await small.ack()
            if attempt == "first connection":
                await reconnected(broker, channel, publisher)


async def test_refused_credentials_and_an_unknown_vhost_are_one_line_each(
    amqp_url: str, names: Names
) -> None:
    """The CLI adds "is RabbitMQ running?" only when nothing answers (tests/unit/test_cli.py)."""
    url = aio_pika.connection.make_url(amqp_url)
    wrong_password = str(url.with_password("not-the-password"))
    with pytest.raises(ConfigError, match=r"refused the credentials$"):
        await Broker(settings(wrong_password, names), "test", Metrics()).connect()
    no_such_vhost = str(url.with_path("/esbt-no-such-vhost"))
    with pytest.raises(
        ConfigError, match="refused to open virtual host 'esbt-no-such-vhost': it does not exist"
    ):
        await Broker(settings(no_such_vhost, names), "test", Metrics()).connect()


def test_the_cli_says_refused_credentials_without_suggesting_to_start_a_broker(
    amqp_url: str,
) -> None:
    url = aio_pika.connection.make_url(amqp_url).with_password("Canary-S3cret")
    result = CliRunner().invoke(main, ["topology", "show"], env={"ESB_BROKER__URL": str(url)})
    assert result.exit_code == 1
    assert result.output == (
        f"Error: broker {str(url).replace('Canary-S3cret', '***')} refused the credentials\n"
    )


async def test_the_depth_of_a_queue_it_may_not_read_is_an_error_and_leaves_no_channel_open(
    amqp_url: str, names: Names
) -> None:
    other = await aio_pika.connect(amqp_url)
    async with other, connected(amqp_url, names) as broker:
        locked = f"{names.prefix}.exclusive"  # another connection's: RESOURCE_LOCKED, not 404
        await (await other.channel()).declare_queue(locked, exclusive=True)
        channels = broker.connection.transport.connection.channels  # type: ignore[union-attr]
        before = len(channels)
        assert await depth(broker, names.queue) == 0
        assert await depth(broker, f"{names.prefix}.missing") is None
        with pytest.raises(aiormq.exceptions.ChannelLockedResource):
            await depth(broker, locked)
        await asyncio.sleep(0.1)
        assert len(channels) == before


async def test_topology_show_prints_each_queue_and_lot_or_that_it_is_not_declared(
    amqp_url: str, names: Names
) -> None:
    async with connected(amqp_url, names):
        pass  # names.queue and its parking lot declared, then the connection closed
    missing = f"{names.prefix}.missing"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["topology", "show", "--queue", names.queue, "--queue", missing],
        env={"ESB_BROKER__URL": amqp_url, "ESB_BROKER__EXCHANGE": names.exchange},
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        f"queue {names.queue}: 0 ready, 0 consumers",
        f"queue {names.queue}.dlq: 0 ready, 0 consumers",
        f"queue {missing}: not declared",
        f"queue {missing}.dlq: not declared",
    ]
