"""Log lines: JSON, masked, and a long traceback keeps its end (the exception) rather than its
start; the AMQP client's lines about a passing connection loss are held back."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import aiormq.exceptions
import orjson
import pytest

from esb.logs import CLIENT_LOGGERS, JsonFormatter, configure
from esb.masking import MAX_TEXT_CHARS


def failure_with_a_long_cause() -> None:
    try:
        raise RuntimeError("driver said: " + "x" * 5_000)
    except RuntimeError as exc:
        raise ValueError("the card 4111 1111 1111 1111 was refused") from exc


def test_a_long_traceback_keeps_its_exception_line_masked() -> None:
    try:
        failure_with_a_long_cause()
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = orjson.loads(JsonFormatter().format(record))
    assert line["exc"].startswith("(traceback cut)\n")
    assert line["exc"].endswith("ValueError: the card *** was refused")
    assert len(line["exc"]) <= MAX_TEXT_CHARS + len("(traceback cut)\n")
    assert "4111" not in line["exc"]


@pytest.fixture
def logs_configured() -> Iterator[None]:
    """configure() for one test; the logging state it changes put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    clients = {name: logging.getLogger(name) for name in ("aiormq", "aio_pika", *CLIENT_LOGGERS)}
    saved = {name: (lg.level, lg.filters[:]) for name, lg in clients.items()}
    yield
    root.handlers[:], root.level = handlers, level
    for name, (client_level, filters) in saved.items():
        clients[name].setLevel(client_level)
        clients[name].filters[:] = filters


def _lines(err: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in err.splitlines() if line]


def test_the_clients_connection_loss_lines_are_held_back(
    logs_configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO")
    logging.getLogger("aiormq.connection").error(
        'Unexpected connection close from remote "%s", Connection.Close(reply_code=%r, '
        "reply_text=%r)",
        "amqp://broker",
        320,
        "CONNECTION_FORCED",
    )
    logging.getLogger("aio_pika.robust_connection").error(
        "Reconnect attempt failed %s due to %s: %s. Retrying after %r seconds.",
        "conn",
        "ChannelNotFoundEntity",
        aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND - no exchange 'x'"),
        1.0,
    )
    logging.getLogger("aio_pika.robust_connection").warning(
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
        "conn",
        ConnectionRefusedError(111, "Connection refused"),
        1.0,
    )
    assert _lines(capsys.readouterr().err) == []


def test_a_refusal_and_a_fault_in_esb_still_surface(
    logs_configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO")
    logging.getLogger("aio_pika.robust_connection").warning(
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
        "conn",
        aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED"),
        1.0,
    )
    try:
        raise ValueError("a bug in a consumer")
    except ValueError:
        logging.getLogger("aiormq.channel").error("Consumer callback failed", exc_info=True)
    levels = [(line["logger"], line["level"]) for line in _lines(capsys.readouterr().err)]
    assert levels == [("aio_pika.robust_connection", "warning"), ("aiormq.channel", "error")]


def test_at_debug_the_loss_lines_are_kept_as_debug(
    logs_configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("DEBUG")
    logging.getLogger("aiormq.connection").warning(
        "Server connection %r was stuck. No frames were received in %d seconds.", "conn", 3
    )
    [line] = _lines(capsys.readouterr().err)
    assert (line["logger"], line["level"]) == ("aiormq.connection", "debug")
