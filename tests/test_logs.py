"""Logging: secrets redacted, JSON lines for log collectors."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from collector.logs import setup_logging

SECRET = "s3cr3t-Value-42"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    setup_logging(stream=io.StringIO())  # detach the test's stream


def test_a_registered_secret_never_reaches_the_log(stream: io.StringIO) -> None:
    """A secret in a message or a traceback is written as ***."""
    redactor = setup_logging("INFO", "text", stream=stream)
    redactor.register([SECRET])
    log = logging.getLogger("collector.test")

    log.warning("token %s refused", SECRET)
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        log.exception("failed")

    text = stream.getvalue()
    assert SECRET not in text
    assert text.count("***") == 2


def test_short_values_are_not_searched_for(stream: io.StringIO) -> None:
    """A one-letter value is not replaced everywhere (it would garble every message)."""
    redactor = setup_logging("INFO", "text", stream=stream)
    redactor.register(["b"])

    assert redactor.redact("must be below") == "must be below"


def test_json_lines_carry_level_logger_message_and_extras(stream: io.StringIO) -> None:
    """--log-format json writes one object a line with the extra fields kept."""
    setup_logging("INFO", "json", stream=stream)

    logging.getLogger("collector.client").info("attempt failed", extra={"transaction_id": "tx-1"})

    entry = orjson.loads(stream.getvalue())
    assert entry["level"] == "info"
    assert entry["logger"] == "collector.client"
    assert entry["message"] == "attempt failed"
    assert entry["transaction_id"] == "tx-1"
