"""Process settings: broker, service and the adapter's own model.

Values come, strongest first, from keyword arguments, environment variables
(``ESB_`` prefix, ``__`` between levels: ``ESB_BROKER__URL``,
``ESB_ADAPTER__PATH``) and a YAML file (``--config``) with the sections
``broker``, ``service``, ``consume``, ``source`` and ``adapter`` (and the others below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self, cast, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from esb.data_dir import StorePath, place_in
from esb.errors import ConfigError
from esb.event_paths import FieldPath

MaskPattern = Literal["card", "email"]
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ENV_PREFIX = "ESB_"


class AdapterSettings(BaseModel):
    """Base of every adapter's settings model: unknown keys are mistakes."""

    model_config = ConfigDict(extra="forbid")


class BrokerSettings(BaseModel):
    """How to reach RabbitMQ and how esb uses it."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr = Field(
        default=SecretStr(DEFAULT_AMQP_URL),
        description="AMQP URL; its password is never logged.",
        examples=["amqp://esb:secret@rabbitmq:5672/esb"],
    )
    failover_urls: list[SecretStr] = Field(
        default_factory=list,
        description="More nodes of the cluster; the client moves to the next one when a node "
        "stops answering.",
        examples=[["amqp://esb:secret@rabbit-2:5672/esb"]],
    )
    url_file: Path | None = Field(
        default=None,
        description="File holding the AMQP URL (a container secret); overrides url.",
        examples=["/run/secrets/amqp_url"],
    )
    tls_ca_file: Path | None = Field(
        examples=["/etc/esb/tls/ca.pem"],
        default=None,
        description="CA bundle to verify the broker's certificate (amqps://).",
    )
    tls_cert_file: Path | None = Field(
        examples=["/etc/esb/tls/client.pem"],
        default=None,
        description="Client certificate, for mutual TLS.",
    )
    tls_key_file: Path | None = Field(
        examples=["/etc/esb/tls/client.key"],
        default=None,
        description="Client key, for mutual TLS.",
    )
    exchange: str = Field(
        examples=["shop.events"],
        default="esb.events",
        description="Topic exchange events are published to.",
    )
    prefix: str = Field(
        examples=["esb.shop"],
        default="esb",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Prefix of the queues esb names: <prefix>.router, <prefix>.sink.<name>, ...",
    )
    prefetch: int = Field(
        examples=[128], default=64, ge=1, le=65535, description="Unacked deliveries per consumer."
    )
    queue_type: Literal["quorum", "classic"] = Field(
        examples=["classic"],
        default="quorum",
        description="Quorum queues replicate and enforce a delivery limit.",
    )
    delivery_limit: int = Field(
        examples=[10],
        default=20,
        ge=1,
        description="Deliveries before a quorum queue dead-letters a message.",
    )
    max_body_bytes: int = Field(
        examples=[4_194_304],
        default=1_048_576,
        ge=1,
        description="Larger bodies are refused as envelope errors.",
    )
    publish_timeout: float = Field(
        examples=[30.0], default=10.0, gt=0, description="Seconds to wait for a publisher confirm."
    )
    connect_timeout: float = Field(
        examples=[5.0], default=10.0, gt=0, description="Seconds per connection attempt."
    )
    reconnect_interval: float = Field(
        examples=[2.0],
        default=1.0,
        gt=0,
        description="Seconds between reconnection attempts after a loss.",
    )
    declare: bool = Field(
        examples=[False],
        default=True,
        description="Declare the exchange and queues at start; false for least-privilege users "
        "(no configure permission): they only check that `esb topology declare` declared them.",
    )

    @model_validator(mode="after")
    def _url_from_file(self) -> BrokerSettings:
        if self.url_file is not None:
            self.url = SecretStr(read_secret(self.url_file, "broker.url_file"))
        return self

    def redacted_url(self) -> str:
        """The URL with its password masked, safe for logs and errors."""
        return redact_url(self.url.get_secret_value())

    def all_urls(self) -> list[str]:
        """``url`` first, then the failover nodes."""
        return [self.url.get_secret_value(), *(u.get_secret_value() for u in self.failover_urls)]


class ServiceSettings(BaseModel):
    """The process itself: its name, health endpoint and shutdown grace."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        examples=["fulfilment-sink"], default=None, description="Service name in metrics and logs."
    )
    health_host: str = Field(
        examples=["127.0.0.1"],
        default="0.0.0.0",  # noqa: S104 (containers expose the health port to probes)
        description="Address of /healthz, /readyz, /metrics.",
    )
    health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the same; 0 picks a free one, so processes on one machine never "
        "collide (logged at start and written to discovery_dir).",
        examples=[8000],
    )
    data_dir: Path = Field(
        default=Path("."),
        description="Directory of the files the process keeps (the SQLite idempotency store "
        "and journal, polling cursors, discovery_dir): each relative store path is taken from "
        "here; created if missing, and it must be writable at start.",
        examples=["/data"],
    )
    discovery_dir: StorePath | None = Field(
        default=Path("esb-targets"),
        description="Where a process whose health port was picked for it writes its Prometheus "
        "file_sd target (<service>-<pid>.json; relative: in data_dir), removed on a clean stop; "
        "null writes none.",
        examples=["/var/lib/prometheus/esb-targets"],
    )
    shutdown_grace: float = Field(
        examples=[10.0],
        default=3.0,
        ge=0,
        description="Seconds to finish in-flight work after SIGTERM.",
    )
    open_backoff_max: float = Field(
        examples=[60.0],
        default=30.0,
        gt=0,
        description="Longest pause in seconds between two attempts to open a sink's or "
        "source's target (or the idempotency store) that is down at start; the process is "
        "not ready meanwhile.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe log records written.", examples=["DEBUG"]
    )
    mask_fields: list[str] = Field(
        examples=[["password", "iban", "phone"]],
        default_factory=lambda: [
            "password",
            "secret",
            "token",
            "card_number",
            "cvv",
            "iban",
            "email",
        ],
        description="Data fields whose values are masked in logs and parked-message headers.",
    )
    mask_patterns: list[MaskPattern] = Field(
        examples=[["card"]],
        default_factory=lambda: list(get_args(MaskPattern)),
        description="Patterns masked in every log line and header: card numbers, e-mail addresses.",
    )


class RetrySettings(BaseModel):
    """Delayed retries of transient failures, through delay queues (no consumer sleeps)."""

    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(
        examples=[8], default=5, ge=0, le=30, description="Retries before a message is parked."
    )
    initial_delay: float = Field(
        examples=[5.0], default=1.0, gt=0, le=3600, description="Seconds before the first retry."
    )
    multiplier: float = Field(
        examples=[3.0], default=2.0, ge=1, description="Each retry waits this much longer."
    )
    max_delay: float = Field(
        examples=[600.0],
        default=300.0,
        gt=0,
        le=86_400,
        description="Longest wait between two attempts.",
    )
    jitter: float = Field(
        examples=[0.1],
        default=0.2,
        ge=0,
        lt=1,
        description="Random spread of each delay, as a fraction of it.",
    )


class FailureSettings(BaseModel):
    """Operator overrides of how failures are classified, by exception type or HTTP status."""

    model_config = ConfigDict(extra="forbid")

    retry: list[str | int] = Field(
        default_factory=list,
        description="Exception type names or HTTP statuses to retry.",
        examples=[["LockTimeout", 409]],
    )
    park: list[str | int] = Field(
        default_factory=list,
        description="Exception type names or HTTP statuses to park at once.",
        examples=[[422]],
    )
    pause: list[str | int] = Field(
        default_factory=list,
        description="Exception type names or HTTP statuses that pause the sink (open its circuit).",
        examples=[[401, 403]],
    )


class CircuitSettings(BaseModel):
    """When a target is plainly down, stop consuming and probe instead of burning retries."""

    model_config = ConfigDict(extra="forbid")

    threshold: int = Field(
        examples=[10],
        default=5,
        ge=0,
        description="Consecutive transient failures that open the circuit; 0 disables.",
    )
    open_seconds: float = Field(
        examples=[5.0], default=2.0, gt=0, description="First wait before a probe."
    )
    max_open_seconds: float = Field(
        examples=[60.0], default=30.0, gt=0, description="Longest wait between probes."
    )


class PostgresStoreSettings(BaseModel):
    """A store's PostgreSQL connection: given, or read from a secret file."""

    model_config = ConfigDict(extra="forbid")

    #: The settings section, for the error naming a DSN file that cannot be read.
    SECTION: ClassVar[str]

    dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL connection string (backend postgres).",
        examples=["postgresql://esb@db/esb"],
    )
    dsn_file: Path | None = Field(
        examples=["/run/secrets/esb_dsn"],
        default=None,
        description="File holding the DSN (a container secret); overrides dsn.",
    )

    @model_validator(mode="after")
    def _dsn_from_file(self) -> Self:
        if self.dsn_file is not None:
            self.dsn = SecretStr(read_secret(self.dsn_file, f"{self.SECTION}.dsn_file"))
        return self


class IdempotencySettings(PostgresStoreSettings):
    """Where a sink remembers the message ids it applied, so a redelivery is not applied twice."""

    SECTION = "idempotency"

    backend: Literal["sqlite", "postgres", "none"] = Field(
        examples=["postgres"],
        default="sqlite",
        description="sqlite: a file beside the process; postgres: shared by replicas; "
        "none: the adapter's target de-duplicates by itself.",
    )
    path: StorePath | None = Field(
        examples=["/var/lib/esb/fulfilment.idempotency.sqlite3"],
        default=None,
        description="SQLite file; default <service>.idempotency.sqlite3 in service.data_dir.",
    )
    ttl_hours: float = Field(
        examples=[72.0], default=168.0, gt=0, description="How long an id is remembered."
    )


class JournalSettings(PostgresStoreSettings):
    """Message tracking: every hop's record of each event, stored for ``esb trace``."""

    SECTION = "journal"

    enabled: bool = Field(
        examples=[True],
        default=False,
        description="Write a hop record of every event this process handles to the journal "
        "queue (<prefix>.journal); esb run journal stores them.",
    )
    keys: list[FieldPath] = Field(
        default_factory=list,
        max_length=8,
        description="Data fields (dotted paths) whose values each record keeps as business "
        "keys, for esb trace --key FIELD=VALUE; nothing else of the data is recorded.",
        examples=[["order_id", "deal_id"]],
    )
    flush_seconds: float = Field(
        examples=[1.0],
        default=0.5,
        gt=0,
        le=60,
        description="How often a process sends its records.",
    )
    max_bytes: int = Field(
        examples=[67_108_864],
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of records the journal queue holds (in the broker's memory: they "
        "are transient); past it the oldest are dropped, so a stopped journal process costs "
        "the broker bounded memory and never holds the flow.",
    )
    backend: Literal["sqlite", "postgres"] = Field(
        examples=["postgres"],
        default="sqlite",
        description="Where esb run journal stores records (esb trace reads).",
    )
    path: StorePath = Field(
        default=Path("esb-journal.sqlite3"),
        description="SQLite file (relative: in service.data_dir).",
        examples=["/var/lib/esb/journal.sqlite3"],
    )
    retention_hours: float = Field(
        examples=[24.0], default=168.0, gt=0, description="How long records are kept."
    )

    @model_validator(mode="after")
    def _postgres_needs_a_dsn(self) -> JournalSettings:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend postgres needs dsn or dsn_file")
        return self


class ConsumeSettings(BaseModel):
    """Where a sink takes its messages from."""

    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(
        examples=["esb.sink.fulfilment"],
        default=None,
        description="Queue name; default esb.sink.<service>.",
    )
    bindings: list[str] = Field(
        examples=[["shop.order.*"]],
        default_factory=list,
        description="Topic patterns on the events exchange to bind the queue to directly; "
        "none when routes feed the sink.",
    )
    ordered: bool = Field(
        examples=[True],
        default=False,
        description="Per-key ordering: one active consumer among the replicas (RabbitMQ's "
        "single active consumer) handling one delivery at a time, in queue order.",
    )
    partitions: int | None = Field(
        examples=[4],
        default=None,
        ge=1,
        le=64,
        description="The sink's partitions, as its route-file declaration says (sinks: NAME: "
        "partitions): consume every partition queue <queue>.p0.. in order, sharing them with "
        "the other replicas.",
    )
    hold_surplus: float = Field(
        examples=[10.0],
        default=30.0,
        gt=0,
        description="Seconds a replica keeps a partition beyond its even share (partitions "
        "over replicas, rounded down) before handing it on, so that every replica gets work.",
    )
    age_objective: float = Field(
        examples=[60.0],
        default=300.0,
        gt=0,
        description="Seconds from an event's occurrence to its being applied that this sink's "
        "flow should stay under at p99 (esb_age_objective_seconds; the EsbFlowLate alert).",
    )


class SourceSettings(BaseModel):
    """What a source does to every event it emits."""

    model_config = ConfigDict(extra="forbid")

    correlation_field: FieldPath | None = Field(
        default=None,
        description="Dotted path into data (order_id, order.number) whose value becomes each "
        "event's correlationid, so every event of one order shares it across sources; an "
        "event without it keeps its own (counted as operation=correlate, result=missing).",
        examples=["order_id"],
    )


class ProcessSettings(BaseSettings):
    """Everything one esb process needs; ``adapter`` is typed per adapter."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    consume: ConsumeSettings = Field(default_factory=ConsumeSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    failures: FailureSettings = Field(default_factory=FailureSettings)
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    adapter: Any = None

    #: The sections of the ``--config`` file, weaker than the environment.
    file_values: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, InitSettingsSource(settings_cls, cls.file_values))

    @model_validator(mode="after")
    def _stores_in_data_dir(self) -> Self:
        place_in(self, self.service.data_dir)
        return self


def load_settings(
    adapter_settings: type[AdapterSettings] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> ProcessSettings:
    """Build and validate settings, turning every fault into one readable :class:`ConfigError`."""
    fields: dict[str, Any] = {}
    if adapter_settings is not None:
        fields["adapter"] = (adapter_settings, Field(default_factory=dict, validate_default=True))
    values = read_config_file(config_file) if config_file is not None else {}
    base = type("ProcessSettings", (ProcessSettings,), {"file_values": values})
    model = cast(type[ProcessSettings], create_model("ProcessSettings", __base__=base, **fields))
    try:
        return model(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc, config_file)) from None
    except ValueError as exc:  # an environment variable that is not the JSON its field needs
        raise ConfigError(f"cannot read settings: {exc}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The sections of a YAML settings file; any fault is one line naming the file (and, for
    YAML that does not parse, the line and column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}{yaml_fault(exc)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        kind = "list" if isinstance(doc, list) else "single value"
        raise ConfigError(
            f"config file {path}: holds a {kind}; it must map sections to settings "
            "(broker:, service:, adapter:, ...)"
        )
    return doc


def yaml_fault(exc: yaml.YAMLError) -> str:
    """``:LINE:COLUMN: not valid YAML: PROBLEM (CONTEXT at line L, column C)``, as YAML says."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f": not valid YAML: {exc}"
    mark, context = exc.problem_mark, exc.context_mark
    text = f":{mark.line + 1}:{mark.column + 1}: not valid YAML: {exc.problem}"
    if exc.context is not None and context is not None:
        text += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
    return text


def describe_settings_error(exc: ValidationError, config_file: Path | None) -> str:
    """One line per fault, with the environment variable that would fix it; no values shown."""
    where = f" in {config_file}" if config_file else ""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        env = ENV_PREFIX + "__".join(part.upper() for part in loc)
        if error["type"] == "extra_forbidden":
            lines.append(f"setting {'.'.join(loc)}: unknown setting{where}")
        else:
            lines.append(
                f"setting {'.'.join(loc)}: {error['msg']} (set {env} or {'.'.join(loc)}{where})"
            )
    return "; ".join(lines)


def read_secret(path: Path, setting: str) -> str:
    """A secret from a file (Docker and Kubernetes mount them so); the error never shows it."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None


#: Query parameters that carry a secret in AMQP and PostgreSQL URLs.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword", "passphrase"})


def redact_url(url: str) -> str:
    """Mask the password of a URL, in its user part and in its query."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    if parts.query:
        query = [
            (key, "***" if key.lower() in _SECRET_PARAMETERS else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)
