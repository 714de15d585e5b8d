"""The site-wide matcher: list entries by digest, a session's Machine to the entries naming it."""

from __future__ import annotations

import pytest

from collector.matching import (
    DIGEST_SIZE,
    MachineIndex,
    digest,
    listed_name,
    machine_digests,
    match_key,
)

VDA = {
    "Id": "6f1c2a3b-0000-4000-8000-00000000abcd",
    "Name": "CORP\\VDA-0001",
    "DnsName": "vda-0001.corp.example.com",
}


@pytest.mark.parametrize(
    ("given", "key"),
    [
        pytest.param("  CORP\\VDA-01 ", "corp\\vda-01", id="trimmed-and-folded"),
        pytest.param("CORP|VDA-01", "corp\\vda-01", id="wire-form-is-the-name"),
        pytest.param("VDA-01.Corp.Example.COM", "vda-01.corp.example.com", id="dns"),
    ],
)
def test_match_key_normalises_as_the_api_compares(given: str, key: str) -> None:
    """Case, surrounding blanks and `|` for `\\` do not make another machine."""
    assert match_key(given) == key


def test_a_digest_is_16_bytes_and_ignores_case() -> None:
    """Digests are short and equal for two spellings of one key."""
    assert len(digest("CORP\\VDA-01")) == DIGEST_SIZE
    assert digest("CORP\\VDA-01") == digest("corp|vda-01")
    assert digest("CORP\\VDA-01") != digest("CORP\\VDA-02")


def test_a_machine_answers_to_its_id_name_and_dns_name() -> None:
    """Three digests for a full Machine; none for a missing or empty one."""
    assert list(machine_digests(VDA)) == [digest(VDA[f]) for f in ("Id", "Name", "DnsName")]
    assert list(machine_digests(None)) == []
    assert list(machine_digests({"Id": "", "Name": None})) == []


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(VDA["Id"].upper(), id="id-upper"),
        pytest.param("corp\\vda-0001", id="name-lower"),
        pytest.param("CORP|VDA-0001", id="name-wire-form"),
        pytest.param("VDA-0001.CORP.EXAMPLE.COM", id="dns-upper"),
    ],
)
def test_resolve_finds_the_entry_by_any_of_the_three_forms(entry: str) -> None:
    """A list entry in any of the three forms, in any case, is the session's machine."""
    index = MachineIndex()
    index.add("CORP\\OTHER")
    position = index.add(entry)

    assert position == 1
    assert index.resolve(VDA) == [1]
    assert index.names[1] == entry


def test_one_machine_named_twice_resolves_to_both_entries() -> None:
    """By Id and by name: both entries get the session, as per-machine mode would."""
    index = MachineIndex()
    first, second = index.add(VDA["Name"]), index.add(VDA["Id"])

    assert index.resolve(VDA) == [first, second]


def test_an_unknown_machine_resolves_to_nothing() -> None:
    """A session of a machine not in the list is not kept."""
    index = MachineIndex()
    index.add("CORP\\OTHER")

    assert index.resolve(VDA) == []
    assert index.resolve(None) == []


def test_a_second_spelling_of_an_entry_is_a_duplicate() -> None:
    """`DOMAIN|NAME` after `DOMAIN\\NAME` is the same key: add says None."""
    index = MachineIndex()
    assert index.add("CORP\\VDA-0001") == 0

    assert index.add("corp|vda-0001") is None
    assert len(index) == 1


def test_found_and_missing_split_the_entries() -> None:
    """Entries marked found are present; the others are missing."""
    index = MachineIndex()
    for name in ("a", "b", "c"):
        index.add(name)
    index.mark_found([0, 2])

    assert list(index.present()) == [0, 2]
    assert list(index.missing()) == [1]


def test_listed_name_prefers_name_then_dns_then_id() -> None:
    """A discovered machine is collected under its Name, as per-machine discovery does."""
    assert listed_name(VDA) == VDA["Name"]
    assert listed_name({"DnsName": " vda.example.com ", "Id": "x"}) == "vda.example.com"
    assert listed_name({"Id": "x"}) == "x"
    assert listed_name({}) is None
