"""The pacer on virtual time: the GCRA schedule, pauses, and the in-flight window."""

from __future__ import annotations

import itertools
import math

import anyio
import pytest

from collector.pacing import Controller, Grant, Pacer
from tests.fakes import FakeClock


def make(rate: float = 0, window: int = 8) -> tuple[Pacer, FakeClock]:
    clock = FakeClock()
    return Pacer(Controller(rate, window), clock), clock


async def grants(pacer: Pacer, clock: FakeClock, count: int) -> list[float]:
    async def main() -> list[float]:
        times = []
        for _ in range(count):
            grant = await pacer.acquire(windowed=False)
            times.append(grant.sent_at)
        return times

    return await clock.run(main)


class TestSchedule:
    async def test_unlimited_goes_at_once(self) -> None:
        """With no ceiling and no pause every request goes at once."""

        pacer, clock = make()
        assert await grants(pacer, clock, 50) == [0.0] * 50

    async def test_even_spacing(self) -> None:
        """At 10/s the grants are 0.1 s apart (the head may go half an interval early)."""

        pacer, clock = make(rate=10)
        times = await grants(pacer, clock, 11)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap == pytest.approx(0.1, abs=0.051) for gap in gaps)
        assert times[-1] - times[0] == pytest.approx(1.0, abs=0.1)

    async def test_pause_holds_everyone(self) -> None:
        """A run-wide pause holds every caller until it has passed."""

        pacer, clock = make()
        controller = pacer.controller
        controller.paused_until = 3.0
        assert min(await grants(pacer, clock, 10)) >= 3.0

    async def test_rate_rise_applies_while_waiting(self) -> None:
        """A caller waiting on a slow rate goes sooner once the rate rises."""

        pacer, clock = make(rate=0.5)
        controller = pacer.controller

        async def main() -> float:
            await pacer.acquire(windowed=False)
            async with anyio.create_task_group() as group:
                waiter: list[float] = []

                async def wait() -> None:
                    waiter.append((await pacer.acquire(windowed=False)).sent_at)

                group.start_soon(wait)
                await clock.sleep(0.3)
                controller._rate = 100.0
            return waiter[0]

        assert await clock.run(main) < 0.5


class TestWindow:
    async def test_never_more_than_the_window(self) -> None:
        """However many callers, at most `window` grants are held at once."""

        pacer, clock = make(window=3)
        peak = 0

        async def one() -> None:
            nonlocal peak
            grant = await pacer.acquire()
            peak = max(peak, pacer.in_flight)
            await clock.sleep(0.01)
            pacer.release(grant)

        async def main() -> None:
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(one)

        await clock.run(main)
        assert peak == 3
        assert pacer.in_flight == 0

    async def test_token_calls_stay_outside(self) -> None:
        """A call outside the window goes even when every place is held."""

        pacer, clock = make(window=1)

        async def main() -> Grant:
            held = await pacer.acquire()
            token_call = await pacer.acquire(windowed=False)
            pacer.release(held)
            return token_call

        grant = await clock.run(main)
        assert grant.in_flight == 0
        assert pacer.in_flight == 0

    async def test_release_says_whether_a_waiter_got_the_place(self) -> None:
        """Releasing a full window's place hands it to a waiter (True); with none, False."""

        pacer, clock = make(window=1)

        async def main() -> list[bool]:
            held = await pacer.acquire()
            handed: list[bool] = []
            async with anyio.create_task_group() as group:

                async def waiter() -> None:
                    grant = await pacer.acquire()
                    handed.append(pacer.release(grant))

                group.start_soon(waiter)
                await clock.sleep(0.01)  # the waiter is queued for the place
                handed.insert(0, pacer.release(held))
            return handed

        assert await clock.run(main) == [True, False]

    async def test_cancelled_waiter_gives_up_its_place(self) -> None:
        """A caller cancelled while waiting for a place leaves the window as it was."""

        pacer, clock = make(window=1)

        async def main() -> int:
            held = await pacer.acquire()
            with anyio.move_on_after(0):  # cancelled while it waits
                await pacer.acquire()
            pacer.release(held)
            follower = await pacer.acquire()
            count = pacer.in_flight
            pacer.release(follower)
            return count

        assert await clock.run(main) == 1
        assert pacer.in_flight == 0

    async def test_grant_knows_how_many_were_in_flight(self) -> None:
        """Each grant carries the number in flight with it, itself included."""

        pacer, clock = make(window=4)

        async def main() -> list[int]:
            return [(await pacer.acquire()).in_flight for _ in range(3)]

        assert await clock.run(main) == [1, 2, 3]

    async def test_waiting_for_a_slot_is_not_in_flight(self) -> None:
        """Callers holding a place while they wait for the schedule do not count in flight."""

        pacer, clock = make(rate=10, window=8)

        async def main() -> list[int]:
            counts: list[int] = []

            async def one() -> None:
                grant = await pacer.acquire()
                counts.append(grant.in_flight)
                await clock.sleep(0.01)  # answered well before the next slot
                pacer.release(grant)

            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(one)
            return counts

        assert await clock.run(main) == [1] * 5
        assert (pacer.in_flight, pacer.sent) == (0, 0)

    async def test_window_cut_then_success_admits(self) -> None:
        """A window cut holds new callers until enough places are free again."""

        pacer, clock = make(window=4)
        controller = pacer.controller

        async def main() -> float:
            first = [await pacer.acquire() for _ in range(4)]
            controller.window = 2
            late: list[float] = []

            async def wait() -> None:
                late.append((await pacer.acquire()).sent_at)

            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await clock.sleep(1.0)
                assert not late
                for grant in first[:3]:
                    pacer.release(grant)
            return late[0]

        assert await clock.run(main) == pytest.approx(1.0)
        assert controller.rate == math.inf
