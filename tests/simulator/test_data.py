"""The seeded site: determinism, lookup by every key form, and sessions shaped like the API's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.simulator import Site
from tests.conftest import load_fixture


def keys_tree(obj: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON object, nested objects (and objects in lists) included."""
    paths: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths.add(prefix + key)
            paths |= keys_tree(value, f"{prefix}{key}.")
    elif isinstance(obj, list):
        for item in obj:
            paths |= keys_tree(item, prefix)
    return paths


def all_sessions(site: Site) -> list[dict[str, Any]]:
    return [s for i in range(len(site)) for s in site.sessions(i)]


class TestDeterminism:
    def test_same_seed_same_bytes(self) -> None:
        """Two sites of the same seed give the same machines and sessions, byte for byte."""
        a, b = Site(seed=5, machines=80), Site(seed=5, machines=80)

        assert a == b
        for i in range(80):
            assert orjson.dumps(a.machine(i)) == orjson.dumps(b.machine(i))
            assert orjson.dumps(a.sessions(i)) == orjson.dumps(b.sessions(i))

    def test_other_seed_other_data(self) -> None:
        """A different seed gives a different site id, machine Ids and sessions."""
        a, b = Site(seed=5, machines=80), Site(seed=6, machines=80)

        assert a != b
        assert a.site_id != b.site_id
        assert {a.machine_id(i) for i in range(80)}.isdisjoint(b.machine_id(i) for i in range(80))
        assert a.expected_sessions().keys() != b.expected_sessions().keys()

    def test_machine_and_sessions_agree(self) -> None:
        """`machine(i)` is exactly the `Machine` inside each of its full sessions."""
        site = Site(seed=2, machines=120, shape="full")
        for i in range(120):
            machine = site.machine(i)
            sessions = site.sessions(i)
            assert machine["SessionCount"] == len(sessions)
            assert all(s["Machine"] == machine for s in sessions)

    def test_a_sparse_machine_agrees_with_its_listing(self) -> None:
        """A sparse session's small `Machine` has the values the machine listing shows."""
        site = Site(seed=2, machines=120)
        for i in range(120):
            machine = site.machine(i)
            for session in site.sessions(i):
                embedded = session["Machine"]
                assert embedded == {k: machine[k] for k in embedded}
                assert {"Id", "Name", "DnsName"} <= set(embedded)

    def test_both_shapes_have_the_same_sessions(self) -> None:
        """A seed's sparse and full sites hold the same session Ids, users and start times."""
        sparse, full = Site(seed=2, machines=120), Site(seed=2, machines=120, shape="full")
        for i in range(120):
            for small, big in zip(sparse.sessions(i), full.sessions(i), strict=True):
                assert small["Id"] == big["Id"]
                assert small["User"]["Sid"] == big["User"]["Sid"]
                assert small["StartTime"] == big["StartTime"]

    def test_the_last_machine_of_a_huge_site_is_instant(self) -> None:
        """Machine 199,999 of a 200,000-machine site is generated on demand, not after the rest."""
        started = time.perf_counter()
        site = Site(seed=1, machines=200_000)
        site.sessions(199_999)
        index = site.lookup(site.dns_name(199_999))

        assert index == 199_999
        assert time.perf_counter() - started < 0.5


class TestShape:
    def test_every_documented_field_is_present(self) -> None:
        """Each full session carries every key path of the documented example (citrix-api.md 7)."""
        example = load_fixture("machine-sessions-response.json")["Items"][0]
        wanted = keys_tree(example)
        site = Site(seed=3, machines=200, shape="full")
        sessions = all_sessions(site)

        in_lists = ("ApplicationsInUse.", "Connection.SmartAccessTags.")
        for session in sessions:
            # A session may have an empty list where the example has an item.
            missing = {p for p in wanted - keys_tree(session) if not p.startswith(in_lists)}
            assert not missing, missing
        assert any(keys_tree(s) >= wanted for s in sessions)

    def test_times_come_in_both_formats(self) -> None:
        """Plain times use the .NET en-US form and their Formatted twins RFC 3339 UTC."""
        session = all_sessions(Site(seed=4, machines=20, shape="full"))[0]

        assert session["StartTime"].endswith((" AM", " PM"))
        assert session["StartTime"].count("/") == 2
        assert session["FormattedStartTime"].endswith("Z")
        assert session["FormattedStartTime"][10] == "T"

    def test_values_vary(self) -> None:
        """States, platforms, protocols and session types take several values across a site."""
        sessions = all_sessions(Site(seed=8, machines=400))

        assert {s["State"] for s in sessions} >= {"Active", "Disconnected"}
        assert len({s["Client"]["Platform"] for s in sessions}) >= 3
        assert {s["SessionType"] for s in sessions} == {"Application", "Desktop"}
        assert len({s["Machine"]["DeliveryGroup"]["Name"] for s in sessions}) >= 3
        assert len({s["Machine"]["Name"].split("\\")[0] for s in sessions}) >= 2
        assert any(s["Brokering"]["DurationMilliseconds"] is None for s in sessions) or any(
            s["Connection"]["ConnectedViaHostName"] is None for s in sessions
        )

    def test_session_ids_are_unique(self) -> None:
        """No two sessions of a site share an Id, nor a Uid."""
        sessions = all_sessions(Site(seed=9, machines=1500))

        assert len({s["Id"] for s in sessions}) == len(sessions)
        assert len({s["Uid"] for s in sessions}) == len(sessions)

    def test_session_counts_follow_the_machine_kind(self) -> None:
        """Single-session machines have 0 or 1 session; multi-session ones up to dozens."""
        site = Site(seed=10, machines=3000)
        single = [len(site.sessions(i)) for i in range(3000) if not site.catalog_of(i).multi]
        multi = [len(site.sessions(i)) for i in range(3000) if site.catalog_of(i).multi]
        everyone = single + multi

        assert set(single) == {0, 1}
        assert 12 <= max(multi) <= 48
        assert 2.5 <= sum(everyone) / len(everyone) <= 3.5
        assert 0.1 <= everyone.count(0) / len(everyone) <= 0.2

    def test_empty_fraction_is_a_knob(self) -> None:
        """A site built with empty_fraction=0.6 has about 60% machines without sessions."""
        site = Site(seed=10, machines=2000, empty_fraction=0.6)
        empty = sum(1 for i in range(2000) if not site.sessions(i))

        assert 0.55 <= empty / 2000 <= 0.65


class TestLookup:
    @pytest.mark.parametrize(
        "key_of",
        [
            pytest.param(lambda s, i: s.machine_id(i), id="id"),
            pytest.param(lambda s, i: s.machine_id(i).upper(), id="id-upper"),
            pytest.param(lambda s, i: s.name(i).replace("\\", "|"), id="domain-pipe-name"),
            pytest.param(lambda s, i: s.name(i).replace("\\", "|").lower(), id="pipe-lower"),
            pytest.param(lambda s, i: s.dns_name(i), id="dns"),
            pytest.param(lambda s, i: s.dns_name(i).upper(), id="dns-upper"),
        ],
    )
    def test_every_key_form_resolves(self, key_of: Any) -> None:
        """Ids, DOMAIN|NAME and DNS names find their machine, in any case."""
        site = Site(seed=11, machines=300)
        for i in (0, 1, 150, 299):
            assert site.lookup(key_of(site, i)) == i

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("", id="empty"),
            pytest.param("CONTOSO|GHOST-000001", id="made-up"),
            pytest.param("00000000-0000-4000-8000-000000000000", id="zero-guid"),
            pytest.param("W11-999999.contoso.local", id="beyond-the-site"),
            pytest.param("nothing-to-see", id="no-digits"),
        ],
    )
    def test_unknown_keys_resolve_to_none(self, key: str) -> None:
        """Keys of no machine give None."""
        assert Site(seed=11, machines=300).lookup(key) is None

    def test_a_backslash_is_not_taken_for_a_pipe(self) -> None:
        """`DOMAIN\\NAME` is not a wire form: the API wants `DOMAIN|NAME` (citrix-api.md 2.2)."""
        site = Site(seed=11, machines=300)

        assert site.lookup(site.name(5)) is None

    def test_a_near_miss_is_rejected(self) -> None:
        """A key with the right digits but the wrong domain or prefix finds nothing."""
        site = Site(seed=11, machines=300)
        domain, host = site.name(7).split("\\")

        assert site.lookup(f"OTHER|{host}") is None
        assert site.lookup(f"{domain}|X{host}") is None


class TestMachineList:
    @pytest.mark.parametrize("form", ["name", "dns", "id", "mixed"])
    def test_every_line_resolves_to_its_machine(self, tmp_path: Path, form: Any) -> None:
        """Each line written names machine i, in the chosen form, in order."""
        site = Site(seed=12, machines=90)
        path = tmp_path / "machines.txt"
        site.write_machine_list(path, form=form)
        lines = path.read_text().splitlines()

        assert len(lines) == 90
        for i, line in enumerate(lines):
            assert site.lookup(line.replace("\\", "|")) == i

    def test_mixed_uses_every_form(self, tmp_path: Path) -> None:
        """A mixed list holds names, DNS names and Ids."""
        site = Site(seed=12, machines=90)
        path = tmp_path / "machines.txt"
        site.write_machine_list(path, form="mixed")
        text = path.read_text()

        assert "\\" in text
        assert any(line.count(".") >= 2 for line in text.splitlines())
        assert any(len(line) == 36 for line in text.splitlines())

    def test_unknown_names_are_added_and_returned(self, tmp_path: Path) -> None:
        """`unknown` made-up names are spread through the list, and none resolves."""
        site = Site(seed=12, machines=90)
        path = tmp_path / "machines.txt"
        ghosts = site.write_machine_list(path, unknown=4)
        lines = path.read_text().splitlines()

        assert len(lines) == 94
        assert set(ghosts) <= set(lines)
        assert lines[-1] not in ghosts
        assert all(site.lookup(g.replace("\\", "|")) is None for g in ghosts)

    def test_expected_sessions_index_the_run(self) -> None:
        """expected_sessions maps each session Id to its machine index and session."""
        site = Site(seed=13, machines=50)
        expected = site.expected_sessions(range(10, 20))

        assert {i for i, _ in expected.values()} <= set(range(10, 20))
        assert sum(len(site.sessions(i)) for i in range(10, 20)) == len(expected)
        for session_id, (index, session) in expected.items():
            assert session["Id"] == session_id
            assert session["Machine"]["Id"] == site.machine_id(index)
