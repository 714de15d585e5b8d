"""The retry policy: what is retried, how long to wait, when to stop, and the loop that applies it.

What is retried is decided where the error is made (`ApiError.retryable`, set by
`protocol.decipher` and the transport's error mapping); this module only reads it. The wait is
exponential backoff with full jitter (the AWS Architecture Blog's "Exponential Backoff and
Jitter": spreads the retries of many workers, unlike plain exponential backoff, which tenacity's
own docs advise against under contention), raised to the server's `retry_after` as a floor,
capped at `max_backoff_s`.

The wait and the stop are tenacity values; the loop is ours. `AsyncRetrying` builds a call
state, an outcome and several introspections for every attempt, the first included, which a
run of a hundred thousand requests that mostly succeed at once pays for nothing: here a
first attempt that succeeds costs one await, and tenacity's state is built only after a
failure. Sleep and randomness are injected, so tests check numbers and never wait.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, stop_after_attempt
from tenacity.stop import stop_base

from collector.errors import ApiError

BASE_BACKOFF_S = 0.5  # the cap of the first wait; it doubles with each attempt

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Wait = Callable[[RetryCallState], float]


def is_retryable(exc: BaseException) -> bool:
    """True for an `ApiError` marked retryable (408, 429, 5xx, network, timeout, bad JSON)."""
    return isinstance(exc, ApiError) and exc.retryable


def full_jitter_wait(
    max_backoff_s: float, rng: Callable[[], float], base_s: float = BASE_BACKOFF_S
) -> Wait:
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


def failed_state(attempt: int, exc: BaseException) -> RetryCallState:
    """The state tenacity's wait and stop read, after attempt `attempt` raised `exc`."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]  # read by no policy we use
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, exc.__traceback__))
    return state


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts one call until it succeeds, fails for good, or `stop` says enough.

    `on_retry(exc, wait)` is told of each retry before its sleep (for counting and logs).
    """

    stop: stop_base
    wait: Wait
    sleep: Sleep
    on_retry: Callable[[ApiError, float], None] | None = None

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """The result of `attempt()` and the number of attempts made.

        Raises the last error as it is (never a tenacity `RetryError`), with its `attempts`
        set when it is an `ApiError`.
        """
        number = 1
        while True:
            try:
                return await attempt(), number
            except ApiError as exc:
                exc.attempts = number
                if not exc.retryable:
                    raise
                state = failed_state(number, exc)
                if self.stop(state):
                    raise
                delay = self.wait(state)
                if self.on_retry is not None:
                    self.on_retry(exc, delay)
            await self.sleep(delay)
            number += 1


def make_policy(
    *,
    max_attempts: int,
    max_backoff_s: float,
    sleep: Sleep,
    rng: Callable[[], float],
    on_retry: Callable[[ApiError, float], None] | None = None,
) -> RetryPolicy:
    """The run's policy: `max_attempts` in all (the first included), full-jitter waits."""
    return RetryPolicy(
        stop=stop_after_attempt(max_attempts),
        wait=full_jitter_wait(max_backoff_s, rng),
        sleep=sleep,
        on_retry=on_retry,
    )
