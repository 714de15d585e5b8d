"""Flattening a session into one record (SPEC 6.2)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.config import ArraysMode
from collector.flatten import make_flattener
from tests.conftest import load_fixture


def example_session() -> dict[str, Any]:
    session: dict[str, Any] = load_fixture("machine-sessions-response.json")["Items"][0]
    return session


class TestFullExample:
    def test_nested_objects_join_with_the_separator(self) -> None:
        """The documented example session's nested fields become dotted keys."""
        flat = make_flattener()(example_session())

        assert flat["Connection.Protocol"] == "Hdx"
        assert flat["Machine.DeliveryGroup.Name"] == "DG-Office-Apps"
        assert flat["User.Claims.Upn"] == "jdoe@contoso.com"
        assert flat["User.Directory.IdentityProvider"] == "AD"
        assert flat["Brokering.FormattedTime"] == "2020-12-07T07:24:58Z"

    def test_every_leaf_is_kept(self) -> None:
        """Each scalar and array of the answer appears once, under its joined path."""
        session = example_session()
        flat = make_flattener()(session)

        def leaves(obj: dict[str, Any], prefix: str = "") -> set[str]:
            out: set[str] = set()
            for key, value in obj.items():
                if isinstance(value, dict) and value:
                    out |= leaves(value, f"{prefix}{key}.")
                else:
                    out.add(prefix + key)
            return out

        assert set(flat) == leaves(session)
        assert not any(isinstance(v, dict) for v in flat.values())

    def test_nulls_are_kept(self) -> None:
        """A null in the answer stays a null in the record."""
        flat = make_flattener()(example_session())

        assert "Connection.ConnectedViaHostName" in flat
        assert flat["Connection.ConnectedViaHostName"] is None

    def test_objects_inside_arrays_are_flattened(self) -> None:
        """ContainerScopes keeps its list shape, with each scope flattened inside."""
        flat = make_flattener()(example_session())

        scopes = flat["ContainerScopes"]
        assert isinstance(scopes, list)
        assert scopes[0]["ScopeType"] == "DeliveryGroup"
        assert scopes[0]["Scopes"][0]["IsAllScope"] is True
        assert flat["Connection.SmartAccessTags"] == [
            {"Farm": "Gateway01", "Filter": "ExternalAccess"}
        ]

    def test_field_order_follows_the_answer(self) -> None:
        """Keys come in the API's order, so the order is stable across records."""
        flat = make_flattener()(example_session())
        keys = list(flat)

        assert keys[:3] == ["Id", "Uid", "ApplicationsInUse"]
        assert keys.index("Brokering.AutonomouslyBrokered") < keys.index("Client.DeviceId")


@pytest.mark.parametrize(
    ("separator", "session", "expected"),
    [
        pytest.param(".", {"a": {"b": {"c": 1}}}, {"a.b.c": 1}, id="dot-three-levels"),
        pytest.param("__", {"a": {"b": 1}}, {"a__b": 1}, id="custom-separator"),
        pytest.param(".", {"a": {}}, {"a": {}}, id="empty-object-kept"),
        pytest.param(".", {"a": []}, {"a": []}, id="empty-array-kept"),
        pytest.param(".", {"a": [[{"b": {"c": 1}}]]}, {"a": [[{"b.c": 1}]]}, id="nested-arrays"),
        pytest.param(".", {"a": [1, None, "x"]}, {"a": [1, None, "x"]}, id="scalar-array"),
        pytest.param(".", {"Unknown": {"New": True}}, {"Unknown.New": True}, id="unknown-field"),
    ],
)
def test_shapes(separator: str, session: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each shape flattens as the spec says."""
    assert make_flattener(separator)(session) == expected


def test_arrays_json_mode_serializes_arrays() -> None:
    """With arrays = "json", an array becomes its compact JSON text."""
    flat = make_flattener(".", ArraysMode.JSON)({"a": [{"b": {"c": 1}}], "d": {"e": [1, 2]}})

    assert flat == {"a": '[{"b":{"c":1}}]', "d.e": "[1,2]"}
    assert orjson.loads(flat["a"]) == [{"b": {"c": 1}}]


def test_input_is_not_modified() -> None:
    """Flattening leaves the parsed answer untouched."""
    session = example_session()
    before = orjson.dumps(session)

    make_flattener()(session)

    assert orjson.dumps(session) == before
