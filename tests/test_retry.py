"""The retry policy as numbers: predicate, waits and stop, with a recording sleep."""

from __future__ import annotations

import pytest
from tenacity import AsyncRetrying, Future, RetryCallState

from collector.errors import ApiError, AuthError
from collector.models import ErrorKind
from collector.retry import RetryPolicy, full_jitter_wait, is_retryable, make_policy


def make_retry_state(attempt: int, exc: BaseException | None = None) -> RetryCallState:
    """The state tenacity hands a wait strategy after `attempt` failed with `exc`."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    if exc is not None:
        outcome = Future(attempt)
        outcome.set_exception(exc)
        state.outcome = outcome
    return state


def api_error(retryable: bool = True, retry_after: float | None = None) -> ApiError:
    return ApiError(
        "HTTP 503", kind=ErrorKind.SERVER_ERROR, retryable=retryable, retry_after=retry_after
    )


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(api_error(True), True, id="retryable-api-error"),
        pytest.param(api_error(False), False, id="final-api-error"),
        pytest.param(AuthError("no"), False, id="auth-error"),
        pytest.param(ValueError("bug"), False, id="bug"),
    ],
)
def test_is_retryable(exc: BaseException, expected: bool) -> None:
    """Only an ApiError marked retryable is retried."""

    assert is_retryable(exc) is expected


@pytest.mark.parametrize(
    ("attempt", "draw", "retry_after", "cap", "wait"),
    [
        pytest.param(1, 1.0, None, 120.0, 0.5, id="first-cap"),
        pytest.param(1, 0.5, None, 120.0, 0.25, id="first-jitter"),
        pytest.param(3, 1.0, None, 120.0, 2.0, id="doubles"),
        pytest.param(3, 0.0, None, 120.0, 0.0, id="full-jitter-can-be-zero"),
        pytest.param(10, 1.0, None, 120.0, 120.0, id="capped"),
        pytest.param(2, 0.1, 4.0, 120.0, 4.0, id="retry-after-floor"),
        pytest.param(2, 1.0, 0.2, 120.0, 1.0, id="backoff-above-floor"),
        pytest.param(2, 0.1, 600.0, 120.0, 120.0, id="floor-capped"),
        pytest.param(1000, 1.0, None, 5.0, 5.0, id="huge-attempt"),
    ],
)
def test_wait(
    attempt: int, draw: float, retry_after: float | None, cap: float, wait: float
) -> None:
    """The wait is full jitter over base*2**(n-1), floored by retry_after, capped."""

    strategy = full_jitter_wait(cap, lambda: draw)
    state = make_retry_state(attempt, api_error(retry_after=retry_after))
    assert strategy(state) == pytest.approx(wait)


def test_wait_ignores_other_errors() -> None:
    """An error without retry_after adds no floor."""

    strategy = full_jitter_wait(120.0, lambda: 0.0)
    assert strategy(make_retry_state(2, ValueError())) == 0.0


def policy(recorder: Recorder, attempts: int, *, retried: list[int] | None = None) -> RetryPolicy:
    def on_retry(exc: ApiError, wait: float) -> None:
        if retried is not None:
            retried.append(exc.attempts)

    return make_policy(
        max_attempts=attempts,
        max_backoff_s=120 if attempts > 4 else 1,
        sleep=recorder.sleep,
        rng=lambda: 1.0,
        on_retry=on_retry,
    )


async def test_retries_then_succeeds() -> None:
    """Retryable failures are retried with the policy's waits; success ends the loop."""

    recorder = Recorder()
    retried: list[int] = []
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise api_error(retry_after=None if calls == 1 else 3.0)
        return "done"

    assert await policy(recorder, 6, retried=retried).call(attempt) == ("done", 3)
    assert recorder.waits == [0.5, 3.0]
    assert retried == [1, 2]


async def test_first_success_never_sleeps() -> None:
    """A first attempt that succeeds costs no wait and no retry."""

    recorder = Recorder()

    async def attempt() -> int:
        return 7

    assert await policy(recorder, 6).call(attempt) == (7, 1)
    assert recorder.waits == []


async def test_final_error_is_not_retried() -> None:
    """A non-retryable error is raised at once, as it is, with its attempts."""

    recorder = Recorder()
    error = api_error(retryable=False)
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(ApiError) as caught:
        await policy(recorder, 6).call(attempt)
    assert caught.value is error
    assert (calls, error.attempts) == (1, 1)
    assert recorder.waits == []


async def test_stops_after_max_attempts() -> None:
    """After max_attempts the last ApiError itself is raised, not a RetryError."""

    recorder = Recorder()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise api_error()

    with pytest.raises(ApiError, match="HTTP 503") as caught:
        await policy(recorder, 4).call(attempt)
    assert (calls, caught.value.attempts) == (4, 4)
    assert recorder.waits == [0.5, 1.0, 1.0]


async def test_other_errors_pass_through() -> None:
    """An error that is not an ApiError (a fatal one, a bug) is never retried."""

    recorder = Recorder()

    async def attempt() -> None:
        raise AuthError("refused")

    with pytest.raises(AuthError):
        await policy(recorder, 6).call(attempt)
    assert recorder.waits == []
