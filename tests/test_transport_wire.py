"""The wire layer and the whole stack from `open_client`, against aioresponses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import anyio
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from collector.config import ApiConfig, AuthConfig, CollectConfig, Config, Credentials
from collector.connect import loop_options, open_client
from collector.errors import ApiError, AuthError, ConfigError
from collector.models import ErrorKind, RunStats
from collector.transport import Request
from collector.wire import AioHttpTransport
from tests.conftest import load_fixture

BASE = "https://api.example.test"
TOKEN_URL = "https://auth.example.test/cctrustoauth2/cust/tokens/clients"
ERROR_BODIES: dict[str, Any] = load_fixture("error-bodies.json")
ME = {"Customers": [{"Id": "cust", "Sites": [{"Id": "site-1"}]}]}
OK = {"Items": [{"Id": "s1"}]}


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires.

    Known upstream (pnuckowski/aioresponses#289); every scripted answer here uses this class.
    """

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def script(mock: aioresponses, url: URL | str, method: str = "GET", **kwargs: Any) -> None:
    mock.add(url, method, response_class=CompatResponse, **kwargs)


def result(**kwargs: Any) -> CallbackResult:
    return CallbackResult(response_class=CompatResponse, **kwargs)


class TestWire:
    async def test_url_goes_as_built(self) -> None:
        """The URL protocol encoded is sent as it is, and the whole answer comes back."""

        url = f"{BASE}/cvad/manage/Machines/D%7CN/Sessions"
        with aioresponses() as mock, anyio.fail_after(10):
            script(mock, URL(url, encoded=True), payload=OK, headers={"X-A": "1"})
            async with AioHttpTransport.open(concurrency=2, timeout_s=5, tls=True) as wire:
                got = await wire.send(Request("GET", url, {"Accept": "application/json"}))
            ((method, sent),) = mock.requests
        assert (method, str(sent)) == ("GET", url)
        assert (got.status, got.body, got.headers["X-A"]) == (
            200,
            b'{"Items": [{"Id": "s1"}]}',
            "1",
        )

    @pytest.mark.parametrize(
        ("exception", "kind", "retryable"),
        [
            pytest.param(aiohttp.ClientConnectionError(), ErrorKind.NETWORK, True, id="refused"),
            pytest.param(aiohttp.ServerDisconnectedError(), ErrorKind.NETWORK, True, id="closed"),
            pytest.param(aiohttp.ClientPayloadError("cut"), ErrorKind.NETWORK, True, id="cut"),
            pytest.param(ConnectionResetError(104, "reset"), ErrorKind.NETWORK, True, id="reset"),
            pytest.param(TimeoutError(), ErrorKind.TIMEOUT, True, id="timeout"),
            pytest.param(aiohttp.ServerTimeoutError(), ErrorKind.TIMEOUT, True, id="read-timeout"),
            pytest.param(aiohttp.InvalidURL("x"), ErrorKind.NETWORK, False, id="invalid-url"),
        ],
    )
    async def test_exceptions_become_api_errors(
        self, exception: Exception, kind: ErrorKind, retryable: bool
    ) -> None:
        """Each aiohttp or socket failure is an ApiError of its kind, the cause kept."""

        url = f"{BASE}/x"
        with aioresponses() as mock, anyio.fail_after(10):
            script(mock, url, exception=exception)
            async with AioHttpTransport.open(concurrency=2, timeout_s=5, tls=True) as wire:
                with pytest.raises(ApiError) as caught:
                    await wire.send(Request("GET", url, {"Authorization": "CwsAuth Bearer=SECRET"}))
        assert (caught.value.kind, caught.value.retryable) == (kind, retryable)
        assert isinstance(caught.value.__cause__, type(exception))
        assert "SECRET" not in caught.value.message


def run_config(**collect: Any) -> Config:
    return Config(
        api=ApiConfig(base_url=BASE, customer_id="cust", site_id="site-1"),
        auth=AuthConfig(token_url=TOKEN_URL),
        collect=CollectConfig(**collect),
    )


class TestOpenClient:
    async def test_one_token_for_many_callers_and_one_renewal(self) -> None:
        """50 callers share one token POST; after the token expires, 50 401s make one more."""

        issued: list[str] = []

        def token(url: URL, **kwargs: Any) -> CallbackResult:
            issued.append(f"t{len(issued) + 1}")
            return result(
                payload={"access_token": issued[-1], "expires_in": "3600", "token_type": "b"}
            )

        def sessions(url: URL, **kwargs: Any) -> CallbackResult:
            if kwargs["headers"]["Authorization"] == "CwsAuth Bearer=t1" and len(issued) == 1:
                return result(status=401, payload=ERROR_BODIES["unauthenticated"])
            return result(payload=OK)

        stats = RunStats()
        credentials = Credentials(client_id="id", client_secret="secret")
        with aioresponses() as mock, anyio.fail_after(10):
            script(mock, TOKEN_URL, "POST", callback=token, repeat=True)
            script(mock, f"{BASE}/cvad/manage/me", payload=ME, repeat=True)
            script(mock, f"{BASE}/cvad/manage/Machines/M1/Sessions", callback=sessions, repeat=True)
            async with (
                open_client(run_config(rate=0), credentials, stats) as client,
                anyio.create_task_group() as group,
            ):
                for _ in range(50):
                    group.start_soon(client.get_machine_sessions, "M1")
            (post,) = [key for key in mock.requests if key[0] == "POST"]
            assert len(mock.requests[post]) == 2
            assert mock.requests[post][0].kwargs["headers"]["Content-Type"] == (
                "application/x-www-form-urlencoded"
            )
        assert issued == ["t1", "t2"]
        assert stats.token_requests == 2

    async def test_invalid_client_is_fast(self) -> None:
        """Refused credentials stop with AuthError after one token call, naming the variables."""

        with aioresponses() as mock, anyio.fail_after(10):
            script(
                mock, TOKEN_URL, "POST", status=400, payload=ERROR_BODIES["token_invalid_client"]
            )
            credentials = Credentials(client_id="id", client_secret="very-secret")
            async with open_client(run_config(), credentials, RunStats()) as client:
                with pytest.raises(AuthError) as caught:
                    await client.get_machine_sessions("M1")
            assert sum(len(calls) for calls in mock.requests.values()) == 1
        message = str(caught.value)
        assert "CITRIX_CLIENT_ID" in message
        assert "CITRIX_CLIENT_SECRET" in message
        assert "very-secret" not in message

    async def test_unreadable_ca_bundle(self, tmp_path: Path) -> None:
        """A ca_bundle that cannot be read is a configuration error naming it."""

        config = run_config()
        config = replace(config, api=replace(config.api, ca_bundle=str(tmp_path / "none.pem")))
        with pytest.raises(ConfigError, match="ca_bundle"):
            async with open_client(config, Credentials(), RunStats()):
                pass


def test_loop_options() -> None:
    """uvloop only when asked for (and installed); the standard loop otherwise."""

    assert loop_options(False) == {}
    assert loop_options(True) in ({}, {"use_uvloop": True})


def sim_config(sim: Any, **collect: Any) -> Config:
    return Config(
        api=ApiConfig(base_url=sim.base_url, customer_id=sim.customer_id),
        auth=AuthConfig(token_url=sim.token_url),
        collect=CollectConfig(**{"rate": 0, "max_backoff_s": 1, **collect}),
    )


@pytest.fixture
def simulator() -> Any:
    """A factory of simulators on 127.0.0.1 in threads; all are stopped at the end."""
    from collector.simulator import SimulatorConfig, start_in_thread

    handles: list[Any] = []

    def start(**options: Any) -> Any:
        handles.append(start_in_thread(SimulatorConfig(**options)))
        return handles[-1]

    yield start
    for handle in handles:
        handle.stop()


def paged_machine(sim: Any, at_least: int) -> int:
    return next(i for i in range(200) if len(sim.site.sessions(i)) >= at_least)


class TestLoopback:
    async def test_paged_machine_is_collected_whole(self, simulator: Any) -> None:
        """A machine paged 3 sessions at a time comes back whole, each page a request."""

        sim = simulator(machines=200, session_page=3)
        index = paged_machine(sim, 7)
        want = [s["Id"] for s in sim.site.sessions(index)]
        stats = RunStats()
        credentials = Credentials(client_id=sim.client_id, client_secret=sim.client_secret)
        with anyio.fail_after(20):
            async with open_client(sim_config(sim), credentials, stats) as client:
                got = await client.get_machine_sessions(sim.site.machine(index)["Name"])
        assert sorted(s["Id"] for s in got.items) == sorted(want)
        pages = -(-len(want) // 3)
        assert sim.counters.requests["machine_sessions"] == pages
        assert got.attempts == pages

    async def test_repeated_machine_token_is_invalid_response(self, simulator: Any) -> None:
        """A pager that repeats its token ends the machine as invalid_response, not a loop."""

        sim = simulator(machines=200, session_page=3, repeat_token=True)
        index = paged_machine(sim, 7)
        credentials = Credentials(client_id=sim.client_id, client_secret=sim.client_secret)
        with anyio.fail_after(20):
            async with open_client(sim_config(sim), credentials, RunStats()) as client:
                with pytest.raises(ApiError) as caught:
                    await client.get_machine_sessions(sim.site.machine(index)["Name"])
        assert caught.value.kind is ErrorKind.INVALID_RESPONSE
        assert sim.counters.requests["machine_sessions"] == 2

    async def test_limit_on_calls_in_flight(self, simulator: Any) -> None:
        """Against 4 calls in flight every machine is collected, with a bounded share of 429s."""

        sim = simulator(machines=120, max_in_flight=4, latency_ms=5)
        stats = RunStats()
        credentials = Credentials(client_id=sim.client_id, client_secret=sim.client_secret)
        names = [sim.site.machine(i)["Name"] for i in range(120)]
        got: dict[str, int] = {}

        async def one(name: str) -> None:
            got[name] = len((await client.get_machine_sessions(name)).items)

        with anyio.fail_after(60):
            async with (
                open_client(sim_config(sim, concurrency=32), credentials, stats) as client,
                anyio.create_task_group() as group,
            ):
                for name in names:
                    group.start_soon(one, name)
        assert got == {n: len(sim.site.sessions(i)) for i, n in enumerate(names)}
        assert sim.counters.peak_in_flight <= 4
        assert stats.current_window <= 5
        assert stats.throttled < 0.25 * stats.requests
