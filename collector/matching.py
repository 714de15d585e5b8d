"""Site-wide mode's matcher: which entry of the machine list a session's `Machine` is.

Plain values in, plain values out, no I/O. The list is held as 16-byte digests of its
normalised keys (the lookup) plus the names as given (they become `_machine`); a session's
`Machine` is looked up by the digests of its `Id`, `Name` and `DnsName`, the three forms
per-machine mode accepts in a list, compared as the API compares them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from collector.models import machine_key

# 128 bits: a collision among even a billion keys has odds below 1e-20, and a digest costs
# a third of the memory of the key it stands for.
DIGEST_SIZE = 16
MATCH_FIELDS = ("Id", "Name", "DnsName")  # what a list line may name a machine by (SPEC 4)


def match_key(name: str) -> str:
    """A machine name as the API compares it: trimmed, case-folded, `DOMAIN|NAME` as `DOMAIN\\NAME`.

    The API takes `DOMAIN|NAME` for `DOMAIN\\NAME` (the wire form of SPEC 5.1), so a list may
    say either and per-machine mode finds the same machine.
    """
    return machine_key(name).replace("|", "\\")


def digest(name: str) -> bytes:
    """The 16-byte digest of `match_key(name)`."""
    raw = match_key(name).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=DIGEST_SIZE).digest()


def machine_digests(machine: Mapping[str, Any] | None) -> Iterator[bytes]:
    """The digests a `Machine` object answers to: those of its Id, Name and DnsName present."""
    if not machine:
        return
    for field in MATCH_FIELDS:
        value = machine.get(field)
        if isinstance(value, str) and value.strip():
            yield digest(value)


def listed_name(machine: Mapping[str, Any] | None) -> str | None:
    """The name a discovered machine is collected under: its Name, else DnsName, else Id."""
    if not machine:
        return None
    for field in ("Name", "DnsName", "Id"):
        value = machine.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class MachineIndex:
    """The machines a listing keeps: entry number → name, digest → entry number, found flags.

    `add` takes the list in order; `resolve` maps a `Machine` object to the entries that name
    it (a list may name one machine twice, by Id and by name: per-machine mode collects it
    under both names, and so does this); `mark_found` records that the site has it.
    """

    __slots__ = ("by_digest", "found", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.by_digest: dict[bytes, int] = {}
        self.found = bytearray()

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str) -> int | None:
        """Add an entry; its number, or None if an entry with the same key is there already."""
        key = digest(name)
        if key in self.by_digest:
            return None
        entry = len(self.names)
        self.by_digest[key] = entry
        self.names.append(name)
        self.found.append(0)
        return entry

    def resolve(self, machine: Mapping[str, Any] | None) -> list[int]:
        """The entries that name `machine`, each once, in list order."""
        entries = {self.by_digest[d] for d in machine_digests(machine) if d in self.by_digest}
        return sorted(entries)

    def mark_found(self, entries: list[int]) -> None:
        for entry in entries:
            self.found[entry] = 1

    def missing(self) -> Iterator[int]:
        """The entries the site does not have (none of `mark_found`'s)."""
        return (n for n, flag in enumerate(self.found) if not flag)

    def present(self) -> Iterator[int]:
        return (n for n, flag in enumerate(self.found) if flag)
