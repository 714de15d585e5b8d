"""The data endpoints: one machine's sessions by every name form, and the paginated lists."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from collector.simulator import Simulator, SimulatorConfig, serve
from tests.conftest import load_fixture
from tests.simulator.conftest import MACHINES, api_headers, fetch_token, get, sessions_path

INDEX = 17


def pipe(sim: Simulator, i: int) -> str:
    return sim.site.name(i).replace("\\", "|")


@pytest.mark.parametrize(
    "key_of",
    [
        pytest.param(lambda sim: sim.site.machine_id(INDEX), id="id"),
        pytest.param(lambda sim: sim.site.machine_id(INDEX).upper(), id="id-upper"),
        pytest.param(lambda sim: quote(pipe(sim, INDEX), safe=""), id="domain-%7C-name"),
        pytest.param(lambda sim: pipe(sim, INDEX), id="domain-pipe-name"),
        pytest.param(lambda sim: quote(pipe(sim, INDEX).lower(), safe=""), id="lower-case"),
        pytest.param(lambda sim: sim.site.dns_name(INDEX), id="dns"),
        pytest.param(lambda sim: sim.site.dns_name(INDEX).swapcase(), id="dns-mixed-case"),
    ],
)
async def test_every_name_form_reaches_the_machine(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], key_of: Any
) -> None:
    """Id, DOMAIN|NAME (raw or as %7C) and DNS name, in any case, answer the same sessions."""
    status, body, _ = await get(client, sim, sessions_path(key_of(sim)), headers)

    assert status == 200
    assert body == {"Items": sim.site.sessions(INDEX)}
    assert sim.counters.sessions_served == {INDEX: 1}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("CONTOSO%7CVDA-MS-999", id="unknown-name"),
        pytest.param("CONTOSO%5CVDA-MS-999", id="backslash"),
        pytest.param("8bd7c72f-1a4c-4e00-ae4f-bf2eb3448a11", id="unknown-id"),
    ],
)
async def test_an_unknown_machine_gets_citrix_404(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], key: str
) -> None:
    """An unknown machine gets the modern notFound body naming the key as given (decoded)."""
    status, body, response_headers = await get(client, sim, sessions_path(key), headers)
    expected = load_fixture("error-bodies.json")["not_found_modern"]
    expected["parameters"][1]["value"] = key.replace("%7C", "|").replace("%5C", "\\")

    assert status == 404
    assert body == expected
    assert "Citrix-TransactionId" in response_headers


async def test_a_backslash_name_is_not_special(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """DOMAIN%5CNAME of a real machine is not found: clients must send DOMAIN|NAME."""
    key = quote(sim.site.name(INDEX), safe="")

    assert (await get(client, sim, sessions_path(key), headers))[0] == 404


@pytest.mark.parametrize(
    ("fields", "keys"),
    [
        pytest.param("Id,State", {"Id", "State"}, id="two"),
        pytest.param("id,%20state", {"Id", "State"}, id="any-case-and-spaces"),
        pytest.param("Machine", {"Machine"}, id="nested-kept-whole"),
        pytest.param("Nope", set(), id="unknown-field"),
        pytest.param("Machine.Name", set(), id="nested-path-names-nothing"),
        pytest.param("Id,,", {"Id"}, id="empty-names-ignored"),
    ],
)
async def test_fields_keeps_only_the_named_top_level_keys(
    client: aiohttp.ClientSession,
    sim: Simulator,
    headers: dict[str, str],
    fields: str,
    keys: set[str],
) -> None:
    """`fields=` drops every top-level key it does not name."""
    index = next(i for i in range(MACHINES) if sim.site.sessions(i))
    path = sessions_path(sim.site.machine_id(index)) + f"?fields={fields}"
    status, body, _ = await get(client, sim, path, headers)

    assert status == 200
    assert [set(item) for item in body["Items"]] == [keys] * len(sim.site.sessions(index))


async def test_a_machine_without_sessions_has_empty_items(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """A machine with no session answers 200 {"Items": []}, with no ContinuationToken."""
    index = next(i for i in range(MACHINES) if not sim.site.sessions(i))
    status, body, _ = await get(client, sim, sessions_path(sim.site.machine_id(index)), headers)

    assert (status, body) == (200, {"Items": []})


async def collect_pages(
    client: aiohttp.ClientSession,
    sim: Simulator,
    headers: dict[str, str],
    path: str,
    token_param: str = "continuationToken",
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a paginated list, following ContinuationToken; and the number of pages."""
    items: list[dict[str, Any]] = []
    pages, token = 0, None
    while True:
        sep = "&" if "?" in path else "?"
        page_path = path + (f"{sep}{token_param}={quote(token, safe='')}" if token else "")
        status, body, _ = await get(client, sim, page_path, headers)
        assert status == 200, body
        assert set(body) == {"Items", "ContinuationToken"}
        items += body["Items"]
        pages += 1
        token = body["ContinuationToken"]
        if token is None:
            return items, pages


class TestMachineLists:
    @pytest.mark.parametrize(
        ("limit", "pages"),
        [
            pytest.param(7, 9, id="7"),
            pytest.param(60, 1, id="exact"),
            pytest.param(1000, 1, id="max"),
        ],
    )
    async def test_pages_hold_every_machine_once(
        self,
        client: aiohttp.ClientSession,
        sim: Simulator,
        headers: dict[str, str],
        limit: int,
        pages: int,
    ) -> None:
        """Following ContinuationToken yields each machine exactly once, in `limit`-sized pages."""
        items, seen = await collect_pages(
            client, sim, headers, f"/cvad/manage/Machines?limit={limit}"
        )

        assert [m["Id"] for m in items] == [sim.site.machine_id(i) for i in range(MACHINES)]
        assert items[3] == sim.site.machine(3)
        assert seen == pages

    async def test_the_default_page_is_250(self, client: aiohttp.ClientSession) -> None:
        """Without `limit` a page holds 250 machines."""
        async with serve(SimulatorConfig(machines=260)) as big:
            headers = api_headers(big, await fetch_token(client, big))
            status, body, _ = await get(client, big, "/cvad/manage/Machines", headers)

        assert status == 200
        assert len(body["Items"]) == 250
        assert body["ContinuationToken"]

    @pytest.mark.parametrize("param", ["ContinuationToken", "CONTINUATIONTOKEN"])
    async def test_the_token_parameter_matches_in_any_case(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], param: str
    ) -> None:
        """`ContinuationToken=` works like `continuationToken=`."""
        items, _ = await collect_pages(
            client, sim, headers, "/cvad/manage/Machines?limit=25", param
        )

        assert len(items) == MACHINES

    @pytest.mark.parametrize(
        "query",
        [
            pytest.param("limit=1001", id="over-1000"),
            pytest.param("limit=0", id="zero"),
            pytest.param("limit=ten", id="not-a-number"),
            pytest.param("continuationToken=forged", id="forged-token"),
            pytest.param("sessionSupport=Both", id="bad-enum"),
        ],
    )
    async def test_bad_queries_get_400(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], query: str
    ) -> None:
        """A limit outside 1..1000, a foreign token or an unknown enum gets a modern 400."""
        status, body, _ = await get(client, sim, f"/cvad/manage/Machines?{query}", headers)

        assert status == 400
        assert body["type"].startswith("https://errors-api.cloud.com/common/")

    async def test_session_support_filters(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
    ) -> None:
        """`sessionSupport=MultiSession` lists exactly the multi-session machines."""
        path = "/cvad/manage/Machines?limit=5&sessionSupport=MultiSession"
        items, _ = await collect_pages(client, sim, headers, path)
        multi = [i for i in range(MACHINES) if sim.site.catalog_of(i).multi]

        assert [m["Id"] for m in items] == [sim.site.machine_id(i) for i in multi]
        assert {m["SessionSupport"] for m in items} == {"MultiSession"}

    @pytest.mark.parametrize(
        ("kind", "attribute"),
        [
            pytest.param("DeliveryGroups", "group", id="delivery-group"),
            pytest.param("MachineCatalogs", "ref", id="catalog"),
        ],
    )
    @pytest.mark.parametrize("by", ["Id", "Name", "name-lower"])
    async def test_group_and_catalog_lists(
        self,
        client: aiohttp.ClientSession,
        sim: Simulator,
        headers: dict[str, str],
        kind: str,
        attribute: str,
        by: str,
    ) -> None:
        """A delivery group or catalog, named by Id or name in any case, lists its machines once."""
        ref = getattr(sim.site.catalogs[0], attribute)
        key = ref["Name"].lower() if by == "name-lower" else ref[by]
        path = f"/cvad/manage/{kind}/{quote(key, safe='')}/Machines?limit=4"
        items, _ = await collect_pages(client, sim, headers, path)
        field = "DeliveryGroup" if kind == "DeliveryGroups" else "MachineCatalog"
        expected = [
            sim.site.machine_id(i)
            for i in range(MACHINES)
            if getattr(sim.site.catalog_of(i), attribute)["Id"] == ref["Id"]
        ]

        assert expected
        assert [m["Id"] for m in items] == expected
        assert {m[field]["Name"] for m in items} == {ref["Name"]}

    @pytest.mark.parametrize("kind", ["DeliveryGroups", "MachineCatalogs"])
    async def test_an_unknown_group_gets_404(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], kind: str
    ) -> None:
        """An unknown delivery group or catalog gets 404 notFound."""
        status, body, _ = await get(client, sim, f"/cvad/manage/{kind}/Nope/Machines", headers)

        assert status == 404
        assert body["type"] == "https://errors-api.cloud.com/common/notFound"


class TestSessionList:
    @pytest.mark.parametrize("limit", [1, 13, 250, 1000])
    async def test_pages_hold_every_session_once(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str], limit: int
    ) -> None:
        """Following ContinuationToken through /Sessions yields each session of the site once."""
        items, pages = await collect_pages(
            client, sim, headers, f"/cvad/manage/Sessions?limit={limit}"
        )
        expected = sim.site.expected_sessions()

        assert [s["Id"] for s in items] == list(expected)
        assert items[0] == next(iter(expected.values()))[1]
        assert pages == max(1, -(-len(expected) // limit))

    async def test_fields_apply_to_the_session_list(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
    ) -> None:
        """`fields=` projects /Sessions items too."""
        status, body, _ = await get(
            client, sim, "/cvad/manage/Sessions?limit=5&fields=Id,Machine", headers
        )

        assert status == 200
        assert {frozenset(item) for item in body["Items"]} == {frozenset({"Id", "Machine"})}

    async def test_over_1000_is_rejected(
        self, client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
    ) -> None:
        """`limit=1001` gets 400 on /Sessions as on /Machines."""
        assert (await get(client, sim, "/cvad/manage/Sessions?limit=1001", headers))[0] == 400


async def test_unknown_paths_and_methods(
    client: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str]
) -> None:
    """An unknown path gets 404; a POST to a GET endpoint gets 405."""
    assert (await get(client, sim, "/cvad/manage/Nothing", headers))[0] == 404
    assert (await get(client, sim, "/elsewhere", headers))[0] == 404
    async with client.post(sim.base_url + "/cvad/manage/Machines", headers=headers) as response:
        assert response.status == 405
