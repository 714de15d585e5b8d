"""The waiting of pacing: a place in the in-flight window, then a slot of the GCRA schedule.

Every request of the run passes `Pacer.acquire()` and, once answered, `Pacer.release()`. The
controller decides the rate, the window and the pauses; this module only makes callers wait
for them. Time is read through an injected `Clock`, so tests run on fake time.

The schedule is GCRA in its "virtual scheduling" form (the ATM Forum's Generic Cell Rate
Algorithm, https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm; aiometer uses it too):
a theoretical arrival time `tat` moves on by 1/rate at each grant, and a request may start once
`tat` is reached. No burst allowance: the server sees an even stream.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import anyio

from collector.pacing.controller import Controller, Verdict


class Clock(Protocol):
    """**Protocol:** the time source of pacing: a monotonic `now()` and a `sleep()`."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: `time.monotonic()` and `anyio.sleep()`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


@dataclass(slots=True)
class Grant:
    """One request let go: when, and how many were in flight with it (0: outside the window)."""

    sent_at: float
    in_flight: int


class Pacer:
    """Waits for the window and the schedule the controller sets; reports answers to it."""

    __slots__ = (
        "_clock",
        "_gone",
        "_head",
        "_issued",
        "_last",
        "_tat",
        "_tat_rate",
        "_waiters",
        "controller",
        "in_flight",
        "sent",
    )

    def __init__(self, controller: Controller, clock: Clock | None = None) -> None:
        self.controller = controller
        self._clock = clock or MonotonicClock()
        self.in_flight = 0  # windowed requests between acquire and release
        # ... of which past the schedule, on their way: what the server can count. Places held
        # while waiting for a slot say nothing about a limit on calls in flight.
        self.sent = 0
        self._waiters: deque[anyio.Event] = deque()  # callers waiting for a window place
        self._tat = -math.inf  # GCRA: the theoretical arrival time of the next request
        self._tat_rate = math.inf  # ... as the rate that set it would have it
        self._last = -math.inf  # the last grant
        self._issued = 0  # schedule tickets handed out, in order of arrival
        self._head = 0  # the oldest ticket still waiting: only it may go
        self._gone: set[int] = set()  # tickets after the head already granted or abandoned

    async def acquire(self, *, windowed: bool = True) -> Grant:
        """Wait for a place in the window (unless not `windowed`: token calls), then a slot.

        A caller cancelled while waiting gives its place up. A token call stays outside the
        window: the data calls holding every place may be the ones waiting for the token.
        """
        if windowed:
            if self._waiters or self.in_flight >= self.controller.window:
                await self._wait_for_place()
            else:
                self.in_flight += 1
        try:
            now = await self._wait_for_slot()
        except BaseException:
            if windowed:
                self._leave_window()
            raise
        self.controller.on_sent(now)
        if not windowed:
            return Grant(now, 0)
        self.sent += 1
        return Grant(now, self.sent)

    def release(self, grant: Grant) -> bool:
        """The request of `grant` is over; its place goes to the next caller.

        True if a waiting caller got the place: the releasing one should let it go first.
        """
        if not grant.in_flight:
            return False
        self.sent -= 1
        waiting = len(self._waiters)
        self._leave_window()
        return len(self._waiters) < waiting

    def on_success(self, grant: Grant) -> None:
        self.controller.on_success(self._clock.now(), grant.in_flight, grant.sent_at)
        self._admit()  # the window may have grown

    def on_throttle(self, grant: Grant, retry_after: float | None) -> Verdict:
        return self.controller.on_throttle(
            self._clock.now(),
            sent_at=grant.sent_at,
            in_flight=grant.in_flight,
            retry_after=retry_after,
        )

    # --- the window ------------------------------------------------------------------------

    async def _wait_for_place(self) -> None:
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._leave_window()  # the place was handed over just as we were cancelled
            else:
                self._waiters.remove(event)
            raise

    def _leave_window(self) -> None:
        self.in_flight -= 1
        self._admit()

    def _admit(self) -> None:
        """Hand free places to waiting callers, in order (the place moves with the wake-up)."""
        waiters, window = self._waiters, self.controller.window
        while waiters and self.in_flight < window:
            self.in_flight += 1
            waiters.popleft().set()

    # --- the schedule ----------------------------------------------------------------------

    async def _wait_for_slot(self) -> float:
        """Wait for the pause to end and for this caller's turn; the time of the grant.

        Callers queue in ticket order and look again at least every `max_nap_s`, so a rate
        that rises while they wait applies at once, and only the head may go (no herd).
        """
        controller, clock = self.controller, self._clock
        now = clock.now()
        if controller.rate == math.inf and now >= controller.paused_until:
            return now  # the common case when unlimited: no ticket, no checkpoint
        tuning = controller.tuning
        ticket = self._issued
        self._issued += 1
        try:
            while True:
                now = clock.now()
                if now < controller.paused_until:
                    await clock.sleep(controller.paused_until - now)
                    continue
                rate = controller.rate
                if rate == math.inf:
                    break
                interval = 1.0 / rate
                if rate != self._tat_rate:  # a new rate applies from the last grant on
                    self._tat, self._tat_rate = self._last + interval, rate
                ahead = ticket - self._head
                ready = max(self._tat, controller.paused_until) - tuning.early * interval
                ready += ahead * interval
                if ahead == 0 and now >= ready:
                    break
                await clock.sleep(min(max(ready - now, interval / 4), tuning.max_nap_s))
        finally:
            self._leave_queue(ticket)
        rate = controller.rate
        if rate < math.inf:
            self._tat = max(self._tat, controller.paused_until, now) + 1.0 / rate
            self._tat_rate = rate
        self._last = now
        return now

    def _leave_queue(self, ticket: int) -> None:
        """A ticket was granted or abandoned: the next one still waiting becomes the head."""
        if ticket != self._head:
            self._gone.add(ticket)
            return
        self._head += 1
        while self._head in self._gone:
            self._gone.remove(self._head)
            self._head += 1
