"""Every answer of every endpoint is Citrix's model exactly, for both shapes and two seeds."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from collector.simulator import Faults, Simulator, SimulatorConfig, Site, mean_record_size, serve
from collector.simulator.faults import throttled
from collector.simulator.shapes import Shape
from tests.conftest import load_fixture
from tests.simulator.conftest import api_headers, fetch_token, get, sessions_path
from tests.simulator.schema import (
    DecodeError,
    model_properties,
    schema,
    strict_decode,
    validator,
    violations,
)

MACHINES = 30
SHAPES: tuple[Shape, ...] = ("sparse", "full")
SEEDS = (7, 2026)
ERROR = "ErrorResponse"


def assert_model(model: str, body: Any) -> None:
    """`body` validates against `model` and decodes strictly into it."""
    problems = violations(model, body)
    assert not problems, "\n".join(problems[:10])
    strict_decode(model, body)


@pytest.fixture(params=[(shape, seed) for shape in SHAPES for seed in SEEDS], ids=str)
async def site_sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    shape, seed = request.param
    async with serve(SimulatorConfig(machines=MACHINES, seed=seed, shape=shape)) as running:
        yield running


@pytest.fixture
async def site_headers(client: aiohttp.ClientSession, site_sim: Simulator) -> dict[str, str]:
    return api_headers(site_sim, await fetch_token(client, site_sim))


async def pages(
    client: aiohttp.ClientSession, sim: Simulator, path: str, headers: dict[str, str]
) -> list[Any]:
    """Every page body of a paged listing, following ContinuationToken (at most 100 pages)."""
    bodies: list[Any] = []
    token = None
    for _ in range(100):
        joiner = "&" if "?" in path else "?"
        status, body, _ = await get(
            client, sim, path + (f"{joiner}continuationToken={token}" if token else ""), headers
        )
        assert status == 200, body
        bodies.append(body)
        token = body.get("ContinuationToken")
        if not token:
            return bodies
    raise AssertionError(f"{path} did not end within 100 pages")


class TestAnswers:
    async def test_machine_sessions(
        self, client: aiohttp.ClientSession, site_sim: Simulator, site_headers: dict[str, str]
    ) -> None:
        """Every machine's sessions answer is a SessionResponseModelCollection."""
        for index in range(MACHINES):
            path = sessions_path(site_sim.site.machine_id(index))
            status, body, _ = await get(client, site_sim, path, site_headers)
            assert status == 200
            assert_model("SessionResponseModelCollection", body)

    async def test_paged_machine_sessions(
        self, client: aiohttp.ClientSession, site_sim: Simulator, site_headers: dict[str, str]
    ) -> None:
        """With --session-page, every page of every machine is a SessionResponseModelCollection."""
        site_sim.faults.session_page = 2
        for index in range(MACHINES):
            path = sessions_path(site_sim.site.machine_id(index))
            for body in await pages(client, site_sim, path, site_headers):
                assert_model("SessionResponseModelCollection", body)

    async def test_site_sessions(
        self, client: aiohttp.ClientSession, site_sim: Simulator, site_headers: dict[str, str]
    ) -> None:
        """Every page of /Sessions is a SessionResponseModelCollection."""
        bodies = await pages(client, site_sim, "/cvad/manage/Sessions?limit=40", site_headers)

        assert len(bodies) > 1
        for body in bodies:
            assert_model("SessionResponseModelCollection", body)

    @pytest.mark.parametrize(
        "listing",
        [
            pytest.param("/cvad/manage/Machines?limit=9", id="all"),
            pytest.param("/cvad/manage/Machines?sessionSupport=MultiSession", id="multi"),
            pytest.param("group", id="delivery-group"),
            pytest.param("catalog", id="catalog"),
        ],
    )
    async def test_machine_listings(
        self,
        client: aiohttp.ClientSession,
        site_sim: Simulator,
        site_headers: dict[str, str],
        listing: str,
    ) -> None:
        """Every page of every machine listing is a MachineResponseModelCollection."""
        site = site_sim.site
        if listing == "group":
            listing = f"/cvad/manage/DeliveryGroups/{site.groups[0]['Id']}/Machines?limit=5"
        elif listing == "catalog":
            listing = f"/cvad/manage/MachineCatalogs/{site.catalogs[0].ref['Id']}/Machines"
        for body in await pages(client, site_sim, listing, site_headers):
            assert_model("MachineResponseModelCollection", body)

    async def test_projected_answers(
        self, client: aiohttp.ClientSession, site_sim: Simulator, site_headers: dict[str, str]
    ) -> None:
        """Answers cut down by fields= are still the model (every property is optional)."""
        index = next(i for i in range(MACHINES) if site_sim.site.sessions(i))
        path = sessions_path(site_sim.site.machine_id(index)) + "?fields=Id,Machine,User"
        _, machine, _ = await get(client, site_sim, path, site_headers)
        _, site, _ = await get(client, site_sim, "/cvad/manage/Sessions?fields=Id", site_headers)

        assert_model("SessionResponseModelCollection", machine)
        assert_model("SessionResponseModelCollection", site)

    async def test_me(
        self, client: aiohttp.ClientSession, site_sim: Simulator, site_headers: dict[str, str]
    ) -> None:
        """/me is a MeResponseModel."""
        status, body, _ = await get(client, site_sim, "/cvad/manage/me", site_headers)

        assert status == 200
        assert_model("MeResponseModel", body)

    async def test_tokens(self, client: aiohttp.ClientSession, site_sim: Simulator) -> None:
        """The two token endpoints answer exactly their documented properties (no schema model)."""
        form = {"grant_type": "client_credentials", "client_id": site_sim.client_id,
                "client_secret": site_sim.client_secret}  # fmt: skip
        async with client.post(site_sim.token_url, data=form) as response:
            cloud = await response.json()
        basic = f"{site_sim.onprem_username}:{site_sim.onprem_password}".encode()
        onprem_headers = {"Accept": "application/json",
                          "Authorization": "Basic " + base64.b64encode(basic).decode()}  # fmt: skip
        async with client.post(site_sim.onprem_token_url, headers=onprem_headers) as response:
            onprem = await response.json()

        assert set(cloud) == {"token_type", "access_token", "expires_in"}
        assert isinstance(cloud["expires_in"], str)
        assert set(onprem) == {"Token", "Principal", "UserId", "CustomerId", "ExpiresAt"}


class TestErrorBodies:
    """Every error the simulator answers in the `{type, detail, parameters}` shape is an
    ErrorResponse. Left out on purpose, as the other shapes real answers come in (citrix-api.md
    5.1): the 406 and half the 503s (`parameters` an object), the 500s (`activityId` or
    `ErrorMessage`), the 502 (HTML), the 504 (text) and the token endpoint's `invalid_client`.
    """

    @pytest.mark.parametrize(
        ("path", "changes", "status"),
        [
            pytest.param("/cvad/manage/Machines/CONTOSO%7CGHOST/Sessions", {}, 404, id="404"),
            pytest.param("/cvad/manage/Nothing", {}, 404, id="404-resource"),
            pytest.param("/cvad/manage/Machines", {"Authorization": None}, 401, id="401"),
            pytest.param("/cvad/manage/Machines", {"Citrix-InstanceId": None}, 400, id="400-site"),
            pytest.param("/cvad/manage/Machines?limit=0", {}, 400, id="400-limit"),
            pytest.param("/cvad/manage/Sessions?continuationToken=x", {}, 400, id="400-token"),
            pytest.param("/cvad/manage/Machines?sessionSupport=x", {}, 400, id="400-enum"),
        ],
    )
    async def test_gate_and_endpoint_errors(
        self,
        client: aiohttp.ClientSession,
        site_sim: Simulator,
        site_headers: dict[str, str],
        path: str,
        changes: dict[str, str | None],
        status: int,
    ) -> None:
        """404s, 401s and 400s of the gate and the endpoints are ErrorResponses."""
        headers = {k: v for k, v in site_headers.items() if k not in changes}
        got, body, _ = await get(client, site_sim, path, headers)

        assert got == status
        assert_model(ERROR, body)

    @pytest.mark.parametrize(
        "faults",
        [
            pytest.param(Faults(forbid_all=True), id="403"),
            pytest.param(Faults(rate_limit=0.001, rate_burst=1.0), id="429-rate"),
            pytest.param(Faults(p_429=1.0), id="429-random"),
            pytest.param(Faults(deny={"sessions": 406}), id="deny-406"),
            pytest.param(Faults(deny={"sessions": 503}), id="deny-503"),
            pytest.param(Faults(session_page=1), id="400-page-token"),
        ],
    )
    async def test_fault_errors(
        self, client: aiohttp.ClientSession, site_sim: Simulator, faults: Faults
    ) -> None:
        """Forbidden, throttled, denied and bad-page answers are ErrorResponses."""
        headers = api_headers(site_sim, await fetch_token(client, site_sim))
        site_sim.faults = faults
        path = sessions_path(site_sim.site.machine_id(0))
        if faults.session_page:
            path += "?continuationToken=bogus"
        answers = [await get(client, site_sim, path, headers) for _ in range(2)]

        errors = [body for status, body, _ in answers if status >= 400]
        assert errors
        for body in errors:
            assert_model(ERROR, body)

    @pytest.mark.parametrize("status", [401, 403, 404, 406, 429, 500, 503])
    async def test_denials(
        self, client: aiohttp.ClientSession, site_sim: Simulator, status: int
    ) -> None:
        """Whatever status a denied endpoint answers, its body is an ErrorResponse."""
        headers = api_headers(site_sim, await fetch_token(client, site_sim))
        site_sim.faults.deny = {"machines": status}
        got, body, _ = await get(client, site_sim, "/cvad/manage/Machines", headers)

        assert got == status
        assert_model(ERROR, body)

    async def test_in_flight_429(self) -> None:
        """The 429 of --max-in-flight is an ErrorResponse (checked on its Reply)."""
        assert_model(ERROR, orjson.loads(throttled(1, False).body))


class TestTheCheckItself:
    """The validator and the strict decode refuse what the SDK would refuse."""

    def session(self) -> dict[str, Any]:
        example: dict[str, Any] = load_fixture("machine-sessions-response.json")["Items"][0]
        return example

    def test_the_documented_example_passes(self) -> None:
        """The documented answer for one session validates and decodes."""
        assert_model("SessionResponseModelCollection", {"Items": [self.session()]})

    @pytest.mark.parametrize(
        "spoil",
        [
            pytest.param(lambda s: s.update(IsPhysical=False), id="unknown-top-level"),
            pytest.param(lambda s: s["Machine"].update(IsPhysical=False), id="unknown-nested"),
            pytest.param(lambda s: s["User"].update(Upn="x"), id="unknown-in-user"),
            pytest.param(
                lambda s: s["Machine"].update(LastConnectionUser="CONTOSO\\jdoe"),
                id="user-as-string",
            ),
            pytest.param(
                lambda s: s["Machine"].update(LastConnectionFailure="NotLicensed"), id="bad-enum"
            ),
            pytest.param(lambda s: s["User"].pop("PropertiesFetched"), id="missing-required"),
            pytest.param(lambda s: s.update(Uid="34230"), id="wrong-type"),
            pytest.param(lambda s: s.update(IsHidden=0), id="int-for-bool"),
            pytest.param(lambda s: s.update(Uid=True), id="bool-for-int"),
        ],
    )
    def test_a_spoiled_session_fails_both(self, spoil: Any) -> None:
        """A field the model lacks, a bad enum, a missing required field or a wrong type fail."""
        session = self.session()
        spoil(session)
        body = {"Items": [session]}

        assert violations("SessionResponseModelCollection", body)
        with pytest.raises(DecodeError):
            strict_decode("SessionResponseModelCollection", body)

    def test_additional_properties_are_refused_everywhere(self) -> None:
        """Every model of the schema says additionalProperties: false, and the validator uses it."""
        for model in ("SessionResponseModel", "MachineResponseModel", "ErrorResponse"):
            assert not validator(model).is_valid({"NotAProperty": 1} | required_of(model))


def required_of(model: str) -> dict[str, Any]:
    """A minimal value of each required property of `model` (strings only are needed here)."""
    return dict.fromkeys(schema()["$defs"][model].get("required", []), "x")


class TestShapes:
    def test_full_carries_every_property(self) -> None:
        """In the full shape every session, Machine and User has every property of its model."""
        site = Site(seed=3, machines=120, shape="full")
        sessions = [s for i in range(120) for s in site.sessions(i)]

        for session in sessions:
            assert set(session) == model_properties("SessionResponseModel")
            assert set(session["Machine"]) == model_properties("MachineResponseModel")
            assert set(session["User"]) == model_properties("IdentityUserResponseModel")
        users = [site.machine(i)["LastConnectionUser"] for i in range(120)]
        assert any(u is None for u in users)
        assert any(u and set(u) == model_properties("IdentityUserResponseModel") for u in users)

    def test_sparse_leaves_optional_properties_out(self) -> None:
        """A sparse session lacks most optional properties and carries a small Machine."""
        site = Site(seed=3, machines=120)
        session = next(s for i in range(120) for s in site.sessions(i))

        assert len(session) < len(model_properties("SessionResponseModel"))
        assert len(session["Machine"]) <= 8
        assert {"Id", "Name", "DnsName"} <= set(session["Machine"])
        assert "FormattedStartTime" not in session

    @pytest.mark.parametrize("seed", SEEDS)
    def test_record_sizes(self, seed: int) -> None:
        """Sparse sessions average 1.2 to 2.4 KB, about the documented example; full ones more."""
        sparse = mean_record_size("sparse", seed)
        full = mean_record_size("full", seed)

        assert 1200 <= sparse <= 2400
        assert full > 2 * sparse

    def test_variety_is_kept(self) -> None:
        """Both shapes have nulls, empty arrays, machines of 0 and 1 session and busy ones."""
        for shape in SHAPES:
            site = Site(seed=5, machines=400, shape=shape)
            counts = [len(site.sessions(i)) for i in range(400)]
            sessions = [s for i in range(400) for s in site.sessions(i)]
            assert {0, 1} <= set(counts)
            assert max(counts) >= 12
            assert any(s["ApplicationsInUse"] == [] for s in sessions)
            assert any(s["Connection"]["ConnectedViaHostName"] is None for s in sessions)
