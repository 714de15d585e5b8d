"""Faults on the wire: each forced to certainty, the answer has the documented shape."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from collector.simulator import Faults, Simulator, SimulatorConfig, serve
from collector.simulator.faults import RetryHint
from tests.conftest import load_fixture
from tests.simulator.conftest import api_headers, fetch_token, get, sessions_path, url

ERRORS = load_fixture("error-bodies.json")


def data_path(sim: Simulator, index: int = 0) -> str:
    return sessions_path(sim.site.machine_id(index))


@pytest.mark.parametrize(
    ("knob", "status", "content_type", "has_transaction_id"),
    [
        pytest.param("p_429", 429, "application/json", True, id="429"),
        pytest.param("p_500", 500, "application/json", True, id="500"),
        pytest.param("p_502", 502, "text/html", False, id="502"),
        pytest.param("p_503", 503, "application/json", True, id="503"),
        pytest.param("p_504", 504, "text/plain", False, id="504"),
    ],
)
async def test_error_faults_have_their_documented_shape(
    client: aiohttp.ClientSession,
    sim: Simulator,
    headers: dict[str, str],
    knob: str,
    status: int,
    content_type: str,
    has_transaction_id: bool,
) -> None:
    """A certain 429/5xx answers with its status, body type and transaction-id presence."""
    setattr(sim.faults, knob, 1.0)
    async with client.get(url(sim, data_path(sim)), headers=headers) as response:
        body = await response.read()

    assert response.status == status
    assert response.content_type == content_type
    assert ("Citrix-TransactionId" in response.headers) is has_transaction_id
    assert sim.counters.injected[str(status)] == 1
    assert sim.counters.sessions_served == {}
    if status == 502:
        assert body.decode() == ERRORS["bad_gateway_html"]
    if status == 503:
        assert orjson.loads(body)["parameters"] in (
            {"retryDelay": "1"},
            [{"name": "retryDelay", "value": "1"}],
        )


async def test_random_429s_mix_retry_after_and_body_only(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """Of many random 429s some carry Retry-After: 1 and some only retryDelay "1"."""
    sim.faults.p_429 = 1.0
    seen = set()
    for _ in range(16):
        async with client.get(url(sim, data_path(sim)), headers=headers) as response:
            body = await response.json()
            seen.add(response.headers.get("Retry-After"))
        assert body["parameters"] == [{"name": "retryDelay", "value": "1"}]

    assert seen == {"1", None}
    assert sim.counters.throttled == 16


async def test_a_reset_is_a_client_connection_error(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """A reset drops the connection without an answer."""
    sim.faults.p_reset = 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url(sim, data_path(sim)), headers=headers) as response:
            await response.read()

    assert sim.counters.injected["reset"] >= 1  # aiohttp retries once on a reused connection


async def test_a_hang_holds_then_drops(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """A hung request gets nothing for hang_s, then its connection is dropped."""
    sim.faults.p_hang, sim.faults.hang_s = 1.0, 0.3
    started = time.monotonic()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url(sim, data_path(sim)), headers=headers) as response:
            await response.read()

    assert time.monotonic() - started >= 0.3
    assert sim.counters.injected["hang"] >= 1


async def test_a_hung_request_is_released_when_the_server_stops(
    client: aiohttp.ClientSession,
) -> None:
    """Stopping the server does not wait out a long hang."""
    started = time.monotonic()
    async with serve(SimulatorConfig(machines=3, faults=Faults(p_hang=1.0, hang_s=60))) as sim:
        headers = api_headers(sim, await fetch_token(client, sim))
        request = asyncio.create_task(get(client, sim, data_path(sim), headers))
        async with asyncio.timeout(5):
            # The server offers no event to await: polling its counter is the signal.
            while not sim.counters.injected["hang"]:  # noqa: ASYNC110 - see above
                await asyncio.sleep(0.01)
    with pytest.raises(aiohttp.ClientConnectionError):
        await request

    assert time.monotonic() - started < 5


@pytest.mark.parametrize("knob", ["p_truncated", "p_invalid_json"])
async def test_spoiled_bodies_are_200_and_not_json(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], knob: str
) -> None:
    """Truncated or invalid JSON comes as a 200 whose Content-Length fits the bytes sent."""
    setattr(sim.faults, knob, 1.0)
    index = next(i for i in range(len(sim.site)) if sim.site.sessions(i))
    async with client.get(url(sim, data_path(sim, index)), headers=headers) as response:
        body = await response.read()

    assert response.status == 200
    assert response.content_length == len(body)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    whole = orjson.dumps({"Items": sim.site.sessions(index)})
    if knob == "p_truncated":
        assert body == whole[: len(whole) // 2]


@pytest.mark.parametrize(
    ("mode", "retry_after"),
    [pytest.param("header", "1", id="header"), pytest.param("body", None, id="body-only")],
)
async def test_the_rate_limit_answers_429_beyond_the_burst(
    client: aiohttp.ClientSession,
    sim: Simulator,
    headers: dict[str, str],
    mode: RetryHint,
    retry_after: str | None,
) -> None:
    """Beyond rate_limit's burst a data call gets 429 with Retry-After or only retryDelay."""
    sim.faults.rate_limit, sim.faults.rate_burst = 2.0, 2.0
    sim.faults.retry_after = mode
    answers = []
    for _ in range(3):
        async with client.get(url(sim, data_path(sim)), headers=headers) as response:
            answers.append((response.status, response.headers.get("Retry-After")))
            body = await response.json()

    assert answers == [(200, None), (200, None), (429, retry_after)]
    assert body == ERRORS["rate_limited"] | {
        "detail": "Rate limit exceeded; try again in 1 seconds",
        "parameters": [{"name": "retryDelay", "value": "1"}],
    }
    assert sim.counters.injected["rate_limit"] == 1


async def test_token_calls_are_not_rate_limited(
    client: aiohttp.ClientSession, sim: Simulator
) -> None:
    """The rate limit applies to data calls only; tokens are always issued."""
    sim.faults.rate_limit, sim.faults.rate_burst = 1.0, 1.0
    for _ in range(4):
        await fetch_token(client, sim)

    assert sim.counters.tokens_issued == 4


async def test_failing_machines_always_get_500(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """A machine in fail_machines gets 500 by any of its keys; the others are served."""
    sim.faults.fail_machines = {sim.site.name(2).casefold()}
    for key in (sim.site.machine_id(2), sim.site.dns_name(2)):
        status, body, _ = await get(client, sim, sessions_path(key), headers)
        assert status == 500
        assert {"ErrorMessage", "SdkErrorId"} <= set(body)

    assert (await get(client, sim, data_path(sim, 3), headers))[0] == 200
    sim.faults.fail_machines = set()
    assert (await get(client, sim, data_path(sim, 2), headers))[0] == 200


async def test_forbid_all_answers_403(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """forbid_all makes every data call 403 common/authorization, until it is lifted."""
    sim.faults.forbid_all = True
    status, body, _ = await get(client, sim, "/cvad/manage/Machines", headers)
    sim.faults.forbid_all = False

    assert status == 403
    assert body["type"] == "https://errors-api.cloud.com/common/authorization"
    assert (await get(client, sim, "/cvad/manage/Machines", headers))[0] == 200


async def test_faults_can_be_swapped_for_a_profile_at_runtime(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """Assigning a Faults or a profile name changes what the next request meets."""
    sim.faults = Faults(p_503=1.0)
    assert (await get(client, sim, data_path(sim), headers))[0] == 503
    sim.faults = "none"
    assert (await get(client, sim, data_path(sim), headers))[0] == 200


async def test_latency_is_added(client: aiohttp.ClientSession, sim: Simulator) -> None:
    """latency_ms delays answers, the token endpoint's included."""
    sim.faults.latency_ms = 80
    started = time.monotonic()
    await fetch_token(client, sim)

    assert time.monotonic() - started >= 0.08


async def test_hostile_profile_injects_a_mix(client: aiohttp.ClientSession) -> None:
    """Under `hostile`, 300 calls meet several kinds of faults and still mostly succeed."""
    async with serve(SimulatorConfig(machines=300, faults="hostile")) as sim:
        sim.faults.token_lifetime_s = 60
        headers = api_headers(sim, await fetch_token(client, sim))
        ok = 0
        for i in range(300):
            try:
                status, _, _ = await get(client, sim, data_path(sim, i), headers)
            except aiohttp.ClientConnectionError:
                continue
            ok += status == 200

    assert len(sim.counters.injected) >= 4
    assert 220 < ok < 300
