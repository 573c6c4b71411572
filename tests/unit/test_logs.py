"""Structured logs: JsonFormatter writes one JSON object per line, extra fields included."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from processor.logs import JsonFormatter, setup_logging


def record(msg: str = "hello %s", args: tuple = ("world",), level: int = logging.INFO, **extra: object):
    rec = logging.LogRecord("processor.test", level, __file__, 42, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_record_is_formatted_as_one_json_object_with_ts_level_logger_and_msg() -> None:
    line = JsonFormatter().format(record())
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["level"] == "INFO"
    assert out["logger"] == "processor.test"
    assert out["msg"] == "hello world"
    assert set(out) == {"ts", "level", "logger", "msg"}


def test_ts_is_utc_iso_8601_with_milliseconds_from_the_record_time() -> None:
    rec = record()
    rec.created = 1_700_000_000.123456
    ts = orjson.loads(JsonFormatter().format(rec))["ts"]
    assert ts == "2023-11-14T22:13:20.123+00:00"
    assert datetime.fromisoformat(ts).timestamp() == pytest.approx(1_700_000_000.123, abs=1e-6)


def test_extra_fields_are_included_and_standard_record_attributes_are_not() -> None:
    out = orjson.loads(JsonFormatter().format(record(partition=3, user="u-42", lag=1.5, tags=["a"])))
    assert out["partition"] == 3
    assert out["user"] == "u-42"
    assert out["lag"] == 1.5
    assert out["tags"] == ["a"]
    for attr in ("args", "pathname", "lineno", "funcName", "threadName", "process", "exc_text"):
        assert attr not in out


def test_extra_values_json_cannot_encode_are_written_as_strings() -> None:
    out = orjson.loads(JsonFormatter().format(record(path=Path("/tmp/x"), obj=frozenset({1}))))
    assert out["path"] == "/tmp/x"
    assert out["obj"] == "frozenset({1})"


def test_message_with_newlines_and_quotes_stays_on_one_line() -> None:
    line = JsonFormatter().format(record(msg='line1\nline2 "quoted"', args=()))
    assert "\n" not in line
    assert orjson.loads(line)["msg"] == 'line1\nline2 "quoted"'


def test_exception_info_is_included_as_exc_traceback_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = orjson.loads(JsonFormatter().format(rec))
    assert out["level"] == "ERROR"
    assert out["msg"] == "failed"
    assert "Traceback" in out["exc"]
    assert "ValueError: boom" in out["exc"]


def test_each_log_call_through_a_logger_writes_exactly_one_json_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("processor.test.lines")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info("first", extra={"partition": 1})
        logger.warning("second %d", 2, extra={"offset": 99})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert (first["msg"], first["level"], first["partition"]) == ("first", "INFO", 1)
    assert (second["msg"], second["level"], second["offset"]) == ("second 2", "WARNING", 99)


def test_caplog_records_format_with_their_extra_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="processor.test.caplog"):
        logging.getLogger("processor.test.caplog").info("decided", extra={"verdicts": 3})
    [rec] = caplog.records
    out = orjson.loads(JsonFormatter().format(rec))
    assert (out["msg"], out["verdicts"]) == ("decided", 3)


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    aiokafka_level = logging.getLogger("aiokafka").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiokafka").setLevel(aiokafka_level)


@pytest.mark.usefixtures("restore_root_logger")
def test_setup_logging_writes_json_lines_to_stderr_at_the_given_level(capsys: pytest.CaptureFixture) -> None:
    setup_logging("WARNING")
    logging.getLogger("processor.test.setup").info("hidden")
    logging.getLogger("processor.test.setup").warning("shown", extra={"k": "v"})
    err_lines = capsys.readouterr().err.splitlines()
    assert len(err_lines) == 1
    out = orjson.loads(err_lines[0])
    assert (out["level"], out["msg"], out["k"]) == ("WARNING", "shown", "v")
    assert logging.getLogger("aiokafka").level >= logging.WARNING
