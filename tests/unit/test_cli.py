"""The CLI, through click's CliRunner and as real processes: exit codes and one-line
messages, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from esb import __version__
from esb.cli import main
from tests.support.processes import esb_cli

ROUTES = str(Path(__file__).parents[2] / "routes")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"esb, version {__version__}\n"


def test_adapters_list_shows_the_builtin_adapters(runner: CliRunner) -> None:
    result = runner.invoke(main, ["adapters", "list"])
    assert result.exit_code == 0
    assert [line.split()[:2] for line in result.output.splitlines()] == [
        ["email", "sink"],
        ["files", "source,sink"],
        ["http", "sink"],
        ["http-poll", "source"],
        ["http-webhook", "source"],
        ["jsonl", "source,sink"],
        ["mqtt", "source,sink"],
        ["sql", "source,sink"],
    ]


def test_adapters_show_prints_settings_from_the_model(runner: CliRunner) -> None:
    result = runner.invoke(main, ["adapters", "show", "jsonl"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert (
        "  path (ESB_ADAPTER__PATH): File to append to. (required; e.g. /data/out.jsonl)" in lines
    )
    assert (
        "  window (ESB_ADAPTER__WINDOW): Events in flight awaiting confirm. (default 256; e.g. 64)"
        in lines
    )


def test_unknown_adapter_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "sink", "nosuch"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: unknown adapter 'nosuch'; "
        "installed adapters: email, files, http, http-poll, http-webhook, jsonl, mqtt, sql\n"
    )


def test_missing_setting_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "sink", "jsonl"], env={"ESB_ADAPTER__PATH": None})
    assert result.exit_code == 1
    assert result.output == (
        "Error: setting adapter.path: Field required (set ESB_ADAPTER__PATH or adapter.path)\n"
    )


def test_publish_of_an_invalid_event_file_names_the_field(
    runner: CliRunner, tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"specversion": "1.0", "id": "1", "type": "a.b"}')
    result = runner.invoke(main, ["publish", str(event)])
    assert result.exit_code == 1
    assert result.output == "Error: source: required attribute is missing\n"


def test_publish_with_bad_json_data_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["publish", "--type", "a.b", "--data", "{oops"])
    assert result.exit_code == 2
    assert "Invalid value for --data: not valid JSON" in result.output


def test_publish_to_a_dead_broker_says_how_to_start_one(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        ["publish", "--type", "a.b"],
        env={
            "ESB_BROKER__URL": "amqp://guest:Canary-S3cret@127.0.0.1:1/",
            "ESB_BROKER__CONNECT_TIMEOUT": "2",
        },
    )
    assert result.exit_code == 1
    assert "cannot connect to amqp://guest:***@127.0.0.1:1/" in result.output
    assert "make broker" in result.output
    assert "Canary-S3cret" not in result.output


def test_a_transformer_without_routes_is_a_usage_error() -> None:
    """Step definitions come only from route files, so a transformer cannot run without them."""
    result = CliRunner().invoke(main, ["run", "transformer", "map"])
    assert result.exit_code == 2
    assert "Missing option '--routes'" in result.output


@pytest.mark.parametrize(
    ("command", "text", "error"),
    [
        (
            ["router", "--routes", ROUTES],
            "service:\n  name: [router\n",
            "config file {config}:3:1: not valid YAML: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 2, column 9)",
        ),
        (
            ["transformer", "--routes", ROUTES],
            "- broker\n- service\n",
            "config file {config}: holds a list; it must map sections to settings "
            "(broker:, service:, adapter:, ...)",
        ),
        (
            ["journal"],
            "service:\n  helth_port: 8001\n",
            "setting service.helth_port: unknown setting in {config}",
        ),
        (["source", "jsonl"], None, "config file {config} does not exist"),
        (
            ["sink", "jsonl"],
            "service: 8001\n",
            "setting service: Input should be a valid dictionary or instance of "
            "ServiceSettings (set ESB_SERVICE or service in {config})",
        ),
    ],
    ids=["malformed-yaml", "not-a-mapping", "unknown-setting", "missing-file", "bad-section"],
)
def test_a_config_file_mistake_on_any_esb_run_is_one_line(
    tmp_path: Path, command: list[str], text: str | None, error: str
) -> None:
    config = tmp_path / "esb.yaml"
    if text is not None:
        config.write_text(text)
    env = {"ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl")}
    done = esb_cli(env, "run", *command, "--config", str(config))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"Error: {error.format(config=config)}\n"


def test_run_help_names_every_kind_of_process_it_runs(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    summary = " ".join(result.output.split("Options:")[0].split())
    assert "an adapter's source or sink, the router, a transformer or the journal" in summary
