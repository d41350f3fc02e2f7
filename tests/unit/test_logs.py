"""Log lines: JSON, masked, and a long traceback keeps its end (the exception) rather than its
start."""

from __future__ import annotations

import logging
import sys

import orjson

from esb.logs import JsonFormatter
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
