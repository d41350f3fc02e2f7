"""Settings come from env and YAML, and every mistake is one readable line without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from esb import AdapterSettings, ConfigError, TransientError, load_settings
from esb.idempotency import PostgresStore
from esb.settings import redact_url


class OrderSettings(AdapterSettings):
    path: Path
    batch: int = 10


def test_environment_fills_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESB_ADAPTER__PATH", "/data/in.jsonl")
    monkeypatch.setenv("ESB_BROKER__PREFETCH", "7")
    settings = load_settings(OrderSettings)
    assert settings.adapter == OrderSettings(path=Path("/data/in.jsonl"))
    assert settings.broker.prefetch == 7


def test_environment_beats_yaml_and_both_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "esb.yaml"
    config.write_text(
        "broker:\n  prefetch: 5\n  exchange: x.events\nadapter:\n  path: /a\n  batch: 3\n"
    )
    monkeypatch.setenv("ESB_BROKER__PREFETCH", "9")
    settings = load_settings(OrderSettings, config)
    assert settings.broker.prefetch == 9
    assert settings.broker.exchange == "x.events"
    assert settings.adapter.batch == 3


def test_missing_setting_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(OrderSettings)
    assert str(caught.value) == (
        "setting adapter.path: Field required (set ESB_ADAPTER__PATH or adapter.path)"
    )


def test_wrong_and_unknown_settings_are_all_reported(tmp_path: Path) -> None:
    config = tmp_path / "esb.yaml"
    config.write_text("broker:\n  prefetch: 0\nadapter:\n  path: /a\n  colour: red\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(OrderSettings, config)
    message = str(caught.value)
    assert "setting broker.prefetch: Input should be greater than or equal to 1" in message
    assert f"setting adapter.colour: unknown setting in {config}" in message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(OrderSettings, tmp_path / "nope.yaml")


def test_a_config_file_that_is_a_directory_or_not_utf8_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(OrderSettings, tmp_path)
    assert str(caught.value) == f"config file {tmp_path}: cannot read it: Is a directory"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("adapter:\n  path: /caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_settings(OrderSettings, latin)
    assert str(caught.value) == f"config file {latin}: not UTF-8 text"


def test_an_empty_config_file_leaves_every_default(tmp_path: Path) -> None:
    empty = tmp_path / "esb.yaml"
    empty.write_text("# nothing set yet\n")
    settings = load_settings(OrderSettings, empty, adapter={"path": "/a"})
    assert settings.service.health_port == 0


def test_broker_password_never_appears_in_errors_or_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESB_BROKER__URL", "amqp://esb:Canary-S3cret@rabbit:5672/prod")
    monkeypatch.setenv("ESB_BROKER__PREFETCH", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings(OrderSettings, None, adapter={"path": "/a"})
    assert "Canary-S3cret" not in str(caught.value)
    monkeypatch.delenv("ESB_BROKER__PREFETCH")
    settings = load_settings(OrderSettings, None, adapter={"path": "/a"})
    assert "Canary-S3cret" not in repr(settings)
    assert settings.broker.redacted_url() == "amqp://esb:***@rabbit:5672/prod"


@pytest.mark.parametrize(
    "url",
    [
        "amqp://esb:S3cret-pw@rabbit:5672/esb",
        "amqps://rabbit:5671/esb?password=S3cret-pw&heartbeat=30",
        "postgresql://db/esb?sslpassword=S3cret-pw",
    ],
)
def test_urls_are_shown_without_their_password_wherever_it_is(url: str) -> None:
    shown = redact_url(url)
    assert "S3cret-pw" not in shown
    assert "***" in shown


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://esb:S3cret-pw@127.0.0.1:1/esb",
        "postgresql://esb@127.0.0.1:1/esb?password=S3cret-pw",
        "host=127.0.0.1 port=1 user=esb password=S3cret-pw",
        "postgresql://esb@[127.0.0.1:1/esb?password=S3cret-pw",
    ],
)
async def test_the_idempotency_store_never_shows_the_dsn_password(dsn: str) -> None:
    """Nothing listens on port 1: transient, for the runtime to retry; a DSN libpq cannot
    parse (the unclosed bracket) is a wrong setting."""
    store = PostgresStore(dsn, "sink", ttl=60)
    unparsable = "[" in dsn
    with pytest.raises(ConfigError if unparsable else TransientError) as caught:
        await store.open()
    assert str(caught.value).startswith("idempotency store: ")
    assert unparsable or "cannot connect to PostgreSQL host=127.0.0.1 port=1" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "S3cret-pw" not in str(caught.value)
