"""esb: an integration bus. Adapters beside each system, CloudEvents over RabbitMQ."""

from importlib.metadata import version

from esb.adapter import Adapter, Emitter, Sink, Source
from esb.amqp_binding import (
    STRUCTURED_CONTENT_TYPE,
    decode_binary,
    from_message,
    is_structured,
    to_message,
)
from esb.broker import Broker
from esb.data_dir import StorePath
from esb.dsn import describe_dsn, dsn_backend, scrub_dsn
from esb.envelope import CloudEvent, check_size, event_from_dict, loads_json, parse_structured
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
from esb.event_paths import FIELD_PATH, DataPath, EventRef, FieldPath, Template
from esb.expressions import event_variables
from esb.failures import http_error
from esb.limits import DEFAULT_MAX_BODY_BYTES, MAX_ATTRIBUTE_BYTES, SHORT_STRING_BYTES
from esb.metrics import Metrics
from esb.polling import Batch, CursorFile, CursorStore, PollingSettings, PollingSource
from esb.settings import (
    AdapterSettings,
    BrokerSettings,
    ProcessSettings,
    load_settings,
    redact_url,
)
from esb.sql_db import SqlDatabase, SqlStatements, sql_database
from esb.tls import verified_context
from esb.tracing import continue_trace, trace_headers

__version__ = version("esb")

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "FIELD_PATH",
    "MAX_ATTRIBUTE_BYTES",
    "SHORT_STRING_BYTES",
    "STRUCTURED_CONTENT_TYPE",
    "Adapter",
    "AdapterSettings",
    "Batch",
    "Broker",
    "BrokerSettings",
    "BrokerUnavailable",
    "CloudEvent",
    "ConfigError",
    "CursorFile",
    "CursorStore",
    "DataPath",
    "Emitter",
    "EnvelopeError",
    "EsbError",
    "EventRef",
    "FieldPath",
    "Metrics",
    "PermanentError",
    "PollingSettings",
    "PollingSource",
    "ProcessSettings",
    "ProcessingError",
    "Sink",
    "Source",
    "SqlDatabase",
    "SqlStatements",
    "StorePath",
    "Template",
    "TransientError",
    "UnroutableError",
    "__version__",
    "check_size",
    "continue_trace",
    "decode_binary",
    "describe_dsn",
    "dsn_backend",
    "event_from_dict",
    "event_variables",
    "from_message",
    "http_error",
    "is_structured",
    "load_settings",
    "loads_json",
    "parse_structured",
    "redact_url",
    "scrub_dsn",
    "sql_database",
    "to_message",
    "trace_headers",
    "verified_context",
]
