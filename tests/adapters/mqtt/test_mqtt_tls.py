"""MQTT over verified TLS, with client certificates, against a private Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from adapters.mqtt import MqttSink
from adapters.mqtt.settings import MqttSinkSettings
from esb import CloudEvent, ConfigError, TransientError
from tests.adapters.mqtt.conftest import Mqtt, PrivateMosquitto, subscriber
from tests.support.pki import authority, signed

EVENT = CloudEvent.new("display.text", "urn:esb", {"text": "Gate 4"})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for IP 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    authority(d)
    signed("server", "/CN=127.0.0.1", d, "subjectAltName=IP:127.0.0.1\n")
    signed("client", "/CN=esb-sink", d)
    return d


@pytest.fixture
def tls_mosquitto(tmp_path: Path, pki: Path) -> Iterator[PrivateMosquitto]:
    node = PrivateMosquitto(
        tmp_path / "mosquitto",
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\n"
        f"keyfile {pki / 'server.key'}\nrequire_certificate true\n",
    )
    node.start()
    yield node
    node.kill()


def settings(node: PrivateMosquitto, **extra: object) -> MqttSinkSettings:
    return MqttSinkSettings.model_validate(
        {"host": "127.0.0.1", "port": node.port, "topic": "dock/4", "tls": True, **extra}
    )


async def test_mutual_tls_publishes_to_a_verified_broker(
    tls_mosquitto: PrivateMosquitto, pki: Path
) -> None:
    files = {
        "ca_certs": str(pki / "ca.pem"),
        "certfile": str(pki / "client.pem"),
        "keyfile": str(pki / "client.key"),
    }
    sink = MqttSink(
        settings(
            tls_mosquitto,
            tls_ca_file=files["ca_certs"],
            tls_cert_file=files["certfile"],
            tls_key_file=files["keyfile"],
        )
    )
    await sink.open()
    try:
        with subscriber(Mqtt("127.0.0.1", tls_mosquitto.port), "dock/#", **files) as received:
            await sink.write(EVENT)
            [message] = await received.wait(1)
    finally:
        await sink.close()
    assert orjson.loads(message.payload) == {"text": "Gate 4"}


# paho-mqtt 2.2.0 leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_broker_the_ca_does_not_vouch_for_is_refused(
    tls_mosquitto: PrivateMosquitto,
) -> None:
    sink = MqttSink(settings(tls_mosquitto, timeout=1))  # the system's CAs only
    try:
        with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
            await sink.open()
    finally:
        await sink.close()


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"^mqtt sink: TLS files: .*No such file"):
        MqttSink(MqttSinkSettings(host="127.0.0.1", topic="x", tls=True, tls_ca_file=missing))
