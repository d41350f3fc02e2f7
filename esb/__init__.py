"""esb: an integration bus. Adapters beside each system, CloudEvents over RabbitMQ."""

from importlib.metadata import version

from esb.adapter import Adapter, Emitter, Sink, Source
from esb.amqp_binding import from_message, to_message
from esb.broker import Broker
from esb.envelope import CloudEvent, event_from_dict, parse_structured
from esb.errors import (
    BrokerUnavailable,
    ConfigError,
    EnvelopeError,
    EsbError,
    PermanentError,
    ProcessingError,
    TransientError,
    UnroutableError,
)
from esb.metrics import Metrics
from esb.settings import AdapterSettings, BrokerSettings, ProcessSettings, load_settings

__version__ = version("esb")

__all__ = [
    "Adapter",
    "AdapterSettings",
    "Broker",
    "BrokerSettings",
    "BrokerUnavailable",
    "CloudEvent",
    "ConfigError",
    "Emitter",
    "EnvelopeError",
    "EsbError",
    "Metrics",
    "PermanentError",
    "ProcessSettings",
    "ProcessingError",
    "Sink",
    "Source",
    "TransientError",
    "UnroutableError",
    "__version__",
    "event_from_dict",
    "from_message",
    "load_settings",
    "parse_structured",
    "to_message",
]
