"""The aiohttp client against scripted answers (aioresponses): wire format, retries, mapping."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any, ParamSpec

import aiohttp
import anyio
import anyio.lowlevel
import orjson
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from collector import __version__
from collector.auth import BearerAuth
from collector.client import CitrixClient, ClientSettings, open_client
from collector.config import ApiConfig, AuthConfig, CollectConfig, Config, Credentials
from collector.errors import ApiError, AuthError, ConfigError, SetupRejectedError
from collector.limiter import AdaptiveRateLimiter
from collector.models import ErrorKind, RunStats
from tests.conftest import load_fixture

P = ParamSpec("P")
BASE = "https://api.example.test"
TOKEN_URL = "https://auth.example.test/cctrustoauth2/cust/tokens/clients"
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
SETTINGS = ClientSettings(base_url=BASE, customer_id="cust", site_id="site-1", max_attempts=3)
ERROR_BODIES: dict[str, Any] = load_fixture("error-bodies.json")


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires.

    Known upstream (pnuckowski/aioresponses#289); every scripted answer here uses this class.
    """

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def script(mock: aioresponses, url: URL | str, method: str = "GET", **kwargs: Any) -> None:
    """Script an answer (or an exception) for `method url`."""
    mock.add(url, method, response_class=CompatResponse, **kwargs)


def result(**kwargs: Any) -> CallbackResult:
    """A callback's answer."""
    return CallbackResult(response_class=CompatResponse, **kwargs)


def sessions_url(wire_name: str, **query: str) -> URL:
    url = URL(f"{BASE}/cvad/manage/Machines/{wire_name}/Sessions", encoded=True)
    return url.with_query(query) if query else url


OK = {"Items": [{"Id": "s1"}, {"Id": "s2"}]}


def bounded(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Fail a test that runs longer than ten seconds instead of hanging the suite."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with anyio.fail_after(10):
            await test(*args, **kwargs)

    return run


class FakeClock:
    """The limiter's clock: sleeping moves time on at once."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await anyio.lowlevel.checkpoint()


@dataclass
class FakeAuth:
    """A renewable token provider: token k+1 after the k-th renewal."""

    renewals: int = 0
    renewable: bool = True

    async def token(self) -> str:
        return f"tok-{self.renewals}"

    async def renew(self, stale: str) -> str:
        self.renewals += 1
        return f"tok-{self.renewals}"


@dataclass
class Harness:
    client: CitrixClient
    mock: aioresponses
    stats: RunStats
    limiter: AdaptiveRateLimiter
    auth: FakeAuth
    waits: list[float] = field(default_factory=list)

    def get(self, url: URL | str, **kwargs: Any) -> None:
        script(self.mock, url, **kwargs)

    def calls(self, url: URL | str, method: str = "GET") -> list[Any]:
        return self.mock.requests.get((method, URL(url) if isinstance(url, str) else url), [])

    def headers(self, url: URL | str) -> list[dict[str, str]]:
        return [dict(call.kwargs["headers"]) for call in self.calls(url)]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    stats = RunStats()
    limiter = AdaptiveRateLimiter(0, FakeClock())
    auth = FakeAuth()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with aioresponses() as mock:
        async with aiohttp.ClientSession() as session:
            client = CitrixClient(
                SETTINGS,
                session=session,
                auth=auth,
                limiter=limiter,
                stats=stats,
                sleep=sleep,
                rng=lambda: 1.0,
                wall=lambda: NOW,
            )
            yield Harness(client, mock, stats, limiter, auth, waits)


async def confirm(h: Harness) -> None:
    """A first successful call, after which 403 and 406 are per-machine failures."""
    h.get(sessions_url("OK"), payload=OK)
    await h.client.get_machine_sessions("OK")


class TestWire:
    @bounded
    async def test_headers_and_name_on_the_wire(self, harness: Harness) -> None:
        """Exact headers, and DOMAIN\\NAME sent as DOMAIN%7CNAME."""

        url = sessions_url("DOMAIN%7CNAME")
        harness.get(url, payload=OK, headers={"Citrix-TransactionId": "srv-tx"})
        answer = await harness.client.get_machine_sessions("DOMAIN\\NAME")
        assert answer.items == OK["Items"]
        assert (answer.transaction_id, answer.attempts) == ("srv-tx", 1)
        ((method, sent),) = harness.mock.requests
        assert method == "GET"
        assert str(sent) == f"{BASE}/cvad/manage/Machines/DOMAIN%7CNAME/Sessions"
        (headers,) = harness.headers(url)
        transaction = headers.pop("Citrix-TransactionId")
        assert uuid.UUID(transaction).version == 4
        assert headers == {
            "Accept": "application/json",
            "Authorization": "CwsAuth Bearer=tok-0",
            "Citrix-CustomerId": "cust",
            "Citrix-InstanceId": "site-1",
            "User-Agent": f"collector/{__version__}",
        }
        assert harness.stats.requests == 1

    @bounded
    async def test_fields(self, harness: Harness) -> None:
        """Configured fields are sent as fields=A,B."""

        harness.client.settings = replace(SETTINGS, fields=("Id", "State"))
        url = sessions_url("M1", fields="Id,State")
        harness.get(url, payload=OK)
        await harness.client.get_machine_sessions("M1")
        assert len(harness.calls(url)) == 1

    @bounded
    async def test_fresh_transaction_id_per_attempt(self, harness: Harness) -> None:
        """Every attempt, retries included, carries its own transaction id."""

        url = sessions_url("M1")
        harness.get(url, status=503, body=b"")
        harness.get(url, status=503, body=b"")
        harness.get(url, payload=OK)
        answer = await harness.client.get_machine_sessions("M1")
        ids = [h["Citrix-TransactionId"] for h in harness.headers(url)]
        assert len(set(ids)) == 3
        assert answer.attempts == 3


class TestRetries:
    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    @bounded
    async def test_retryable_status(self, harness: Harness, status: int) -> None:
        """Each retryable status is retried, then the answer is used."""

        url = sessions_url("M1")
        harness.get(url, status=status, body=b"")
        harness.get(url, payload=OK)
        answer = await harness.client.get_machine_sessions("M1")
        assert (answer.items, answer.attempts) == (OK["Items"], 2)
        assert (harness.stats.requests, harness.stats.retries) == (2, 1)
        assert harness.waits == [0.5]
        assert harness.stats.throttled == (1 if status == 429 else 0)

    @bounded
    async def test_429_pauses_the_run(self, harness: Harness) -> None:
        """A 429 reaches the rate limiter: a run-wide pause, and a cut of a paced rate."""

        limiter = AdaptiveRateLimiter(100, FakeClock())
        harness.client.transport.limiter = limiter
        url = sessions_url("M1")
        harness.get(url, status=429, body=b"", headers={"Retry-After": "5"})
        harness.get(url, payload=OK)
        await harness.client.get_machine_sessions("M1")
        assert limiter.paused_until == 5.0
        assert limiter.current_rate < 100

    @pytest.mark.parametrize(
        ("headers", "body", "wait"),
        [
            pytest.param({"Retry-After": "3"}, b"", 3.0, id="seconds"),
            pytest.param(
                {"Retry-After": format_datetime(NOW + timedelta(seconds=7), usegmt=True)},
                b"",
                7.0,
                id="http-date",
            ),
            pytest.param({}, orjson.dumps(ERROR_BODIES["rate_limited"]), 4.0, id="retry-delay"),
            pytest.param({"Retry-After": "0"}, b"", 0.5, id="backoff-above-floor"),
        ],
    )
    @bounded
    async def test_server_wait_is_the_floor(
        self, harness: Harness, headers: dict[str, str], body: bytes, wait: float
    ) -> None:
        """Retry-After (seconds or a date), else retryDelay, is the least wait before a retry."""

        url = sessions_url("M1")
        harness.get(url, status=429, body=body, headers=headers)
        harness.get(url, payload=OK)
        await harness.client.get_machine_sessions("M1")
        assert harness.waits == [wait]

    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, ErrorKind.FORBIDDEN),
            (403, ErrorKind.FORBIDDEN),
            (404, ErrorKind.NOT_FOUND),
            (406, ErrorKind.FORBIDDEN),
        ],
    )
    @bounded
    async def test_not_retried(self, harness: Harness, status: int, kind: ErrorKind) -> None:
        """400, 403, 404 and 406 (after the run's first success) fail the machine at once."""

        await confirm(harness)
        url = sessions_url("M1")
        harness.get(url, status=status, payload=ERROR_BODIES["not_found_modern"])
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        exc = caught.value
        assert (exc.kind, exc.status, exc.attempts, exc.retryable) == (kind, status, 1, False)
        assert len(harness.calls(url)) == 1
        assert harness.waits == []

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            pytest.param(b'{"Items": [{"Id": "s1"', "not valid JSON", id="truncated"),
            pytest.param(b"<html>maintenance</html>", "not valid JSON", id="html"),
        ],
    )
    @bounded
    async def test_invalid_json_exhausts(self, harness: Harness, body: bytes, message: str) -> None:
        """A 2xx body that is not JSON is retried, then invalid_response with the attempts."""

        url = sessions_url("M1")
        harness.get(url, status=200, body=body, repeat=True)
        with pytest.raises(ApiError, match=message) as caught:
            await harness.client.get_machine_sessions("M1")
        exc = caught.value
        assert (exc.kind, exc.attempts) == (ErrorKind.INVALID_RESPONSE, 3)
        assert harness.stats.requests == 3
        assert harness.stats.retries == 2

    @pytest.mark.parametrize(
        ("exception", "kind"),
        [
            pytest.param(aiohttp.ClientConnectionError(), ErrorKind.NETWORK, id="refused"),
            pytest.param(aiohttp.ServerDisconnectedError(), ErrorKind.NETWORK, id="disconnect"),
            pytest.param(aiohttp.ClientPayloadError("cut"), ErrorKind.NETWORK, id="payload"),
            pytest.param(ConnectionResetError(104, "reset"), ErrorKind.NETWORK, id="reset"),
            pytest.param(TimeoutError(), ErrorKind.TIMEOUT, id="timeout"),
            pytest.param(aiohttp.ServerTimeoutError(), ErrorKind.TIMEOUT, id="server-timeout"),
        ],
    )
    @bounded
    async def test_transport_errors(
        self, harness: Harness, exception: Exception, kind: ErrorKind
    ) -> None:
        """Connection errors and timeouts are retried, then reported with their kind."""

        url = sessions_url("M1")
        harness.get(url, exception=exception)
        harness.get(url, payload=OK)
        assert (await harness.client.get_machine_sessions("M1")).attempts == 2
        harness.get(url, exception=exception, repeat=True)
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        assert (caught.value.kind, caught.value.attempts) == (kind, 3)
        assert isinstance(caught.value.__cause__, type(exception))

    @pytest.mark.parametrize(
        ("fixture", "message"),
        [
            ("not_found_modern", "Machine not found"),
            ("not_found_legacy", "Machine not found (MachineNotFound)"),
            ("unavailable_params_object", "Service is unavailable; try again in 4 seconds"),
            ("not_acceptable", "Must accept application/json media type"),
            ("missing_customer_500", "Internal server error (activity c59d4c1e"),
            ("unauthenticated_old_gateway", "Missing or invalid CWSAuth header."),
            ("bad_gateway_html", "502 Bad Gateway"),
        ],
    )
    @bounded
    async def test_error_bodies(self, harness: Harness, fixture: str, message: str) -> None:
        """Every documented error body is read for its message."""

        await confirm(harness)
        body = ERROR_BODIES[fixture]
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        harness.get(sessions_url("M1"), status=404, body=raw)
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        assert caught.value.message.startswith(f"HTTP 404: {message}")


class TestSetup:
    @pytest.mark.parametrize(
        ("status", "words"),
        [(403, "permission"), (406, "bug")],
    )
    @bounded
    async def test_first_call_rejected(self, harness: Harness, status: int, words: str) -> None:
        """A 403 or 406 before any success stops the run, saying what to check."""

        harness.get(sessions_url("M1"), status=status, payload={"detail": "Access denied"})
        with pytest.raises(SetupRejectedError, match=words) as caught:
            await harness.client.get_machine_sessions("M1")
        assert caught.value.exit_code == 3
        assert "tok-0" not in str(caught.value)

    @bounded
    async def test_forbidden_message_names_the_settings(self, harness: Harness) -> None:
        """The 403 message names the customer and site to check."""

        harness.get(sessions_url("M1"), status=403, payload={"detail": "Access denied"})
        with pytest.raises(SetupRejectedError) as caught:
            await harness.client.get_machine_sessions("M1")
        message = str(caught.value)
        assert "customer_id (cust)" in message
        assert "site_id (site-1)" in message

    @bounded
    async def test_site_discovery(self, harness: Harness) -> None:
        """Without [api] site_id, /me is asked once (no InstanceId) and its site is used."""

        harness.client.site_id = None
        me_url = f"{BASE}/cvad/manage/me"
        me = {"Customers": [{"Id": "cust", "Sites": [{"Id": "site-9", "Name": "S"}]}]}
        harness.get(me_url, payload=me)
        harness.get(sessions_url("M1"), payload=OK, repeat=True)
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(harness.client.get_machine_sessions, "M1")
        (me_headers,) = harness.headers(me_url)
        assert "Citrix-InstanceId" not in me_headers
        assert me_headers["Accept"] == "application/json"
        sent = harness.headers(sessions_url("M1"))
        assert {h["Citrix-InstanceId"] for h in sent} == {"site-9"}
        assert await harness.client.resolve_site_id() == "site-9"

    @bounded
    async def test_configured_site_needs_no_call(self, harness: Harness) -> None:
        """A configured site id is used without calling /me."""

        assert await harness.client.resolve_site_id() == "site-1"
        assert not harness.mock.requests


class TestAuth:
    @bounded
    async def test_401_renews_once(self, harness: Harness) -> None:
        """A 401 renews the token and sends again, without counting a failed attempt."""

        url = sessions_url("M1")
        harness.get(url, status=401, payload=ERROR_BODIES["unauthenticated"])
        harness.get(url, payload=OK)
        answer = await harness.client.get_machine_sessions("M1")
        assert answer.attempts == 1
        assert harness.auth.renewals == 1
        tokens = [h["Authorization"] for h in harness.headers(url)]
        assert tokens == ["CwsAuth Bearer=tok-0", "CwsAuth Bearer=tok-1"]
        assert harness.stats.retries == 0

    @bounded
    async def test_second_401_is_fatal(self, harness: Harness) -> None:
        """A 401 right after a renewal is an AuthError."""

        url = sessions_url("M1")
        harness.get(url, status=401, body=b"", repeat=True)
        with pytest.raises(AuthError, match="401 twice"):
            await harness.client.get_machine_sessions("M1")
        assert harness.auth.renewals == 1
        assert len(harness.calls(url)) == 2

    @bounded
    async def test_bearer_401_is_fatal(self, harness: Harness) -> None:
        """A static token refused says which variable to refresh."""

        harness.client.auth = BearerAuth("static", "MY_BEARER")
        harness.get(sessions_url("M1"), status=401, body=b"")
        with pytest.raises(AuthError, match="MY_BEARER"):
            await harness.client.get_machine_sessions("M1")


class TestPages:
    @bounded
    async def test_follows_continuation_tokens(self, harness: Harness) -> None:
        """Pages are fetched with limit=1000 until the token is absent, null or empty."""

        url = URL(f"{BASE}/cvad/manage/Machines")
        harness.get(
            url.with_query(limit="1000"),
            payload={"Items": [{"Id": 1}], "ContinuationToken": "a/b+"},
        )
        harness.get(
            url.with_query(limit="1000", continuationToken="a/b+"),
            payload={"Items": [{"Id": 2}], "ContinuationToken": "c"},
        )
        harness.get(
            url.with_query(limit="1000", continuationToken="c"),
            payload={"Items": [{"Id": 3}], "ContinuationToken": None},
        )
        pages = [page async for page in harness.client.machines()]
        assert pages == [[{"Id": 1}], [{"Id": 2}], [{"Id": 3}]]

    @bounded
    async def test_delivery_group_and_site_sessions(self, harness: Harness) -> None:
        """Delivery-group machines and site-wide sessions use their own encoded paths."""

        harness.client.settings = replace(SETTINGS, fields=("Id",))
        group = URL(f"{BASE}/cvad/manage/DeliveryGroups/DG%201/Machines", encoded=True)
        harness.get(group.with_query(limit="1000"), payload={"Items": [{"Id": "m"}]})
        sessions = URL(f"{BASE}/cvad/manage/Sessions").with_query(fields="Id", limit="1000")
        harness.get(sessions, payload={"Items": [{"Id": "s"}], "ContinuationToken": ""})
        assert [p async for p in harness.client.machines(delivery_group="DG 1")] == [[{"Id": "m"}]]
        assert [p async for p in harness.client.site_sessions()] == [[{"Id": "s"}]]

    @bounded
    async def test_repeated_token_stops(self, harness: Harness) -> None:
        """A server that hands back the same token twice cannot loop the client forever."""

        url = URL(f"{BASE}/cvad/manage/Sessions")
        harness.get(url.with_query(limit="1000"), payload={"Items": [], "ContinuationToken": "x"})
        harness.get(
            url.with_query(limit="1000", continuationToken="x"),
            payload={"Items": [], "ContinuationToken": "x"},
        )
        with pytest.raises(ApiError, match="repeated"):
            _ = [p async for p in harness.client.site_sessions()]


class TestConcurrency:
    @bounded
    async def test_at_most_concurrency_in_flight(self, harness: Harness) -> None:
        """No more than `concurrency` exchanges are in flight, however many callers."""

        running = peak = 0

        async def slow(url: URL, **kwargs: Any) -> CallbackResult:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.01)
            running -= 1
            return result(payload=OK)

        client = harness.client
        client.transport.capacity.total_tokens = 3
        harness.get(sessions_url("M1"), callback=slow, repeat=True)
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(client.get_machine_sessions, "M1")
        assert peak == 3
        assert harness.stats.requests == 20


def run_config(**collect: Any) -> Config:
    return Config(
        api=ApiConfig(base_url=BASE, customer_id="cust", site_id="site-1"),
        auth=AuthConfig(token_url=TOKEN_URL),
        collect=CollectConfig(**collect),
    )


class TestOpenClient:
    @bounded
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
            script(mock, sessions_url("M1"), callback=sessions, repeat=True)
            limiter = AdaptiveRateLimiter(0)
            async with open_client(run_config(), credentials, stats, limiter=limiter) as client:
                async with anyio.create_task_group() as group:
                    for _ in range(50):
                        group.start_soon(client.get_machine_sessions, "M1")
                session = client.transport.session
            assert session.closed
            (post,) = [key for key in mock.requests if key[0] == "POST"]
            assert len(mock.requests[post]) == 2
            assert mock.requests[post][0].kwargs["headers"]["Content-Type"] == (
                "application/x-www-form-urlencoded"
            )
        assert issued == ["t1", "t2"]
        assert stats.token_requests == 2

    @bounded
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

    @bounded
    async def test_unreadable_ca_bundle(self, tmp_path: Any) -> None:
        """A ca_bundle that cannot be read is a configuration error naming it."""

        config = run_config()
        config = replace(config, api=replace(config.api, ca_bundle=str(tmp_path / "none.pem")))
        with pytest.raises(ConfigError, match="ca_bundle"):
            async with open_client(config, Credentials(), RunStats()):
                pass
