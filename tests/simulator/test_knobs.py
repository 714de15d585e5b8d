"""The knobs other tests lean on: calls in flight, paged machine answers, denied endpoints."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from collector.simulator import Faults, Simulator, SimulatorConfig, parse_deny, serve
from tests.simulator.conftest import api_headers, fetch_token, get, sessions_path, url

LATENCY_MS = 400.0  # long enough that a whole burst is in flight at once, even on a busy box


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


def busy_machine(sim: Simulator, at_least: int) -> int:
    """The index of a machine with at least `at_least` sessions."""
    return next(i for i in range(len(sim.site)) if len(sim.site.sessions(i)) >= at_least)


async def follow(
    client: aiohttp.ClientSession, sim: Simulator, path: str, headers: dict[str, str]
) -> tuple[list[dict[str, object]], list[str | None]]:
    """Every item of a paged answer, and each page's token, following at most 100 pages."""
    items: list[dict[str, object]] = []
    tokens: list[str | None] = []
    token: str | None = None
    for _ in range(100):
        query = f"?continuationToken={token}" if token else ""
        status, body, _ = await get(client, sim, path + query, headers)
        assert status == 200, body
        items += body["Items"]
        token = body["ContinuationToken"]
        tokens.append(token)
        if not token or tokens.count(token) > 1:
            break
    return items, tokens


class TestSessionPage:
    async def test_pages_join_to_the_whole_list(self, client: aiohttp.ClientSession) -> None:
        """With --session-page 3 a machine's pages, followed, are exactly its sessions."""
        async with serve(SimulatorConfig(machines=60, seed=7, session_page=3)) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            index = busy_machine(sim, 8)
            path = sessions_path(sim.site.machine_id(index))
            items, tokens = await follow(client, sim, path, headers)

        expected = sim.site.sessions(index)
        assert [s["Id"] for s in items] == [s["Id"] for s in expected]
        assert len(tokens) == -(-len(expected) // 3)
        assert tokens[-1] is None
        assert sim.counters.sessions_served[index] == len(tokens)

    async def test_a_small_machine_is_one_page(self, client: aiohttp.ClientSession) -> None:
        """A machine with no more sessions than a page answers once, with a null token."""
        async with serve(SimulatorConfig(machines=60, seed=7, session_page=3)) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            index = next(i for i in range(60) if len(sim.site.sessions(i)) == 1)
            status, body, _ = await get(
                client, sim, sessions_path(sim.site.machine_id(index)), headers
            )

        assert status == 200
        assert body == {"Items": sim.site.sessions(index), "ContinuationToken": None}

    async def test_an_invalid_token_is_citrix_400(self, client: aiohttp.ClientSession) -> None:
        """A token the pager did not hand out, or one of another machine, gets Citrix's 400."""
        async with serve(SimulatorConfig(machines=60, seed=7, session_page=3)) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            index = busy_machine(sim, 4)
            other = busy_machine(sim, 4) if index else 0
            path = sessions_path(sim.site.machine_id(index))
            _, first, _ = await get(client, sim, path, headers)
            foreign = f"{sessions_path(sim.site.machine_id(other + 1))}"
            answers = [
                await get(client, sim, f"{path}?continuationToken=garbage", headers),
                await get(
                    client,
                    sim,
                    f"{foreign}?continuationToken={first['ContinuationToken']}",
                    headers,
                ),
            ]

        for status, body, _ in answers:
            assert status == 400
            assert body["type"] == "https://errors-api.cloud.com/common/invalidString"
            assert body["parameters"] == [{"name": "parameter", "value": "continuationToken"}]

    async def test_the_broken_pager_repeats_its_token(self, client: aiohttp.ClientSession) -> None:
        """With repeat_token, the second page hands back the token that asked for it."""
        config = SimulatorConfig(machines=60, seed=7, session_page=3, repeat_token=True)
        async with serve(config) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            path = sessions_path(sim.site.machine_id(busy_machine(sim, 8)))
            _, tokens = await follow(client, sim, path, headers)

        assert len(tokens) == 2
        assert tokens[0] is not None
        assert tokens[0] == tokens[1]

    async def test_fields_project_every_page(self, client: aiohttp.ClientSession) -> None:
        """fields= applies to each page of a paged machine, and the token still leads on."""
        async with serve(SimulatorConfig(machines=60, seed=7, session_page=3)) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            index = busy_machine(sim, 8)
            path = sessions_path(sim.site.machine_id(index)) + "?fields=Id,State"
            items: list[dict[str, object]] = []
            token = ""
            for _ in range(30):
                _, body, _ = await get(client, sim, path + token, headers)
                items += body["Items"]
                if not body["ContinuationToken"]:
                    break
                token = f"&continuationToken={body['ContinuationToken']}"

        expected = sim.site.sessions(index)
        assert items == [{"Id": s["Id"], "State": s["State"]} for s in expected]

    async def test_unpaged_answers_have_no_token(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
    ) -> None:
        """Without the knob a machine's answer is the documented `{"Items": [...]}` alone."""
        index = busy_machine(sim, 8)
        _, body, _ = await get(client, sim, sessions_path(sim.site.machine_id(index)), headers)

        assert list(body) == ["Items"]
        assert len(body["Items"]) == len(sim.site.sessions(index))


class TestDeny:
    @pytest.mark.parametrize(
        ("name", "path", "status", "kind"),
        [
            pytest.param("machines", "/cvad/manage/Machines", 403, "authorization", id="machines"),
            pytest.param("sessions", None, 406, "notAcceptable", id="sessions"),
            pytest.param("site-sessions", "/cvad/manage/Sessions", 403, "authorization", id="site"),
            pytest.param("me", "/cvad/manage/me", 401, "authentication", id="me"),
        ],
    )
    async def test_a_denied_endpoint_always_answers_its_status(
        self, client: aiohttp.ClientSession, name: str, path: str | None, status: int, kind: str
    ) -> None:
        """`deny` makes its endpoint answer that status in Citrix's error shape, every time."""
        async with serve(SimulatorConfig(machines=20, seed=3, deny={name: status})) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            path = path or sessions_path(sim.site.machine_id(0))
            answers = [await get(client, sim, path, headers) for _ in range(3)]
            denials = sim.counters.injected["denied"]
            other, _, _ = await get(client, sim, "/cvad/manage/Machines/x/Sessions", headers)

        for got, body, _ in answers:
            assert got == status
            assert body["type"] == f"https://errors-api.cloud.com/common/{kind}"
            assert isinstance(body["detail"], str)
        assert denials == 3
        assert other == (status if name == "sessions" else 404)

    async def test_delivery_group_and_catalog_listings_are_machines_too(
        self, client: aiohttp.ClientSession
    ) -> None:
        """Denying `machines` covers the delivery-group and catalog listings as well."""
        async with serve(SimulatorConfig(machines=20, seed=3, deny={"machines": 403})) as sim:
            headers = api_headers(sim, await fetch_token(client, sim))
            group = sim.site.groups[0]["Id"]
            catalog = sim.site.catalogs[0].ref["Id"]
            statuses = [
                (await get(client, sim, p, headers))[0]
                for p in (
                    f"/cvad/manage/DeliveryGroups/{group}/Machines",
                    f"/cvad/manage/MachineCatalogs/{catalog}/Machines",
                )
            ]

        assert statuses == [403, 403]

    async def test_a_denied_token_endpoint(self, client: aiohttp.ClientSession) -> None:
        """`deny={"token": 401}` refuses even the right credentials."""
        async with serve(SimulatorConfig(machines=20, seed=3, deny={"token": 401})) as sim:
            form = {
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            }
            async with client.post(sim.token_url, data=form) as response:
                body = await response.json()

        assert response.status == 401
        assert body["type"] == "https://errors-api.cloud.com/common/authentication"

    @pytest.mark.parametrize(
        ("items", "message"),
        [
            pytest.param(["nothing=403"], "unknown endpoint", id="name"),
            pytest.param(["machines"], "expected NAME=STATUS", id="no-status"),
            pytest.param(["machines=200"], "between 400 and 599", id="not-an-error"),
        ],
    )
    def test_unreadable_items_are_refused(self, items: list[str], message: str) -> None:
        """parse_deny names the item it cannot read and what it expected."""
        with pytest.raises(ValueError, match=message):
            parse_deny(items)

    def test_items_are_read(self) -> None:
        """`machines=403` and `Sessions=406` become a mapping of names to statuses."""
        assert parse_deny(["machines=403", "Sessions=406"]) == {"machines": 403, "sessions": 406}
