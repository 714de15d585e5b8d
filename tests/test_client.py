"""The client against a mock transport at the bottom of the real layers: endpoints, retries,
the 401 resend, /me, paging, setup errors and what a failure records."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import format_datetime
from typing import Any, ParamSpec

import anyio
import orjson
import pytest

from collector import __version__
from collector.auth import BearerAuth
from collector.client import CitrixClient, ClientSettings, retry_policy
from collector.errors import ApiError, AuthError, SetupRejectedError
from collector.models import ErrorKind, RunStats
from collector.pacing import Controller, Pacer
from collector.protocol import Answer
from collector.transport import AuthorizedTransport, PacedTransport, Request
from tests.conftest import load_fixture
from tests.fakes import EPOCH, FakeClock, RecordingTransport, answer

P = ParamSpec("P")
BASE = "https://api.example.test"
NOW = EPOCH
SETTINGS = ClientSettings(base_url=BASE, customer_id="cust", site_id="site-1", max_attempts=3)
ERROR_BODIES: dict[str, Any] = load_fixture("error-bodies.json")
ME = {"Customers": [{"Id": "cust", "Sites": [{"Id": "site-9", "Name": "S"}]}]}
OK = {"Items": [{"Id": "s1"}, {"Id": "s2"}]}


def sessions(wire_name: str, query: str = "") -> str:
    return f"/cvad/manage/Machines/{wire_name}/Sessions" + (f"?{query}" if query else "")


def bounded(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Fail a test that runs longer than ten seconds instead of hanging the suite."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with anyio.fail_after(10):
            await test(*args, **kwargs)

    return run


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


Step = Answer | Exception


@dataclass
class Harness:
    """The client over the real paced and authorised layers, a script at the bottom."""

    client: CitrixClient
    wire: RecordingTransport
    stats: RunStats
    auth: FakeAuth
    pacer: Pacer
    script: dict[str, list[Step]] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)

    def on(self, path: str, *steps: Step) -> None:
        """Answer `path` (with its query) with `steps` in turn, the last one repeating."""
        self.script[path] = list(steps)

    def sent(self, path: str) -> list[Request]:
        return [r for r in self.wire.sent if r.url == BASE + path]

    def headers(self, path: str) -> list[dict[str, str]]:
        return [dict(r.headers) for r in self.sent(path)]


@pytest.fixture
def harness() -> Harness:
    stats = RunStats()
    auth = FakeAuth()
    waits: list[float] = []
    script: dict[str, list[Step]] = {"/cvad/manage/me": [answer(200, ME)]}

    async def handler(request: Request) -> Answer:
        steps = script.get(request.url.removeprefix(BASE))
        if steps is None:
            return answer(404, ERROR_BODIES["not_found_modern"])
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        return step

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    wire = RecordingTransport(handler)
    pacer = Pacer(Controller(0, SETTINGS.concurrency), FakeClock())
    transport = PacedTransport(AuthorizedTransport(wire, auth), pacer, stats, wall=lambda: NOW)
    client = CitrixClient(
        SETTINGS,
        transport=transport,
        auth=auth,
        stats=stats,
        retry=retry_policy(SETTINGS, stats, sleep=sleep, rng=lambda: 1.0),
        wall=lambda: NOW,
    )
    return Harness(client, wire, stats, auth, pacer, script, waits)


async def confirm(h: Harness) -> None:
    """A first successful call, after which 403 and 406 are per-machine failures."""
    h.on(sessions("OK"), answer(200, OK))
    await h.client.get_machine_sessions("OK")


class TestWire:
    @bounded
    async def test_headers_and_name_on_the_wire(self, harness: Harness) -> None:
        """Exact headers, and DOMAIN\\NAME sent as DOMAIN%7CNAME."""

        harness.on(sessions("DOMAIN%7CNAME"), answer(200, OK))
        result = await harness.client.get_machine_sessions("DOMAIN\\NAME")
        assert result.items == OK["Items"]
        (request,) = harness.sent(sessions("DOMAIN%7CNAME"))
        assert request.method == "GET"
        headers = dict(request.headers)
        transaction = headers.pop("Citrix-TransactionId")
        assert uuid.UUID(transaction).version == 4
        assert result.transaction_id == transaction
        assert headers == {
            "Accept": "application/json",
            "Authorization": "CwsAuth Bearer=tok-0",
            "Citrix-CustomerId": "cust",
            "Citrix-InstanceId": "site-1",
            "User-Agent": f"collector/{__version__}",
        }
        assert harness.stats.requests == 2  # /me, then the machine

    @bounded
    async def test_fields(self, harness: Harness) -> None:
        """Configured fields are sent as fields=A,B."""

        harness.client.settings = replace(SETTINGS, fields=("Id", "State"))
        harness.on(sessions("M1", "fields=Id,State"), answer(200, OK))
        await harness.client.get_machine_sessions("M1")
        assert len(harness.sent(sessions("M1", "fields=Id,State"))) == 1

    @bounded
    async def test_fresh_transaction_id_per_attempt(self, harness: Harness) -> None:
        """Every attempt, retries included, carries its own transaction id."""

        harness.on(sessions("M1"), answer(503), answer(503), answer(200, OK))
        result = await harness.client.get_machine_sessions("M1")
        ids = [h["Citrix-TransactionId"] for h in harness.headers(sessions("M1"))]
        assert len(set(ids)) == 3
        assert result.attempts == 3


class TestRetries:
    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    @bounded
    async def test_retryable_status(self, harness: Harness, status: int) -> None:
        """Each retryable status is retried, then the answer is used."""

        harness.on(sessions("M1"), answer(status), answer(200, OK))
        result = await harness.client.get_machine_sessions("M1")
        assert (result.items, result.attempts) == (OK["Items"], 2)
        assert (harness.stats.requests, harness.stats.retries) == (3, 1)
        assert harness.waits == [0.5]
        assert harness.stats.throttled == (1 if status == 429 else 0)

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
            pytest.param({"Retry-After": "2026-11-29T12:00:09Z"}, b"", 9.0, id="rfc3339"),
            pytest.param({}, orjson.dumps(ERROR_BODIES["rate_limited"]), 4.0, id="retry-delay"),
            pytest.param(
                {"Retry-After": "soon"},
                orjson.dumps(ERROR_BODIES["rate_limited"]),
                4.0,
                id="unreadable-then-retry-delay",
            ),
            pytest.param({"Retry-After": "soon"}, b"", 0.5, id="unreadable-then-backoff"),
            pytest.param({"Retry-After": "0"}, b"", 0.5, id="backoff-above-floor"),
        ],
    )
    @bounded
    async def test_server_wait_is_the_floor(
        self, harness: Harness, headers: dict[str, str], body: bytes, wait: float
    ) -> None:
        """Retry-After (seconds, HTTP or RFC 3339 date), else retryDelay, else the backoff."""

        harness.on(sessions("M1"), answer(429, body, headers), answer(200, OK))
        await harness.client.get_machine_sessions("M1")
        assert harness.waits == [wait]

    @bounded
    async def test_unreadable_retry_after_is_said_once(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A Retry-After that is neither seconds nor a date is logged once a run."""

        harness.on(sessions("M1"), answer(503, b"", {"Retry-After": "whenever"}))
        with caplog.at_level(logging.WARNING, "collector.client"), pytest.raises(ApiError):
            await harness.client.get_machine_sessions("M1")
        said = [r for r in caplog.records if "Retry-After" in r.getMessage()]
        assert len(said) == 1

    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, ErrorKind.REJECTED),
            (403, ErrorKind.FORBIDDEN),
            (404, ErrorKind.NOT_FOUND),
            (406, ErrorKind.REJECTED),
        ],
    )
    @bounded
    async def test_not_retried(self, harness: Harness, status: int, kind: ErrorKind) -> None:
        """400, 403, 404 and 406 (after the run's first success) fail the machine at once."""

        await confirm(harness)
        harness.on(sessions("M1"), answer(status, ERROR_BODIES["not_found_modern"]))
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        exc = caught.value
        assert (exc.kind, exc.status, exc.attempts, exc.retryable) == (kind, status, 1, False)
        assert len(harness.sent(sessions("M1"))) == 1
        assert harness.waits == []

    @bounded
    async def test_invalid_json_exhausts(self, harness: Harness) -> None:
        """A 2xx body that is not JSON is retried, then invalid_response with the attempts."""

        harness.on(sessions("M1"), answer(200, b'{"Items": [{"Id": "s1"'))
        with pytest.raises(ApiError, match="not valid JSON") as caught:
            await harness.client.get_machine_sessions("M1")
        assert (caught.value.kind, caught.value.attempts) == (ErrorKind.INVALID_RESPONSE, 3)
        assert harness.stats.retries == 2

    @pytest.mark.parametrize(
        "kind", [pytest.param(ErrorKind.NETWORK, id="reset"), pytest.param(ErrorKind.TIMEOUT)]
    )
    @bounded
    async def test_no_answer_records_our_transaction_id(
        self, harness: Harness, kind: ErrorKind
    ) -> None:
        """A timeout or a reset is retried, then recorded with the transaction id we sent."""

        await confirm(harness)
        harness.on(sessions("M1"), ApiError("no answer", kind=kind, retryable=True))
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        last = harness.headers(sessions("M1"))[-1]["Citrix-TransactionId"]
        assert (caught.value.kind, caught.value.attempts) == (kind, 3)
        assert caught.value.transaction_id == last

    @bounded
    async def test_error_answer_records_our_transaction_id(self, harness: Harness) -> None:
        """A 502 from a gateway carries no transaction id: the one we sent is recorded."""

        await confirm(harness)
        harness.on(sessions("M1"), answer(502, b"<html>502 Bad Gateway</html>"))
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        sent = harness.headers(sessions("M1"))[-1]["Citrix-TransactionId"]
        assert caught.value.transaction_id == sent

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
        harness.on(sessions("M1"), answer(404, raw))
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        assert caught.value.message.startswith(f"HTTP 404: {message}")


class TestSetup:
    @pytest.mark.parametrize(("status", "words"), [(403, "permission"), (406, "bug")])
    @bounded
    async def test_first_call_rejected(self, harness: Harness, status: int, words: str) -> None:
        """A 403 or 406 before any success stops the run, saying what to check."""

        harness.on(sessions("M1"), answer(status, {"detail": "Access denied"}))
        with pytest.raises(SetupRejectedError, match=words) as caught:
            await harness.client.get_machine_sessions("M1")
        assert caught.value.exit_code == 3
        assert "tok-0" not in str(caught.value)

    @bounded
    async def test_forbidden_message_names_the_settings(self, harness: Harness) -> None:
        """The 403 message names the customer and site to check."""

        harness.on(sessions("M1"), answer(403, {"detail": "Access denied"}))
        with pytest.raises(SetupRejectedError) as caught:
            await harness.client.get_machine_sessions("M1")
        assert "customer_id (cust)" in str(caught.value)
        assert "site_id (site-1)" in str(caught.value)

    @bounded
    async def test_site_discovery(self, harness: Harness) -> None:
        """Without [api] site_id, /me is asked once (no InstanceId) and its site is used."""

        harness.client.site_id = None
        harness.on(sessions("M1"), answer(200, OK))
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(harness.client.get_machine_sessions, "M1")
        (me_headers,) = harness.headers("/cvad/manage/me")
        assert "Citrix-InstanceId" not in me_headers
        assert {h["Citrix-InstanceId"] for h in harness.headers(sessions("M1"))} == {"site-9"}
        assert await harness.client.resolve_site_id() == "site-9"

    @bounded
    async def test_configured_site_still_calls_me(self, harness: Harness) -> None:
        """A configured site id is used, and /me is still called once first."""

        assert await harness.client.resolve_site_id() == "site-1"
        assert await harness.client.resolve_site_id() == "site-1"
        assert [r.url for r in harness.wire.sent] == [f"{BASE}/cvad/manage/me"]

    @bounded
    async def test_404_on_me_is_fatal(self, harness: Harness) -> None:
        """A 404 on /me says base_url looks wrong, with the URL called, and stops the run."""

        harness.on("/cvad/manage/me", answer(404, ERROR_BODIES["not_found_modern"]))
        with pytest.raises(SetupRejectedError) as caught:
            await harness.client.resolve_site_id()
        message = str(caught.value)
        assert caught.value.exit_code == 3
        assert "base_url" in message
        assert f"{BASE}/cvad/manage/me" in message
        assert "tok-0" not in message

    @bounded
    async def test_404_on_the_listing_is_fatal(self, harness: Harness) -> None:
        """A 404 on the machine listing stops the run; a 404 for a machine does not."""

        with pytest.raises(ApiError) as missing:
            await harness.client.get_machine_sessions("M404")
        assert missing.value.kind is ErrorKind.NOT_FOUND
        with pytest.raises(SetupRejectedError, match="base_url"):
            _ = [page async for page in harness.client.machines()]


class TestAuth:
    @bounded
    async def test_401_renews_once(self, harness: Harness) -> None:
        """A 401 renews the token and sends again, without counting a failed attempt."""

        harness.on(sessions("M1"), answer(401, ERROR_BODIES["unauthenticated"]), answer(200, OK))
        result = await harness.client.get_machine_sessions("M1")
        assert result.attempts == 1
        assert harness.auth.renewals == 1
        tokens = [h["Authorization"] for h in harness.headers(sessions("M1"))]
        assert tokens == ["CwsAuth Bearer=tok-0", "CwsAuth Bearer=tok-1"]
        assert harness.stats.retries == 0

    @bounded
    async def test_second_401_is_fatal(self, harness: Harness) -> None:
        """A 401 right after a renewal is an AuthError."""

        harness.on(sessions("M1"), answer(401))
        with pytest.raises(AuthError, match="401 twice"):
            await harness.client.get_machine_sessions("M1")
        assert harness.auth.renewals == 1
        assert len(harness.sent(sessions("M1"))) == 2

    @bounded
    async def test_bearer_401_is_fatal(self, harness: Harness) -> None:
        """A static token refused says which variable to refresh."""

        harness.client.auth = BearerAuth("static", "MY_BEARER")
        harness.on(sessions("M1"), answer(401))
        with pytest.raises(AuthError, match="MY_BEARER"):
            await harness.client.get_machine_sessions("M1")


class TestPages:
    @bounded
    async def test_follows_continuation_tokens(self, harness: Harness) -> None:
        """Pages are fetched with limit=1000 until the token is absent, null or empty."""

        path = "/cvad/manage/Machines?limit=1000"
        harness.on(path, answer(200, {"Items": [{"Id": 1}], "ContinuationToken": "a/b+"}))
        harness.on(
            path + "&continuationToken=a%2Fb%2B",
            answer(200, {"Items": [{"Id": 2}], "ContinuationToken": "c"}),
        )
        harness.on(
            path + "&continuationToken=c",
            answer(200, {"Items": [{"Id": 3}], "ContinuationToken": None}),
        )
        pages = [page async for page in harness.client.machines()]
        assert pages == [[{"Id": 1}], [{"Id": 2}], [{"Id": 3}]]

    @bounded
    async def test_repeated_token_stops(self, harness: Harness) -> None:
        """A server that hands back a token twice cannot loop the client forever."""

        path = "/cvad/manage/Sessions?limit=1000"
        harness.on(path, answer(200, {"Items": [], "ContinuationToken": "x"}))
        harness.on(
            path + "&continuationToken=x", answer(200, {"Items": [], "ContinuationToken": "y"})
        )
        harness.on(
            path + "&continuationToken=y", answer(200, {"Items": [], "ContinuationToken": "x"})
        )
        with pytest.raises(ApiError, match="repeated"):
            _ = [p async for p in harness.client.site_sessions()]


class TestMachinePages:
    @bounded
    async def test_every_page_of_a_machine(self, harness: Harness) -> None:
        """A machine's paged answer is followed to its last page; each page is a request."""

        harness.on(sessions("M1"), answer(200, {"Items": [{"Id": "a"}], "ContinuationToken": "t1"}))
        harness.on(
            sessions("M1", "continuationToken=t1"),
            answer(200, {"Items": [{"Id": "b"}], "ContinuationToken": "t2"}),
        )
        harness.on(sessions("M1", "continuationToken=t2"), answer(200, {"Items": [{"Id": "c"}]}))
        result = await harness.client.get_machine_sessions("M1")
        assert [item["Id"] for item in result.items] == ["a", "b", "c"]
        assert result.attempts == 3
        assert harness.stats.requests == 4  # /me and three pages

    @bounded
    async def test_repeated_machine_token_is_invalid_response(self, harness: Harness) -> None:
        """A machine whose pager repeats its token fails as invalid_response, not a loop."""

        page = {"Items": [{"Id": "a"}], "ContinuationToken": "same"}
        harness.on(sessions("M1"), answer(200, page))
        harness.on(sessions("M1", "continuationToken=same"), answer(200, page))
        with pytest.raises(ApiError) as caught:
            await harness.client.get_machine_sessions("M1")
        assert caught.value.kind is ErrorKind.INVALID_RESPONSE
        assert caught.value.transaction_id is not None
        assert len(harness.sent(sessions("M1", "continuationToken=same"))) == 1


class TestConcurrency:
    @bounded
    async def test_at_most_concurrency_in_flight(self, harness: Harness) -> None:
        """No more than `concurrency` exchanges reach the wire at once, however many callers."""

        async def slow(request: Request) -> Answer:
            await anyio.sleep(0.005)
            if request.url.endswith("/me"):
                return answer(200, ME)
            return answer(200, OK)

        harness.wire.handler = slow
        harness.pacer.controller = Controller(0, 3)
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(harness.client.get_machine_sessions, "M1")
        assert harness.wire.peak == 3
        assert harness.stats.requests == 21
