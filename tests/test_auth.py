"""Token providers against a scripted transport: caching, single flight, renewal, refusals."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
import pytest

from collector.auth import BearerAuth, ClientCredentialsAuth, OnPremAuth, renew_ahead
from collector.errors import ApiError, AuthError
from collector.models import ErrorKind, RunStats
from collector.protocol import Answer
from collector.retry import RetryPolicy, make_policy
from collector.transport import Request
from tests.conftest import load_fixture
from tests.fakes import FakeClock

TOKEN_URL = "https://api-us.cloud.com/cctrustoauth2/cust/tokens/clients"
SECRET = "s3cr3t&=+/"
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes | None


@dataclass
class ScriptedTransport:
    """Answers from a script (the last answer repeats); records every request."""

    script: list[Answer | ApiError]
    sent: list[Sent] = field(default_factory=list)
    gate: anyio.Event | None = None  # when set, each request waits for it

    async def send(self, request: Request) -> Answer:
        self.sent.append(Sent(request.method, request.url, dict(request.headers), request.data))
        if self.gate is not None:
            await self.gate.wait()
        step = self.script[min(len(self.sent), len(self.script)) - 1]
        if isinstance(step, ApiError):
            raise step
        return step


def answer(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Answer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Answer(status, dict(headers or {}), raw)


def token_answer(token: str, expires_in: Any = "3600") -> Answer:
    return answer(200, {"token_type": "bearer", "access_token": token, "expires_in": expires_in})


def Clock() -> FakeClock:
    return FakeClock(1000.0)


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def policy(recorder: Recorder, attempts: int = 4) -> RetryPolicy:
    return make_policy(
        max_attempts=attempts, max_backoff_s=10, sleep=recorder.sleep, rng=lambda: 1.0
    )


def client_credentials(
    transport: ScriptedTransport, clock: FakeClock | None = None, stats: RunStats | None = None
) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        TOKEN_URL,
        "my-client",
        SECRET,
        id_env="MY_ID",
        secret_env="MY_SECRET",
        transport=transport,
        retrying=policy(Recorder()),
        stats=stats or RunStats(),
        clock=clock or Clock(),
        wall=lambda: NOW,
    )


class TestClientCredentials:
    async def test_request_is_the_documented_form(self) -> None:
        """One form POST: exact Content-Type, Accept, grant type, id and encoded secret."""

        transport = ScriptedTransport([token_answer("t1")])
        stats = RunStats()
        auth = client_credentials(transport, stats=stats)
        assert await auth.token() == "t1"
        (sent,) = transport.sent
        assert (sent.method, sent.url) == ("POST", TOKEN_URL)
        assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert sent.headers["Accept"] == "application/json"
        assert sent.data == (
            b"grant_type=client_credentials&client_id=my-client&client_secret=s3cr3t%26%3D%2B%2F"
        )
        assert stats.token_requests == 1

    @pytest.mark.parametrize("expires_in", ["3600", 3600, 3600.0])
    async def test_cached_until_renewal_is_due(self, expires_in: Any) -> None:
        """The token is reused until less than min(lifetime/10, 300 s) is left."""

        clock = Clock()
        transport = ScriptedTransport([token_answer("t1", expires_in), token_answer("t2")])
        auth = client_credentials(transport, clock)
        assert await auth.token() == "t1"
        clock.t += 3600 - 300 - 1
        assert await auth.token() == "t1"
        clock.t += 2
        assert await auth.token() == "t2"
        assert len(transport.sent) == 2

    @pytest.mark.parametrize(("lifetime", "ahead"), [(3600, 300), (20, 2), (600, 60), (7200, 300)])
    def test_renew_ahead(self, lifetime: float, ahead: float) -> None:
        """A tenth of the lifetime, and at most five minutes, before it ends."""

        assert renew_ahead(lifetime) == ahead

    async def test_short_lifetime(self) -> None:
        """A 20 s token is renewed 2 s before it expires."""

        clock = Clock()
        transport = ScriptedTransport([token_answer("t1", "20"), token_answer("t2", "20")])
        auth = client_credentials(transport, clock)
        await auth.token()
        clock.t += 17.9
        assert await auth.token() == "t1"
        clock.t += 0.2
        assert await auth.token() == "t2"

    async def test_single_flight_on_empty_cache(self) -> None:
        """50 callers at once on an empty cache make exactly one token request."""

        gate = anyio.Event()
        transport = ScriptedTransport([token_answer("t1")], gate=gate)
        auth = client_credentials(transport)
        tokens: list[str] = []

        async def caller() -> None:
            tokens.append(await auth.token())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(caller)
                await anyio.wait_all_tasks_blocked()
                gate.set()
        assert tokens == ["t1"] * 50
        assert len(transport.sent) == 1

    async def test_single_flight_renewal(self) -> None:
        """50 callers renewing the same stale token make one request and share the new token."""

        transport = ScriptedTransport([token_answer("t1"), token_answer("t2")])
        auth = client_credentials(transport)
        stale = await auth.token()
        transport.gate = anyio.Event()
        tokens: list[str] = []

        async def caller() -> None:
            tokens.append(await auth.renew(stale))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(caller)
                await anyio.wait_all_tasks_blocked()
                transport.gate.set()
        assert tokens == ["t2"] * 50
        assert len(transport.sent) == 2
        assert await auth.renew("t0-older") == "t2"  # already renewed since: no call
        assert len(transport.sent) == 2

    async def test_renew_does_not_hand_back_a_due_token(self) -> None:
        """After a 401, a token renewed by someone else is reused only while it is fresh."""

        clock = Clock()
        transport = ScriptedTransport(
            [token_answer("t1", "20"), token_answer("t2", "20"), token_answer("t3", "20")]
        )
        auth = client_credentials(transport, clock)
        stale = await auth.token()
        assert await auth.renew(stale) == "t2"
        clock.t += 19  # t2 is due for renewal: handing it back would get another 401
        assert await auth.renew(stale) == "t3"
        assert len(transport.sent) == 3

    @pytest.mark.parametrize("status", [400, 401])
    async def test_invalid_client_names_the_variables(self, status: int) -> None:
        """invalid_client stops at once, naming the variables to check and never the secret."""

        body = load_fixture("error-bodies.json")["token_invalid_client"]
        transport = ScriptedTransport([answer(status, body, {"Citrix-TransactionId": "tx-9"})])
        with pytest.raises(AuthError) as caught:
            await client_credentials(transport).token()
        message = str(caught.value)
        assert "MY_ID" in message
        assert "MY_SECRET" in message
        assert "invalid_client" in message
        assert "tx-9" in message
        assert SECRET not in message
        assert len(transport.sent) == 1

    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param(answer(429, {"detail": "slow"}, {"Retry-After": "2"}), id="429"),
            pytest.param(answer(503, b"<html>down</html>"), id="503"),
            pytest.param(answer(200, b'{"access_token": "t'), id="truncated-json"),
            pytest.param(
                ApiError("reset", kind=ErrorKind.NETWORK, retryable=True), id="connection-reset"
            ),
        ],
    )
    async def test_transient_failures_are_retried(self, failure: Answer | ApiError) -> None:
        """429, 5xx, bad JSON and network errors on the token endpoint are retried."""

        transport = ScriptedTransport([failure, token_answer("t1")])
        assert await client_credentials(transport).token() == "t1"
        assert len(transport.sent) == 2

    async def test_gives_up_after_max_attempts(self) -> None:
        """A token endpoint that keeps failing ends in AuthError after the policy's attempts."""

        transport = ScriptedTransport([answer(503, b"")])
        with pytest.raises(AuthError, match="no token could be obtained"):
            await client_credentials(transport).token()
        assert len(transport.sent) == 4

    async def test_wrong_endpoint(self) -> None:
        """A 404 from the token endpoint points at its address, not at the secret."""

        transport = ScriptedTransport([answer(404, b"not here")])
        with pytest.raises(AuthError, match="token_url"):
            await client_credentials(transport).token()
        assert len(transport.sent) == 1

    async def test_answer_without_token(self) -> None:
        """A 200 without access_token is refused."""

        transport = ScriptedTransport([answer(200, {"expires_in": "3600"})])
        with pytest.raises(AuthError, match="access_token"):
            await client_credentials(transport).token()

    async def test_missing_lifetime_falls_back(self) -> None:
        """An answer without a usable expires_in still gives a token (an hour assumed)."""

        transport = ScriptedTransport([token_answer("t1", None)])
        assert await client_credentials(transport).token() == "t1"


class TestBearer:
    async def test_static(self) -> None:
        """The environment's token is used as is; it cannot be renewed."""

        auth = BearerAuth("tok", "MY_BEARER")
        assert await auth.token() == "tok"
        assert auth.renewable is False
        with pytest.raises(AuthError) as caught:
            await auth.renew("tok")
        assert "MY_BEARER" in str(caught.value)
        assert "expired" in str(caught.value)
        assert "tok" not in str(caught.value).replace("token", "")


class TestOnPrem:
    def make(self, transport: ScriptedTransport, clock: FakeClock) -> OnPremAuth:
        return OnPremAuth(
            "https://ddc.corp.local",
            "CORP\\admin",
            "pa:ss",
            user_env="MY_USER",
            password_env="MY_PASSWORD",
            transport=transport,
            retrying=policy(Recorder()),
            stats=RunStats(),
            clock=clock,
            wall=lambda: NOW,
        )

    async def test_basic_credentials_and_expiry(self) -> None:
        """POST /cvad/manage/Tokens with Basic; the Token is renewed before ExpiresAt."""

        clock = Clock()
        transport = ScriptedTransport(
            [
                answer(200, {"Token": "on-1", "ExpiresAt": "2026-11-29T12:20:00Z"}),
                answer(200, {"Token": "on-2", "ExpiresAt": "2026-11-29T13:00:00Z"}),
            ]
        )
        auth = self.make(transport, clock)
        assert await auth.token() == "on-1"
        sent = transport.sent[0]
        assert (sent.method, sent.url) == ("POST", "https://ddc.corp.local/cvad/manage/Tokens")
        expected = base64.b64encode(b"CORP\\admin:pa:ss").decode()
        assert sent.headers["Authorization"] == f"Basic {expected}"
        assert sent.headers["Accept"] == "application/json"
        clock.t += 1200 - 120 - 1  # a 20-minute token is renewed 2 minutes ahead
        assert await auth.token() == "on-1"
        clock.t += 2
        assert await auth.token() == "on-2"

    async def test_refused(self) -> None:
        """A 401 names the user and password variables, never the password."""

        transport = ScriptedTransport([answer(401, {"message": "Unauthorized"})])
        with pytest.raises(AuthError) as caught:
            await self.make(transport, Clock()).token()
        message = str(caught.value)
        assert "MY_USER" in message
        assert "MY_PASSWORD" in message
        assert "pa:ss" not in message
