"""Least privilege on the broker: what each esb role may do, as RabbitMQ permissions.

RabbitMQ grants a user, per virtual host, three regular expressions over
resource names: *configure* (declare, delete), *write* (publish to an
exchange) and *read* (consume, get, purge); a topic permission further limits
the routing keys a user may publish on a topic exchange. Publishing to the
default exchange (routing key = queue name) is a write to ``amq.default``,
which RabbitMQ cannot narrow by routing key: it reaches every queue of the
vhost. So each role gets (configure: nothing, for every role):

- source: write the events exchange, with a topic permission for the types
  it emits when they are known; read nothing.
- router: write ``amq.default`` (its hops, retries and parking lot); read
  ``<prefix>.router`` and ``<prefix>.transform.router`` (its own failed steps).
- transformer: write ``amq.default``; read its pools' queues (``<prefix>.transform``
  for the shared pool, ``<prefix>.transform.<pool>``).
- sink: write ``amq.default`` (its retries and parking lot); read its own
  work queue.

No role may declare anything: an administrator runs ``esb topology declare``
and the processes run with ``broker.declare: false``. :func:`definitions`
writes the users as a RabbitMQ definitions document, which ``rabbitmqctl
import_definitions``, the management API or ``load_definitions`` loads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esb.errors import ConfigError
from esb.pools import ROUTER, TRANSFORMER, is_pool_name
from esb.settings import read_secret
from esb.topology import QueueNames

#: The name RabbitMQ checks write permission on for the default exchange ``""``.
DEFAULT_EXCHANGE = "amq.default"

#: RabbitMQ's default password hashing: base64(salt + SHA-256(salt + password)), 4-byte salt.
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"

NOTHING = "^$"

Role = Literal["source", "router", "transformer", "sink"]


class BrokerUser(BaseModel):
    """One esb process's RabbitMQ user, as the users file names it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="RabbitMQ user name.")
    role: Role = Field(description="What the process is: source, router, transformer or sink.")
    password_file: Path | None = Field(
        default=None,
        description="File holding the password (a container secret); relative to the users file.",
    )
    password_env: str | None = Field(
        default=None, description="Environment variable holding the password."
    )
    source: str | None = Field(
        default=None,
        description="source: a `sources:` entry of the routes; it may publish only the types "
        "it `emits`.",
    )
    emits: list[str] = Field(
        default_factory=list,
        description="source: event types (topic patterns) it may publish; default: those of "
        "`source`, else any.",
    )
    pools: list[str] = Field(
        default_factory=list,
        description="transformer: the pools it runs (esb run transformer POOL...); "
        "default: the shared pool, transformer.",
    )
    sink: str | None = Field(default=None, description="sink: reads <prefix>.sink.<sink>.")
    queue: str | None = Field(
        default=None, description="sink: reads this queue instead (its consume.queue)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> BrokerUser:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_file and password_env")
        allowed = {
            "source": {"source", "emits"},
            "router": set(),
            "transformer": {"pools"},
            "sink": {"sink", "queue"},
        }[self.role]
        for key in ("source", "emits", "pools", "sink", "queue"):
            if key not in allowed and getattr(self, key):
                raise ValueError(f"{key} does not apply to a {self.role}")
        bad = [p for p in self.pools if not is_pool_name(p) or p == ROUTER]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a transformer pool")
        if self.role == "sink" and (self.sink is None) == (self.queue is None):
            raise ValueError("a sink needs exactly one of sink (a name) and queue")
        return self

    def password(self) -> str:
        """The password from its file or environment variable; errors never show it."""
        if self.password_file is not None:
            try:
                return read_secret(self.password_file, f"user {self.name}: password_file")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        variable = str(self.password_env)
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(f"user {self.name}: environment variable {variable} is not set")
        return value


class UsersFile(BaseModel):
    """The users file of ``esb topology declare --users``."""

    model_config = ConfigDict(extra="forbid")

    vhost: str | None = Field(default=None, description="Default: the vhost of broker.url.")
    users: list[BrokerUser] = Field(min_length=1)


@dataclass(frozen=True)
class Grant:
    """A user's permissions on one vhost; ``topic_write`` limits its keys on the events exchange."""

    configure: str
    write: str
    read: str
    topic_write: str | None = None


def exactly(names: Iterable[str]) -> str:
    """A permission regex matching these resource names and nothing else."""
    escaped = sorted({re.escape(name) for name in names})
    if not escaped:
        return NOTHING
    return f"^{escaped[0]}$" if len(escaped) == 1 else f"^(?:{'|'.join(escaped)})$"


def topic_regex(pattern: str) -> str:
    """An AMQP topic pattern (``*`` one word, ``#`` zero or more) as an unanchored regex."""
    words = pattern.split(".")
    out = ""
    for i, word in enumerate(words):
        after_hash = i > 0 and words[i - 1] == "#"
        if word == "#":
            if len(words) == 1:
                out += ".*"
            elif i == 0:
                out += r"(?:.*\.)?"
            elif i == len(words) - 1:
                out += r"(?:\..*)?"
            else:
                out += r"\.(?:.*\.)?"
            continue
        out += ("" if i == 0 or after_hash else r"\.") + (
            "[^.]+" if word == "*" else re.escape(word)
        )
    return out


def routing_keys(patterns: Iterable[str]) -> str:
    """A topic permission regex admitting routing keys that match any of ``patterns``."""
    regexes = sorted({topic_regex(p) for p in patterns})
    return f"^(?:{'|'.join(regexes)})$" if regexes else NOTHING


def grant(
    user: BrokerUser,
    names: QueueNames,
    exchange: str,
    emits: Mapping[str, list[str]] | None = None,
) -> Grant:
    """What ``user``'s role needs and nothing more. ``emits``: the routes' sources' types."""
    if user.role == "source":
        types = list(user.emits)
        if user.source is not None:
            if emits is None or user.source not in emits:
                known = ", ".join(sorted(emits or {})) or "none: give --routes DIR"
                raise ConfigError(
                    f"user {user.name}: source {user.source!r} is not declared "
                    f"in the routes' sources ({known})"
                )
            types += emits[user.source]
        return Grant(NOTHING, exactly([exchange]), NOTHING, routing_keys(types) if types else None)
    if user.role == "router":
        reads = [names.router, names.steps(ROUTER)]
        return Grant(NOTHING, exactly([DEFAULT_EXCHANGE]), exactly(reads))
    if user.role == "transformer":
        pools: Iterable[str] = user.pools or [TRANSFORMER]
        return Grant(NOTHING, exactly([DEFAULT_EXCHANGE]), exactly(names.steps(p) for p in pools))
    queue = user.queue if user.queue is not None else names.sink(str(user.sink))
    return Grant(NOTHING, exactly([DEFAULT_EXCHANGE]), exactly([queue]))


def password_hash(password: str, salt: bytes | None = None) -> str:
    """The hash RabbitMQ stores (``rabbit_password_hashing_sha256``): no clear password on disk."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def vhost_of(url: str) -> str:
    """The virtual host an AMQP URL names: its path, percent-decoded; ``/`` when empty."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def load_users(path: Path) -> UsersFile:
    """Read and validate a users file; every fault in one ConfigError line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read users file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"users file {path} is not YAML: {exc}") from None
    try:
        users = UsersFile.model_validate(raw)
    except ValidationError as exc:
        faults = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"users file {path}: {faults}") from None
    for user in users.users:
        if user.password_file is not None:
            user.password_file = path.parent / user.password_file
    return users


def definitions(
    users: UsersFile,
    names: QueueNames,
    exchange: str,
    vhost: str,
    emits: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A RabbitMQ definitions document: the vhost, each user (hashed password, no tags)
    and its permissions; sources with known types also get a topic permission."""
    vhost = users.vhost or vhost
    taken = [u.name for u in users.users]
    duplicate = next((n for n in taken if taken.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"user {duplicate} is named twice in the users file")
    document: dict[str, Any] = {
        "vhosts": [{"name": vhost}],
        "users": [],
        "permissions": [],
        "topic_permissions": [],
    }
    for user in users.users:
        granted = grant(user, names, exchange, emits)
        document["users"].append(
            {
                "name": user.name,
                "password_hash": password_hash(user.password()),
                "hashing_algorithm": HASHING_ALGORITHM,
                "tags": [],
            }
        )
        document["permissions"].append(
            {
                "user": user.name,
                "vhost": vhost,
                "configure": granted.configure,
                "write": granted.write,
                "read": granted.read,
            }
        )
        if granted.topic_write is not None:
            document["topic_permissions"].append(
                {
                    "user": user.name,
                    "vhost": vhost,
                    "exchange": exchange,
                    "write": granted.topic_write,
                    "read": NOTHING,
                }
            )
    return document


def write_definitions(path: Path, document: Mapping[str, Any]) -> None:
    """Write the document readable by its owner only: it holds password hashes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
