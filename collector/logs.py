"""Logging to standard error, as text or JSON, with every known secret redacted.

Standard output carries data only (`--out -`), so nothing here ever writes to it. The
redaction filter is a last line of defence: messages are written not to hold secrets in the
first place, and this filter replaces any secret of `collector.redact` that slips through
(a server quoting our request back, say) with `***`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from collector.redact import SECRETS, Redactor

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept in JSON.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Replaces every registered secret in a record's message, traceback and extras with `***`.

    The secrets are those of a `Redactor`: the process-wide registry unless told otherwise.
    """

    def __init__(self, redactor: Redactor = SECRETS) -> None:
        super().__init__()
        self.redactor = redactor

    def register(self, secrets: Iterable[str]) -> None:
        """Redact these too from now on (in every user of the registry, not only the logs)."""
        self.redactor.register_all(secrets)

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, redact(value))
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
    redactor: Redactor = SECRETS,
) -> RedactingFilter:
    """Configure the `collector` logger; returns its redaction filter.

    `secrets` are registered with `redactor` (the process-wide registry unless told otherwise).
    """
    handler = StderrHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    redacting = RedactingFilter(redactor)
    redacting.register(secrets)
    handler.addFilter(redacting)
    root = logging.getLogger("collector")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return redacting
