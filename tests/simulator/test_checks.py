"""The checks the real service makes on every /cvad/manage call, and the tokens behind them."""

from __future__ import annotations

import asyncio
import base64
import uuid

import aiohttp
import pytest

from collector.simulator import Simulator, SimulatorConfig, serve
from tests.conftest import load_fixture
from tests.simulator.conftest import api_headers, fetch_token, get, sessions_path, url

ERRORS = load_fixture("error-bodies.json")


def data_path(sim: Simulator) -> str:
    return sessions_path(sim.site.machine_id(0))


@pytest.mark.parametrize(
    "accept",
    [
        pytest.param(None, id="missing"),
        pytest.param("*/*", id="any"),
        pytest.param("application/json; charset=utf-8", id="charset"),
        pytest.param("application/json, text/plain", id="list"),
        pytest.param("text/html", id="html"),
    ],
)
async def test_accept_must_be_exactly_json(
    client: aiohttp.ClientSession, sim: Simulator, token: str, accept: str | None
) -> None:
    """Anything but `Accept: application/json` gets the documented 406 body."""
    status, body, _ = await get(client, sim, data_path(sim), api_headers(sim, token, Accept=accept))

    assert status == 406
    assert body == ERRORS["not_acceptable"]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("CwsAuth Bearer={t}", id="documented"),
        pytest.param("CWSAuth bearer={t}", id="go-client"),
        pytest.param("cwsauth BEARER={t}", id="any-case"),
        pytest.param("CWSAuth  Bearer={t}", id="two-spaces"),
    ],
)
async def test_the_auth_scheme_is_case_insensitive(
    client: aiohttp.ClientSession, sim: Simulator, token: str, authorization: str
) -> None:
    """Each spelling of the CWSAuth scheme in Citrix's docs is accepted."""
    headers = api_headers(sim, token, Authorization=authorization.format(t=token))

    assert (await get(client, sim, data_path(sim), headers))[0] == 200


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        pytest.param(None, "missing", id="missing"),
        pytest.param("Bearer {t}", "invalid", id="plain-bearer"),
        pytest.param("CwsAuth Bearer = {t}", "invalid", id="spaces-around-equals"),
        pytest.param("CwsAuth Bearer=", "invalid", id="empty-token"),
        pytest.param("CwsAuth Bearer=not-a-token", "invalid", id="unknown-token"),
        pytest.param("CwsAuth {t}", "invalid", id="no-bearer"),
    ],
)
async def test_a_missing_or_malformed_token_gets_401(
    client: aiohttp.ClientSession,
    sim: Simulator,
    token: str,
    authorization: str | None,
    reason: str,
) -> None:
    """A missing, malformed or unknown token gets 401 common/authentication with its reason."""
    value = None if authorization is None else authorization.format(t=token)
    status, body, _ = await get(
        client, sim, data_path(sim), api_headers(sim, token, Authorization=value)
    )

    assert status == 401
    assert body["type"] == ERRORS["unauthenticated"]["type"]
    assert body["parameters"] == [{"name": "reason", "value": reason}]
    assert sim.counters.unauthorized == 1


@pytest.mark.parametrize(
    "customer",
    [pytest.param(None, id="missing"), pytest.param("someone-else", id="wrong")],
)
async def test_without_the_customer_id_the_gateway_answers_500(
    client: aiohttp.ClientSession, sim: Simulator, token: str, customer: str | None
) -> None:
    """No (or a wrong) Citrix-CustomerId gets the gateway's activityId-shaped 500."""
    headers = api_headers(sim, token, Citrix_CustomerId=customer)
    status, body, _ = await get(client, sim, data_path(sim), headers)

    assert status == 500
    assert set(body) == set(ERRORS["missing_customer_500"])
    assert body["statusCode"] == 500


@pytest.mark.parametrize(
    "instance",
    [pytest.param(None, id="missing"), pytest.param(str(uuid.uuid4()), id="another-site")],
)
async def test_data_calls_need_the_site_id(
    client: aiohttp.ClientSession, sim: Simulator, token: str, instance: str | None
) -> None:
    """Without the site's Citrix-InstanceId a data call gets 400."""
    headers = api_headers(sim, token, Citrix_InstanceId=instance)
    status, body, _ = await get(client, sim, data_path(sim), headers)

    assert status == 400
    assert body["type"].startswith("https://errors-api.cloud.com/common/")


async def test_the_site_id_matches_in_any_case(
    client: aiohttp.ClientSession, sim: Simulator, token: str
) -> None:
    """A GUID is a GUID in upper case too."""
    headers = api_headers(sim, token, Citrix_InstanceId=sim.site_id.upper())

    assert (await get(client, sim, data_path(sim), headers))[0] == 200


@pytest.mark.parametrize("path", ["/cvad/manage/me", "/cvad/manage/Me", "/CVAD/Manage/ME/"])
async def test_me_gives_the_site_id_without_an_instance_header(
    client: aiohttp.ClientSession, sim: Simulator, token: str, path: str
) -> None:
    """/me needs no Citrix-InstanceId, matches in any case, and names the site."""
    headers = api_headers(sim, token, Citrix_InstanceId=None)
    status, body, _ = await get(client, sim, path, headers)

    assert status == 200
    assert body["Customers"][0]["Id"] == sim.customer_id
    assert body["Customers"][0]["Sites"][0]["Id"] == sim.site_id
    assert {"UserId", "DisplayName", "ExpiryTime", "IsCspCustomer"} <= set(body)


async def test_me_still_checks_the_token(client: aiohttp.ClientSession, sim: Simulator) -> None:
    """/me without a token gets 401."""
    headers = api_headers(sim, "", Authorization=None)

    assert (await get(client, sim, "/cvad/manage/me", headers))[0] == 401


async def test_the_transaction_id_is_echoed_or_made(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """A given Citrix-TransactionId comes back; without one the server makes a fresh GUID."""
    mine = str(uuid.uuid4())
    _, _, echoed = await get(client, sim, data_path(sim), {**headers, "Citrix-TransactionId": mine})
    _, _, made = await get(client, sim, data_path(sim), headers)

    assert echoed["Citrix-TransactionId"] == mine
    assert uuid.UUID(made["Citrix-TransactionId"]).version == 4
    assert made["Content-Type"] == "application/json; charset=utf-8"


class TestTokens:
    @pytest.mark.parametrize("customer", ["demo-customer", "root"])
    async def test_client_credentials_give_a_bearer_token(
        self, client: aiohttp.ClientSession, sim: Simulator, customer: str
    ) -> None:
        """The token endpoint takes the customer id or `root`; expires_in is a string."""
        form = {
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        }
        path = f"/cctrustoauth2/{customer}/tokens/clients"
        async with client.post(url(sim, path), data=form) as response:
            body = await response.json()

        assert response.status == 200
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == "3600"
        assert sim.counters.tokens_issued == 1
        assert sim.counters.requests["token"] == 1

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"client_secret": "wrong"}, id="secret"),
            pytest.param({"client_id": "wrong"}, id="client-id"),
            pytest.param({"grant_type": "password"}, id="grant"),
            pytest.param({"client_secret": None}, id="no-secret"),
        ],
    )
    async def test_bad_credentials_get_invalid_client(
        self, client: aiohttp.ClientSession, sim: Simulator, change: dict[str, str | None]
    ) -> None:
        """Wrong credentials or grant get 400 invalid_client and no token."""
        form = {
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            **change,
        }
        sent = {k: v for k, v in form.items() if v is not None}
        async with client.post(sim.token_url, data=sent) as response:
            body = await response.json()

        assert response.status == 400
        assert body == ERRORS["token_invalid_client"]
        assert sim.counters.tokens_issued == 0

    async def test_tokens_expire(self, client: aiohttp.ClientSession) -> None:
        """A token past its lifetime gets 401; expires_in says the (rounded) lifetime."""
        async with serve(SimulatorConfig(machines=5, token_lifetime_s=0.3)) as sim:
            token = await fetch_token(client, sim)
            path = data_path(sim)
            assert (await get(client, sim, path, api_headers(sim, token)))[0] == 200
            await asyncio.sleep(0.4)
            status, body, _ = await get(client, sim, path, api_headers(sim, token))

        assert status == 401
        assert body == ERRORS["unauthenticated"]

    async def test_revoked_tokens_get_401_and_new_ones_work(
        self, client: aiohttp.ClientSession, sim: Simulator, token: str
    ) -> None:
        """After revoke_tokens the old token gets 401; a fresh one is accepted."""
        sim.revoke_tokens()
        status, _, _ = await get(client, sim, data_path(sim), api_headers(sim, token))
        fresh = await fetch_token(client, sim)

        assert status == 401
        assert (await get(client, sim, data_path(sim), api_headers(sim, fresh)))[0] == 200

    async def test_the_token_lifetime_can_change_at_runtime(
        self, client: aiohttp.ClientSession, sim: Simulator
    ) -> None:
        """Tokens issued after the knob changes carry the new lifetime."""
        sim.faults.token_lifetime_s = 7
        async with client.post(
            sim.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            },
        ) as response:
            assert (await response.json())["expires_in"] == "7"


class TestOnPremises:
    def basic(self, user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def test_basic_credentials_give_a_token_for_citrix_on_premises(
        self, client: aiohttp.ClientSession, sim: Simulator
    ) -> None:
        """POST /cvad/manage/Tokens with Basic DOMAIN\\user:password gives a usable token."""
        headers = {
            "Accept": "application/json",
            "Authorization": self.basic(sim.onprem_username, sim.onprem_password),
        }
        async with client.post(url(sim, "/cvad/manage/Tokens"), headers=headers) as response:
            body = await response.json()
        data = api_headers(sim, body["Token"], Citrix_CustomerId="CitrixOnPremises")

        assert response.status == 200
        assert body["CustomerId"] == "CitrixOnPremises"
        assert body["Principal"] == sim.onprem_username
        assert body["ExpiresAt"].endswith("Z")
        assert (await get(client, sim, data_path(sim), data))[0] == 200
        assert (await get(client, sim, data_path(sim), api_headers(sim, body["Token"])))[0] == 500

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param(None, id="missing"),
            pytest.param("wrong-password", id="wrong-password"),
            pytest.param("Basic not-base64!", id="garbage"),
        ],
    )
    async def test_wrong_credentials_get_401(
        self, client: aiohttp.ClientSession, sim: Simulator, authorization: str | None
    ) -> None:
        """Wrong or missing Basic credentials get 401."""
        headers = {"Accept": "application/json"}
        if authorization == "wrong-password":
            headers["Authorization"] = self.basic(sim.onprem_username, "nope")
        elif authorization is not None:
            headers["Authorization"] = authorization
        async with client.post(url(sim, "/cvad/manage/Tokens"), headers=headers) as response:
            assert response.status == 401
