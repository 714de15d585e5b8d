"""Logging: secrets redacted, JSON lines for log collectors."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import anyio
import orjson
import pytest

from collector.logs import setup_logging
from collector.redact import SECRETS

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


def test_short_values_are_redacted_too(stream: io.StringIO) -> None:
    """A five-letter secret is replaced as well: a garbled message beats a leaked secret."""
    setup_logging("INFO", "text", secrets=["Qz7pX"], stream=stream)

    logging.getLogger("collector.test").warning("refused: client_secret=Qz7pX")

    assert "Qz7pX" not in stream.getvalue()


def test_json_extras_are_redacted(stream: io.StringIO) -> None:
    """A secret passed in an `extra=` field never reaches the JSON line."""
    setup_logging("INFO", "json", secrets=[SECRET], stream=stream)

    logging.getLogger("collector.client").info("attempt failed", extra={"detail": SECRET})

    assert orjson.loads(stream.getvalue())["detail"] == "***"


def test_the_logs_share_the_process_registry(stream: io.StringIO) -> None:
    """A token registered anywhere in the process (auth, say) is hidden from the logs."""
    setup_logging("INFO", "text", stream=stream)
    SECRETS.register("tok-123")

    logging.getLogger("collector.test").warning("Authorization: CwsAuth Bearer=tok-123")

    assert "tok-123" not in stream.getvalue()


def test_json_lines_carry_level_logger_message_and_extras(stream: io.StringIO) -> None:
    """--log-format json writes one object a line with the extra fields kept."""
    setup_logging("INFO", "json", stream=stream)

    logging.getLogger("collector.client").info("attempt failed", extra={"transaction_id": "tx-1"})

    entry = orjson.loads(stream.getvalue())
    assert entry["level"] == "info"
    assert entry["logger"] == "collector.client"
    assert entry["message"] == "attempt failed"
    assert entry["transaction_id"] == "tx-1"


async def test_the_first_progress_line_gives_the_rate_of_its_first_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """50 requests in the first 10 s show as 5.0/s on the first line, not 0.0/s."""
    from collector import progress
    from collector.models import RunStats

    stats = RunStats()
    clock = [1000.0]

    async def sleep(seconds: float) -> None:
        if clock[0] > 1000.0:
            raise anyio.get_cancelled_exc_class()  # one line is enough
        clock[0] += seconds
        stats.requests += 50

    reporter = progress.ProgressReporter(
        stats, total=lambda: None, interactive=False, clock=lambda: clock[0], sleep=sleep
    )
    caplog.set_level(logging.INFO, logger="collector.progress")
    with pytest.raises(anyio.get_cancelled_exc_class()):
        await reporter.run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) == 1
    assert "requests 50 (5.0/s)" in lines[0]
