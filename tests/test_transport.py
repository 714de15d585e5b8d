"""The paced and authorised layers over a mock transport: counting, feedback, token order."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest

from collector.models import RunStats
from collector.pacing import Controller, Pacer
from collector.protocol import Answer
from collector.transport import AuthorizedTransport, MockTransport, PacedTransport, Request
from tests.fakes import EPOCH, FakeClock, RecordingTransport, answer


def request(url: str = "https://h/x") -> Request:
    return Request("GET", url, {"Accept": "application/json"})


def paced(
    handler: MockTransport | RecordingTransport, *, window: int = 8
) -> tuple[PacedTransport, Pacer, RunStats]:
    stats = RunStats()
    pacer = Pacer(Controller(0, window), FakeClock())
    return PacedTransport(handler, pacer, stats, wall=lambda: EPOCH), pacer, stats


async def ok(request: Request) -> Answer:
    return answer(200, {"Items": []})


class TestPaced:
    async def test_counts_every_request_and_429(self) -> None:
        """Every request counts in stats.requests, every 429 in stats.throttled."""

        answers = iter([answer(429), answer(200, {})])

        async def script(request: Request) -> Answer:
            return next(answers)

        transport, _, stats = paced(MockTransport(script))
        assert (await transport.send(request())).status == 429
        assert (await transport.send(request())).status == 200
        assert (stats.requests, stats.throttled) == (2, 1)

    async def test_a_freed_place_is_used_before_the_answer_goes_up(self) -> None:
        """With the window full, the request waiting for a place is sent before the answer
        that freed it reaches its caller (which then decodes it while the next one travels)."""

        events: list[str] = []

        async def wire(request: Request) -> Answer:
            events.append(f"sent {request.url}")
            await anyio.lowlevel.checkpoint()  # the answer takes a turn of the loop
            return answer(200, {})

        transport, _, _ = paced(MockTransport(wire), window=1)

        async def call(url: str) -> None:
            await transport.send(request(url))
            events.append(f"answered {url}")

        async with anyio.create_task_group() as group:
            group.start_soon(call, "https://h/a")
            group.start_soon(call, "https://h/b")
        assert events.index("sent https://h/b") < events.index("answered https://h/a")

    async def test_limit_429_pauses_the_run(self) -> None:
        """429s sent with more in flight than the successes had pause every request."""

        answers = iter([answer(200, {}), *[answer(429, b"", {"Retry-After": "5"})] * 2])

        async def script(request: Request) -> Answer:
            return next(answers)

        transport, pacer, stats = paced(MockTransport(script))
        await transport.send(request())  # alone in flight: it works
        pacer.sent = 2  # others on their way when these go
        await transport.send(request())
        await transport.send(request())
        assert pacer.controller.paused_until == 5.0
        assert stats.current_window == 1  # the most that worked

    async def test_window_is_released_after_an_error(self) -> None:
        """A request that raises gives its place in the window back."""

        async def broken(request: Request) -> Answer:
            raise OSError("boom")

        transport, pacer, _ = paced(MockTransport(broken), window=1)
        for _ in range(3):
            with pytest.raises(OSError):
                await transport.send(request())
        assert pacer.in_flight == 0

    async def test_rate_and_window_reach_the_stats(self) -> None:
        """The current rate (0: none) and window are in RunStats after each answer."""

        transport, _, stats = paced(MockTransport(ok), window=5)
        await transport.send(request())
        assert (stats.current_rate, stats.current_window) == (0.0, 5)

    async def test_peak_in_flight_is_the_window(self) -> None:
        """A spy at the wire never sees more than the window in flight."""

        async def slow(request: Request) -> Answer:
            await anyio.sleep(0.002)
            return answer(200, {})

        spy = RecordingTransport(slow)
        transport, _, _ = paced(spy, window=4)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for _ in range(40):
                    group.start_soon(transport.send, request())
        assert spy.peak == 4


class TestAuthorized:
    async def test_token_added_after_pacing(self) -> None:
        """The token is asked for once the pacer let the request go, never before."""

        order: list[str] = []

        class Tokens:
            async def token(self) -> str:
                order.append("token")
                return "tok"

        async def wire(request: Request) -> Answer:
            order.append("wire")
            return answer(200, {})

        stats = RunStats()
        clock = FakeClock()
        pacer = Pacer(Controller(0, 4), clock)
        pacer.controller.paused_until = 2.0
        transport = PacedTransport(AuthorizedTransport(MockTransport(wire), Tokens()), pacer, stats)

        async def main() -> Request:
            sent = request()
            await transport.send(sent)
            order.append(f"at {clock.now()}")
            return sent

        sent = await clock.run(main)
        assert order == ["token", "wire", "at 2.0"]
        assert sent.headers["Authorization"] == "CwsAuth Bearer=tok"
        assert sent.bearer == "tok"

    async def test_token_call_never_waits_behind_data_calls(self) -> None:
        """With every place of the window held by calls waiting for a token, it still comes."""

        stats = RunStats()
        pacer = Pacer(Controller(0, 2), FakeClock())
        token_transport = PacedTransport(MockTransport(ok), pacer, stats, windowed=False)
        fetched = 0

        class Tokens:
            async def token(self) -> str:
                nonlocal fetched
                fetched += 1
                await token_transport.send(request("https://h/token"))
                return "tok"

        data = PacedTransport(AuthorizedTransport(MockTransport(ok), Tokens()), pacer, stats)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for _ in range(6):
                    group.start_soon(data.send, request())
        assert fetched == 6
        assert stats.requests == 12
        assert pacer.controller.rate == math.inf
