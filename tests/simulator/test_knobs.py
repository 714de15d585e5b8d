"""The knobs other tests lean on: calls in flight, paged machine answers, denied endpoints."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from collector.simulator import Faults, Simulator, SimulatorConfig, serve
from tests.simulator.conftest import api_headers, fetch_token, get, sessions_path, url

LATENCY_MS = 150.0  # long enough that every call of a burst is in flight at once


async def burst(
    client: aiohttp.ClientSession, sim: Simulator, paths: list[str], headers: dict[str, str]
) -> list[tuple[int, bytes, bool]]:
    """(status, body, has Retry-After) of the GETs of `paths`, all sent at once."""

    async def one(path: str) -> tuple[int, bytes, bool]:
        async with client.get(url(sim, path), headers=headers) as response:
            return response.status, await response.read(), "Retry-After" in response.headers

    return list(await asyncio.gather(*(one(p) for p in paths)))


class TestMaxInFlight:
    @pytest.mark.parametrize(
        ("limit", "calls", "refused"),
        [
            pytest.param(3, 8, 5, id="above"),
            pytest.param(8, 8, 0, id="at"),
            pytest.param(10, 8, 0, id="below"),
        ],
    )
    async def test_calls_beyond_the_limit_get_429(
        self, client: aiohttp.ClientSession, limit: int, calls: int, refused: int
    ) -> None:
        """Of a burst of sessions calls, exactly those beyond N get 429; none at or below N."""
        config = SimulatorConfig(machines=20, seed=3, latency_ms=LATENCY_MS, max_in_flight=limit)
        async with serve(config) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            paths = [sessions_path(sim.site.machine_id(i)) for i in range(calls)]
            answers = await burst(client, sim, paths, headers)

            assert sorted(status for status, _, _ in answers).count(429) == refused
            assert sum(1 for status, _, _ in answers if status == 200) == calls - refused
            assert sim.counters.in_flight_rejected == refused
            assert sim.counters.injected["in_flight"] == refused
            assert sim.counters.peak_in_flight == min(limit, calls)

    async def test_the_429_carries_retry_delay_and_no_retry_after(
        self, client: aiohttp.ClientSession
    ) -> None:
        """A refused call gets Citrix's documented 429 body with retryDelay, no Retry-After."""
        config = SimulatorConfig(machines=20, seed=3, latency_ms=LATENCY_MS, max_in_flight=1)
        async with serve(config) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            paths = [sessions_path(sim.site.machine_id(0)), "/cvad/manage/Sessions"]
            answers = await burst(client, sim, paths, headers)

        refused = [(body, header) for status, body, header in answers if status == 429]
        assert len(refused) == 1
        body, has_retry_after = refused[0]
        assert not has_retry_after
        assert orjson.loads(body) == {
            "type": "https://errors-api.cloud.com/common/rateLimitExceeded",
            "detail": "Rate limit exceeded; try again in 1 seconds",
            "parameters": [{"name": "retryDelay", "value": "1"}],
        }

    async def test_other_endpoints_are_not_limited(self, client: aiohttp.ClientSession) -> None:
        """Machine listings and /me are not sessions calls: the limit leaves them alone."""
        config = SimulatorConfig(machines=20, seed=3, latency_ms=LATENCY_MS, max_in_flight=1)
        async with serve(config) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            answers = await burst(client, sim, ["/cvad/manage/Machines"] * 4, headers)

        assert [status for status, _, _ in answers] == [200] * 4

    async def test_it_combines_with_the_rate_limit(self, client: aiohttp.ClientSession) -> None:
        """With both knobs, calls within the in-flight limit still meet the rate limit."""
        faults = Faults(rate_limit=1.0, rate_burst=1.0, retry_after="body")
        config = SimulatorConfig(machines=20, seed=3, faults=faults, max_in_flight=5)
        async with serve(config) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            paths = [sessions_path(sim.site.machine_id(i)) for i in range(3)]
            answers = await burst(client, sim, paths, headers)

        assert sorted(status for status, _, _ in answers) == [200, 429, 429]
        assert sim.counters.injected["rate_limit"] == 2
        assert sim.counters.in_flight_rejected == 0


async def test_the_knob_can_change_at_runtime(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """Setting `faults.max_in_flight` on a running simulator takes effect on the next call."""
    sim.faults.latency_ms = LATENCY_MS
    sim.faults.max_in_flight = 2
    paths = [sessions_path(sim.site.machine_id(i)) for i in range(4)]
    answers = await burst(client, sim, paths, headers)

    assert sorted(status for status, _, _ in answers) == [200, 200, 429, 429]
    sim.faults.max_in_flight = 0
    status, _, _ = await get(client, sim, paths[0], headers)
    assert status == 200
