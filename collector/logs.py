"""Logging to standard error, as text or JSON, with every known secret redacted.

Standard output carries data only (`--out -`), so nothing here ever writes to it. The
redaction filter is a last line of defence: messages are written not to hold secrets in the
first place, and this filter replaces any registered secret that slips through with `***`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

REDACTED = "***"
# Shorter values are not searched for: replacing a one-letter test secret would garble every
# message, and no real API secret or token is that short.
MIN_SECRET_LENGTH = 6

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept in JSON.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Replaces each registered secret in a record's message and extras with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.register(secrets)

    def register(self, secrets: Iterable[str]) -> None:
        """Redact these too from now on."""
        self.secrets += tuple(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.redact(text), None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # TextIO stream
    """Writes to whatever `sys.stderr` is at the time, so a progress bar can redirect it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """logging.StreamHandler assigns its stream in __init__; the live stderr wins."""


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> RedactingFilter:
    """Configure the `collector` logger; returns the redaction filter to register more secrets."""
    handler = StderrHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger("collector")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return redactor
