"""The least-privilege grants and the users file, without a broker (tests/integration proves
RabbitMQ enforces them)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from esb.errors import ConfigError
from esb.permissions import (
    BrokerUser,
    exactly,
    grant,
    load_users,
    password_hash,
    routing_keys,
    vhost_of,
)
from esb.topic import topic_matches
from esb.topology import QueueNames

NAMES = QueueNames("esb")


def user(role: str, **extra: object) -> BrokerUser:
    return BrokerUser.model_validate(
        {"name": f"u-{role}", "role": role, "password_env": "PW", **extra}
    )


@pytest.mark.parametrize(
    "pattern",
    ["shop.order.created", "shop.order.*", "shop.#", "#", "#.paid", "shop.#.paid", "*.*.paid"],
)
@pytest.mark.parametrize(
    "key",
    ["shop.order.created", "shop.order.paid", "shop", "shop.paid", "crm.order.paid", "shopxorder"],
)
def test_topic_permission_admits_exactly_the_keys_the_pattern_matches(
    pattern: str, key: str
) -> None:
    assert bool(re.search(routing_keys([pattern]), key)) == topic_matches(pattern, key)


def test_names_are_matched_literally_not_as_regex() -> None:
    regex = exactly(["esb.sink.crm"])
    assert re.search(regex, "esb.sink.crm")
    assert not re.search(regex, "esbXsink.crm")
    assert not re.search(regex, "esb.sink.crm.dlq")


def test_no_role_may_configure_and_only_a_source_writes_the_events_exchange() -> None:
    roles: dict[str, dict[str, object]] = {
        "source": {},
        "router": {},
        "transformer": {"pools": ["heavy"]},
        "sink": {"sink": "crm"},
    }
    grants = {
        role: grant(user(role, **extra), NAMES, "esb.events") for role, extra in roles.items()
    }
    assert {g.configure for g in grants.values()} == {"^$"}
    assert grants["source"].write == r"^esb\.events$"
    assert grants["source"].read == "^$"
    assert grants["source"].topic_write is None  # no declared types: any type
    for role in ("router", "transformer", "sink"):
        assert grants[role].write == r"^amq\.default$"
    assert grants["router"].read == r"^(?:esb\.router|esb\.transform\.router)$"
    assert grants["transformer"].read == r"^esb\.transform\.heavy$"
    shared = grant(user("transformer"), NAMES, "esb.events")
    assert shared.read == r"^esb\.transform$"
    assert grants["sink"].read == r"^esb\.sink\.crm$"


def test_a_source_named_in_the_routes_may_publish_only_what_it_emits() -> None:
    granted = grant(user("source", source="shop"), NAMES, "esb.events", {"shop": ["shop.order.*"]})
    assert granted.topic_write is not None
    assert re.search(granted.topic_write, "shop.order.paid")
    assert not re.search(granted.topic_write, "crm.customer.created")
    with pytest.raises(ConfigError, match="source 'shop' is not declared"):
        grant(user("source", source="shop"), NAMES, "esb.events", None)


@pytest.mark.parametrize(
    ("fields", "fault"),
    [
        ({"role": "sink"}, "a sink needs exactly one of sink"),
        ({"role": "router", "sink": "crm"}, "sink does not apply to a router"),
        ({"role": "transformer", "pools": ["Heavy"]}, "'Heavy' is not a transformer pool"),
        ({"role": "transformer", "pools": ["router"]}, "'router' is not a transformer pool"),
        ({"role": "router", "password_env": None}, "exactly one of password_file"),
    ],
)
def test_a_users_file_mistake_is_one_line_naming_the_user_and_field(
    tmp_path: Path, fields: dict[str, object], fault: str
) -> None:
    entry = {"name": "u1", "password_env": "PW", **fields}
    if entry["password_env"] is None:
        del entry["password_env"]
    path = tmp_path / "users.yaml"
    path.write_text(f"users: [{entry!r}]".replace("'", '"').replace("None", "null"))
    with pytest.raises(ConfigError, match=fault) as raised:
        load_users(path)
    assert "\n" not in str(raised.value)


def test_a_missing_password_is_named_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable PW is not set"):
        user("router").password()
    (tmp_path / "users.yaml").write_text(
        'users: [{name: r, role: router, password_file: "secret/router"}]'
    )
    loaded = load_users(tmp_path / "users.yaml")
    assert loaded.users[0].password_file == tmp_path / "secret" / "router"


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    salt = b"\x01\x02\x03\x04"
    raw = base64.b64decode(password_hash("s3cret", salt))
    assert raw == salt + hashlib.sha256(salt + b"s3cret").digest()
    assert password_hash("s3cret") != password_hash("s3cret")  # a new salt each time


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u:p@rabbit:5672/", "/"),
        ("amqp://u:p@rabbit:5672", "/"),
        ("amqp://u:p@rabbit/esb", "esb"),
        ("amqps://u:p@rabbit/%2Fprod", "/prod"),
    ],
)
def test_the_vhost_comes_from_the_broker_url(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost
