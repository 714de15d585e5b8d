"""The exception hierarchy of `collector`, each class with the exit code it ends a run with.

    CollectorError (exit_code)
    ├── UsageError            exit 2: nothing was called
    │   ├── ConfigError       a bad key, value, flag or environment variable
    │   └── InputError        an unreadable machine list (or a bad line with --strict)
    ├── FatalError            exit 3: the run stops; committed files stay valid
    │   ├── AuthError         the token endpoint or the API refused our credentials
    │   ├── SetupRejectedError  403/406 on the first calls: the configuration is wrong
    │   └── OutputError       the output cannot be written (full disk, no permission)
    └── ApiError              one request failed (never leaves the worker pool)

`ApiError.retryable` is what the retry policy asks. Messages name the file, key, machine or
environment variable at fault and what to do; they never hold a token or a secret. Kept apart
from the modules that raise them, so nothing imports in a loop.
"""

from __future__ import annotations

from collector.models import ErrorKind


class CollectorError(Exception):
    """Base of every error `collector` raises on purpose."""

    exit_code = 1


class UsageError(CollectorError):
    """Raised for usage, configuration or input errors found before any request."""

    exit_code = 2


class ConfigError(UsageError):
    """Raised when a configuration key, value, flag or environment variable is wrong."""


class InputError(UsageError):
    """Raised when the machine list cannot be read, or has a bad line under --strict."""


class FatalError(CollectorError):
    """Raised when the run must stop: nothing more can succeed."""

    exit_code = 3


class AuthError(FatalError):
    """Raised when the credentials are refused (token endpoint 400/401, a second 401)."""


class SetupRejectedError(FatalError):
    """Raised when the first calls of a run get 403 or 406: every machine would fail alike."""


class OutputError(FatalError):
    """Raised when the output directory or a file in it cannot be written."""


class ApiError(CollectorError):
    """Raised when one API request fails; the worker turns it into a `Failure`.

    `retry_after` is the server's floor for the next attempt in seconds (Retry-After or the
    body's `retryDelay`), or None; `attempts` is how many attempts the request made in all.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        status: int | None = None,
        transaction_id: str | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.transaction_id = transaction_id
        self.retry_after = retry_after
        self.retryable = retryable
        self.attempts = attempts  # set by the retry loop to the attempts it made

    def __repr__(self) -> str:
        return (
            f"ApiError({self.message!r}, kind={self.kind.value}, status={self.status}, "
            f"transaction_id={self.transaction_id!r}, retryable={self.retryable})"
        )
