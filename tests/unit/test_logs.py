"""The log formats, text and JSON lines, and the limit on repeated log lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pixelpost import logs
from pixelpost.logs import LogEvery


def test_a_repeated_line_is_let_through_once_per_interval_with_a_count() -> None:
    now = [0.0]
    every = LogEvery(10, clock=lambda: now[0])
    assert every.due() == ""
    assert every.due() is None
    assert every.due() is None
    now[0] = 10
    assert every.due() == " (2 more since the last such line)"
    now[0] = 25
    assert every.due() == ""


def _logged(log_format: logs.LogFormat, emit: Callable[[logging.Logger], None]) -> str:
    """What a logger writes in `log_format` when `emit` logs to it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(log_format))
    logger = logging.getLogger(f"test.logs.{log_format}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_json_line_has_the_time_level_logger_process_and_message() -> None:
    before = datetime.now(UTC)
    written = _logged("json", lambda log: log.warning("%s: %d copies", "0123abcd", 2))
    after = datetime.now(UTC)

    [line] = written.splitlines()
    entry = json.loads(line)
    assert entry == {
        "time": entry["time"],
        "level": "WARNING",
        "logger": "test.logs.json",
        "process": os.getpid(),
        "message": "0123abcd: 2 copies",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    at = datetime.fromisoformat(entry["time"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= at <= after


def test_a_traceback_and_a_stack_stay_inside_one_json_line() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            log.exception("first line\nsecond line", stack_info=True)

    written = _logged("json", emit)

    [line] = written.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "first line\nsecond line"
    assert entry["exc_info"].startswith("Traceback (most recent call last):\n")
    assert entry["exc_info"].endswith("ValueError: bad\nvalue")
    assert entry["stack"].startswith("Stack (most recent call last):\n")
    assert "test_a_traceback_and_a_stack_stay_inside_one_json_line" in entry["stack"]


def test_a_json_line_has_the_message_id_and_peer_but_no_other_extra() -> None:
    written = _logged(
        "json",
        lambda log: log.info(
            "%s: accepted",
            "0123abcd",
            extra={
                **logs.fields(message_id="0123abcd", peer="[2001:db8::1]:4321"),
                "command": "AUTH PLAIN c2VjcmV0",
                "url": "https://hooks.example/?token=secret",
            },
        ),
    )

    entry = json.loads(written)
    assert entry["message_id"] == "0123abcd"
    assert entry["peer"] == "[2001:db8::1]:4321"
    assert set(entry) == {"time", "level", "logger", "process", "message", *logs.FIELDS}
    assert "c2VjcmV0" not in written
    assert "secret" not in written


def test_fields_leave_out_what_is_not_known() -> None:
    assert logs.fields(peer="192.0.2.1:25") == {"peer": "192.0.2.1:25"}
    assert logs.fields(message_id=None) == {}


def test_the_text_format_is_as_it_was() -> None:
    written = _logged("text", lambda log: log.info("%s: delivered", "0123abcd"))
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO test\.logs\.text\[{os.getpid()}\]: "
        r"0123abcd: delivered\n",
        written,
    )


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'xml' is not one of text, json"):
        logs.formatter("xml")  # type: ignore[arg-type]
