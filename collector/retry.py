"""The retry policy, as small tenacity values: what is retried, how long to wait, when to stop.

What is retried is decided where the error is made (`ApiError.retryable`, set by
`protocol.decipher` and the client's error mapping); this module only reads it. The wait is
exponential backoff with full jitter (the AWS Architecture Blog's "Exponential Backoff and
Jitter": spreads the retries of many workers, unlike plain exponential backoff, which tenacity's
own docs advise against under contention), raised to the server's `retry_after` as a floor,
capped at `max_backoff_s`. Sleep and randomness are injected, so tests check numbers and never
wait. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from collector.errors import ApiError

BASE_BACKOFF_S = 0.5  # the cap of the first wait; it doubles with each attempt


def is_retryable(exc: BaseException) -> bool:
    """True for an `ApiError` marked retryable (408, 429, 5xx, network, timeout, bad JSON)."""
    return isinstance(exc, ApiError) and exc.retryable


def full_jitter_wait(
    max_backoff_s: float, rng: Callable[[], float], base_s: float = BASE_BACKOFF_S
) -> Callable[[RetryCallState], float]:
    """The wait before the next attempt: full jitter, floored by `retry_after`, capped.

    After attempt n the wait is
    `min(max_backoff_s, max(rng() * min(max_backoff_s, base_s * 2**(n-1)), retry_after))`,
    where `retry_after` is the failed attempt's `ApiError.retry_after` (0 if None).
    """

    def wait(state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 64)  # 2**64 s is already past any cap
        backoff = rng() * min(max_backoff_s, base_s * math.ldexp(1.0, exponent))
        floor = 0.0
        if state.outcome is not None and state.outcome.failed:
            exc = state.outcome.exception()
            if isinstance(exc, ApiError) and exc.retry_after:
                floor = exc.retry_after
        return min(max_backoff_s, max(backoff, floor))

    return wait


def make_retrying(
    *,
    max_attempts: int,
    max_backoff_s: float,
    sleep: Callable[[float], Awaitable[None]],
    rng: Callable[[], float],
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """A fresh tenacity loop for one request: `max_attempts` in all, the first included.

    The last error is re-raised as it is (`reraise=True`), never wrapped in `RetryError`.
    """
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=full_jitter_wait(max_backoff_s, rng),
        retry=retry_if_exception(is_retryable),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )
