"""The one owner of secrets: every credential and token the process knows, and `redact`.

A secret is registered once, from the moment it exists: the CLI registers the configured
secrets, the token providers each token as it is obtained. It is then searched for in every
form a server may echo it in: as is, percent-encoded (with and without `/` left alone, hex
digits in either case), form-encoded (`+` for a space) and JSON-escaped. Logs, the error
lines of `errors.ndjson` and the manifest all pass through the same process-wide registry,
so a secret registered anywhere is hidden everywhere. There is no minimum length: garbling
the odd message that happens to hold a short secret is a smaller harm than leaking it.

No I/O, and no imports from the rest of `collector`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "***"
PERCENT_ESCAPE = re.compile("(%[0-9A-Fa-f]{2})")


def echoed_forms(secret: str) -> set[str]:
    """The secret and each form it takes in a URL, a form body or a JSON string."""
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),  # `/` left alone, as in a path
        quote_plus(secret),  # a form body (`application/x-www-form-urlencoded`)
        quote_plus(secret, safe="/"),
        json.dumps(secret)[1:-1],  # inside a JSON string, non-ASCII escaped
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }


def form_pattern(form: str) -> str:
    """A regular expression for one form: literal, but `%2F` matches `%2f` too."""
    parts = PERCENT_ESCAPE.split(form)
    return "".join(f"(?i:{part})" if i % 2 else re.escape(part) for i, part in enumerate(parts))


class Redactor:
    """The registered secrets, and `redact` replacing each of their forms with `***`.

    Thread-safe: registering builds a new pattern and swaps it in whole.
    """

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, secret: str) -> None:
        """Redact this secret, in all its forms, from now on (an empty value is ignored)."""
        if not secret:
            return
        with self._lock:
            new = echoed_forms(secret) - self._forms
            if not new:
                return
            self._forms |= new
            # Longest first, so a form that contains another is replaced whole.
            ordered = sorted(self._forms, key=lambda f: (-len(f), f))
            self._pattern = re.compile("|".join(map(form_pattern, ordered)))

    def register_all(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            self.register(secret)

    def redact(self, text: str) -> str:
        """The text with every form of every registered secret replaced by `***`."""
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)

    def redact_values(self, value: Any) -> Any:
        """A JSON-like value with every string in it (keys too) redacted, for files."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact_values(k): self.redact_values(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_values(v) for v in value]
        return value

    def clear(self) -> None:
        """Forget every secret (for tests: the registry lives as long as the process)."""
        with self._lock:
            self._forms = set()
            self._pattern = None


# The process's registry: the CLI, the token providers, logs, error lines and the manifest
# share it, so that a secret registered by one is hidden by all.
SECRETS = Redactor()


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    return SECRETS.redact(text)


def redact_values(value: Any) -> Any:
    """A JSON-like value with every registered secret replaced by `***` in its strings."""
    return SECRETS.redact_values(value)
