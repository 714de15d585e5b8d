"""The simulated site's data: machines and their sessions as a pure function of (seed, index).

Owns what the simulator answers with, and nothing about HTTP. Nothing is stored per machine:
`machine(i)` and `sessions(i)` regenerate from a `random.Random` seeded with a hash of the
site's seed and `i`, so a 200,000-machine site costs no memory and the same seed gives the same
bytes on every run. Lookup needs no index either: each key of a machine (its Id, its
`DOMAIN|NAME` and its DNS name) carries the machine's index, which `lookup` decodes and then
confirms by regenerating the keys. Field sets follow `citrix-api.md` sections 3, 4 and 7.
"""

from __future__ import annotations

import contextlib
import random
from bisect import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from collector.simulator.shapes import (
    SHAPES,
    Shape,
    embedded_machine,
    sparse_machine,
    sparse_session,
)

Json = dict[str, Any]
T = TypeVar("T")
ListForm = Literal["name", "dns", "id", "mixed"]
FORMS: tuple[ListForm, ...] = ("name", "dns", "id")

MASK64 = (1 << 64) - 1
SESSIONS_SALT = 0x5E55_10B5_0000_0001
USER_SALT = 0x05E2_0000_0000_0002
MAX_MULTI_SESSIONS = 48  # "up to dozens"; session Uids are index * 64 + ordinal, so < 64
MEAN_SESSIONS = 3.0  # a machine's sessions on average, over the whole site
NOW = 1_795_852_800  # 2026-11-28T08:00:00Z, the simulated "now": fixed, so output is stable

# NETBIOS name, DNS domain, domain SID, mail domain
DOMAINS = [
    ("CONTOSO", "contoso.local", "S-1-5-21-3623811015-3361044348-30300820", "contoso.com"),
    ("FABRIKAM", "fabrikam.corp", "S-1-5-21-1004336348-1177238915-682003330", "fabrikam.com"),
    ("NORTHWIND", "northwind.local", "S-1-5-21-2052111302-1214440339-1417001333", "northwind.com"),
    ("ADATUM", "corp.adatum.com", "S-1-5-21-1390067357-1202660629-839522115", "adatum.com"),
    ("WOODGROVE", "woodgrove.ad", "S-1-5-21-2127521184-1604012920-1887927527", "woodgrove.com"),
]
ZONES = ["Azure-WestEurope", "Azure-EastUS", "OnPrem-Frankfurt", "AWS-eu-central-1", "Chicago-DC"]
APPS = [
    "Microsoft Excel", "Microsoft Word", "Microsoft Outlook", "Microsoft Teams", "SAP Logon",
    "Google Chrome", "Microsoft Edge", "Adobe Acrobat Reader", "AutoCAD 2025", "Notepad++",
]  # fmt: skip
FIRST = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "John",
         "Kara", "Liam", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Yusuf",
         ]  # fmt: skip
LAST = ["Adams", "Berger", "Costa", "Doe", "Evans", "Fischer", "Garcia", "Hansen", "Ito",
        "Jensen", "Kowalski", "Larsen", "Moreau", "Nowak", "Olsen", "Patel", "Rossi", "Silva",
        "Tanaka", "Weber"]  # fmt: skip
# name, delivery group, host prefix, multi-session, OS, OS version, provisioning, allocation,
# delivery type, weight
CATALOGS = [
    ("MC-Win11-Pooled", "DG-Win11-Desktops", "W11-", False, "Windows 11", "10.0.22631", "MCS",
     "Random", "DesktopsOnly", 3.0),
    ("MC-Win10-Static", "DG-Developers", "DEV-", False, "Windows 10", "10.0.19045", "MCS",
     "Static", "DesktopsOnly", 1.0),
    ("MC-Win2022-MS", "DG-Office-Apps", "MS22-", True, "Windows 2022", "10.0.20348", "MCS",
     "Random", "DesktopsAndApps", 2.0),
    ("MC-Win2019-MS", "DG-LOB-Apps", "MS19-", True, "Windows 2019", "10.0.17763", "PVS",
     "Random", "AppsOnly", 1.5),
    ("MC-Win2022-Desktops", "DG-Shared-Desktops", "SD22-", True, "Windows 2022", "10.0.20348",
     "MCS", "Random", "DesktopsOnly", 1.0),
    ("MC-Physical-Lab", "DG-Labs", "LAB-", False, "Windows 10", "10.0.19045", "Manual",
     "Static", "DesktopsOnly", 0.5),
    ("MC-Win11-GPU", "DG-Engineering", "GPU-", False, "Windows 11", "10.0.22631", "MCS",
     "Static", "DesktopsOnly", 0.5),
    ("MC-Win2016-Legacy", "DG-LOB-Apps", "MS16-", True, "Windows 2016", "10.0.14393",
     "MCSImport", "Random", "AppsOnly", 0.5),
]  # fmt: skip
# platform, ProductId, versions, client name prefix, weight
CLIENTS = [
    ("Windows", 1, ["24.2.0.187", "2311.1.0.42", "2409.10.0.13"], "LAPTOP-", 6.0),
    ("Mac", 82, ["24.01.0.14", "24.08.0.45"], "MBP-", 1.5),
    ("Linux", 81, ["24.2.0.65"], "ubuntu-", 0.5),
    ("iOS", 83, ["24.1.5"], "iPad-", 0.5),
    ("Android", 84, ["24.2.0"], "Pixel-", 0.3),
    ("HTML5", 257, ["24.2.0.6"], "HTML5-", 0.7),
]
CLIENT_WEIGHTS = list(accumulate(c[4] / sum(c[4] for c in CLIENTS) for c in CLIENTS))[:-1]
CITIES = (None, "Berlin", "Lyon", "Austin")
COUNTRIES = (None, "DE", "FR", "US")
PROTOCOLS = ["Hdx"] * 47 + ["Rdp"] * 2 + ["Console"]
POWER_ACTIONS = ["PowerOn", "PowerOff", "Restart", "Reset", "Shutdown", "SuspendResume"]
ALL_SCOPE: Json = {
    "Id": "00000000-0000-0000-0000-000000000000", "Uid": 0, "Name": "All",
    "Description": "All objects", "IsBuiltIn": True, "IsAllScope": True,
    "IsTenantScope": False, "TenantId": None, "TenantName": None,
}  # fmt: skip


def mix64(value: int) -> int:
    """SplitMix64's finalizer: a cheap, well-spread 64-bit hash of an integer."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def guid(rng: random.Random, tail: int | None = None) -> str:
    """A version-4 GUID drawn from `rng` (uuid4 reads OS entropy); `tail` fixes its last 48 bits."""
    x = rng.getrandbits(78)
    high = f"{x >> 14 & 0xFFFF_FFFF_FFFF_0FFF | 0x4000:016x}"
    node = rng.getrandbits(48) if tail is None else tail & 0xFFFF_FFFF_FFFF
    return f"{high[:8]}-{high[8:12]}-{high[12:]}-{x & 0x3FFF | 0x8000:04x}-{node:012x}"


# Random.randint and .choice cost ~0.5 us each through randrange; these cost ~0.1 us, and a
# session takes dozens of draws.
def between(rng: random.Random, low: int, high: int) -> int:
    """An integer in [low, high], like `randint`."""
    return low + int(rng.random() * (high - low + 1))


def pick(rng: random.Random, items: Sequence[T]) -> T:
    """One of `items`, like `choice`."""
    return items[int(rng.random() * len(items))]


DAY0 = (NOW // 86400 - 120) * 86400
DAYS = [datetime.fromtimestamp(DAY0 + n * 86400, UTC) for n in range(121)]
PLAIN_DAYS = [f"{d.month}/{d.day}/{d.year}" for d in DAYS]
RFC_DAYS = [f"{d.year:04d}-{d.month:02d}-{d.day:02d}" for d in DAYS]


def plain_time(ts: int | None) -> str | None:
    """A time as the plain fields show it: .NET en-US general format, `12/7/2020 7:25:34 AM`."""
    if ts is None:
        return None
    day, second = divmod(ts - DAY0, 86400)
    hour, rest = divmod(second, 3600)
    half = "AM" if hour < 12 else "PM"
    return f"{PLAIN_DAYS[day]} {hour % 12 or 12}:{rest // 60:02d}:{rest % 60:02d} {half}"


def rfc_time(ts: int | None) -> str | None:
    """The same instant as its `Formatted*` twin shows it: RFC 3339 in UTC."""
    if ts is None:
        return None
    day, second = divmod(ts - DAY0, 86400)
    hour, rest = divmod(second, 3600)
    return f"{RFC_DAYS[day]}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def ip(rng: random.Random, prefix: str) -> str:
    bits = rng.getrandbits(16)
    return f"{prefix}.{bits >> 8}.{bits & 0xFF or 1}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """A machine catalog with its delivery group, zone and domain."""

    ref: Json
    group: Json
    zone: Json
    domain: tuple[str, str, str, str]
    prefix: str
    multi: bool
    os_type: str
    os_version: str
    provisioning: str
    allocation: str
    delivery: str
    weight: float


class Site:
    """A seeded Citrix site of `machines` machines; every value is regenerated on demand.

    `empty_fraction` of the machines have no session (some of those are off or unregistered).
    Single-session machines have 0 or 1 session, multi-session machines 0 to 48: about 3 a
    machine overall. `shape` is `sparse` (what a tenant returns) or `full` (every property of
    the model; `shapes.py`); both shapes of a seed have the same machines and sessions.
    Returned dicts are fresh on each call, but the sessions of one call share their `Machine`.
    """

    def __init__(
        self, seed: int = 1, machines: int = 1000, *, empty_fraction: float = 0.15,
        shape: Shape = "sparse",
    ):  # fmt: skip
        if machines < 0:
            raise ValueError("machines must be >= 0")
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        self.seed = seed
        self.count = machines
        self.empty_fraction = empty_fraction
        self.shape: Shape = shape
        self.key = mix64(seed & MASK64)
        self.id_mask = self.key >> 16  # 48 bits: makes machine Ids differ between seeds
        rng = random.Random(self.key)
        self.site_id = guid(rng)
        self.site_name = "cloudxdsite"
        self.width = max(6, len(str(machines)))
        self.domains = rng.sample(DOMAINS, between(rng, 2, 4))
        zones = rng.sample(ZONES, between(rng, 2, 3))
        self.zones = [{"Id": guid(rng), "Uid": n + 1, "Name": z} for n, z in enumerate(zones)]
        self.apps = [{"Id": guid(rng), "Uid": n + 1, "Name": a} for n, a in enumerate(APPS)]
        self.hypervisors = [
            {"Id": guid(rng), "Uid": n + 1, "Name": f"HC-{z}"} for n, z in enumerate(zones)
        ]
        self.helpdesk_scope = {**ALL_SCOPE, "Id": guid(rng), "Uid": 1, "Name": "Helpdesk",
                               "Description": "Helpdesk-managed machines", "IsBuiltIn": False,
                               "IsAllScope": False}  # fmt: skip
        self.catalogs = self.make_catalogs(rng)
        self.groups = list({c.group["Id"]: c.group for c in self.catalogs}.values())
        self.total_weight = sum(c.weight for c in self.catalogs)
        # Extra sessions a busy multi-session machine has on average, so that the site as a
        # whole averages MEAN_SESSIONS whatever mix of catalogs the seed picked.
        multi_share = sum(c.weight for c in self.catalogs if c.multi) / self.total_weight
        busy_mean = MEAN_SESSIONS / max(1.0 - empty_fraction, 0.05)
        self.multi_extra = min(20.0, max(0.5, (busy_mean - 1.0) / multi_share))
        self.users = max(25, machines * 2)

    def make_catalogs(self, rng: random.Random) -> list[Catalog]:
        rows = rng.sample(CATALOGS, between(rng, 5, 7))
        if all(row[3] == rows[0][3] for row in rows):  # a site always has both kinds
            rows[0] = next(row for row in CATALOGS if row[3] != rows[0][3])
        groups: dict[str, Json] = {}
        catalogs: list[Catalog] = []
        for n, row in enumerate(rows):
            name, group = row[:2]
            if group not in groups:
                groups[group] = {"Id": guid(rng), "Uid": len(groups) + 1, "Name": group}
            ref = {"Id": guid(rng), "Uid": n + 1, "Name": name}
            zone, domain = self.zones[n % len(self.zones)], self.domains[n % len(self.domains)]
            catalogs.append(Catalog(ref, groups[group], zone, domain, *row[2:]))
        return catalogs

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Site):
            return NotImplemented
        mine = (self.seed, self.count, self.empty_fraction, self.shape)
        return mine == (other.seed, other.count, other.empty_fraction, other.shape)

    def __hash__(self) -> int:
        return hash((self.seed, self.count, self.empty_fraction, self.shape))

    def __repr__(self) -> str:
        return f"Site(seed={self.seed}, machines={self.count}, shape={self.shape!r})"

    # --- the cheap part: what lookups and filtered listings scan ---------------------------

    def machine_hash(self, index: int) -> int:
        return mix64(self.key ^ mix64(index))

    def catalog_of(self, index: int) -> Catalog:
        """The machine's catalog from its hash alone, so a listing scans no whole machine."""
        point = (self.machine_hash(index) & 0xFFFF_FFFF) / 2**32 * self.total_weight
        for catalog in self.catalogs:
            point -= catalog.weight
            if point < 0:
                return catalog
        return self.catalogs[-1]

    def host(self, index: int, catalog: Catalog) -> str:
        return f"{catalog.prefix}{index + 1:0{self.width}d}"

    def name(self, index: int) -> str:
        """The machine's `Name`: `DOMAIN\\HOST`."""
        catalog = self.catalog_of(index)
        return f"{catalog.domain[0]}\\{self.host(index, catalog)}"

    def dns_name(self, index: int) -> str:
        catalog = self.catalog_of(index)
        return f"{self.host(index, catalog)}.{catalog.domain[1]}"

    def machine_id(self, index: int) -> str:
        return guid(random.Random(self.machine_hash(index)), index ^ self.id_mask)

    # --- lookup ---------------------------------------------------------------------------

    def lookup(self, name_or_id: str) -> int | None:
        """The index of the machine with this Id, `DOMAIN|NAME` or DNS name (any case), or None.

        The key is taken as the API sees it after percent-decoding: a backslash is not read
        as `|`, because the documented wire form has already replaced it.
        """
        key = name_or_id.casefold()
        for index in self.candidates(key):
            if 0 <= index < self.count and key in self.keys_of(index):
                return index
        return None

    def candidates(self, key: str) -> Iterator[int]:
        """Indices a key could belong to: from a GUID's tail, or a host name's digits."""
        if len(key) == 36 and key.count("-") == 4:
            with contextlib.suppress(ValueError):
                yield int(key[24:], 16) ^ self.id_mask
        host = key.split("|", 1)[1] if "|" in key else key.split(".", 1)[0]
        digits = len(host) - len(host.rstrip("0123456789"))
        if 0 < digits < 12:
            yield int(host[-digits:]) - 1

    def keys_of(self, index: int) -> tuple[str, str, str]:
        """The case-folded Id, `DOMAIN|NAME` and DNS name machine `index` answers to."""
        wire_name = self.name(index).replace("\\", "|")
        return (self.machine_id(index), wire_name.casefold(), self.dns_name(index).casefold())

    # --- whole objects --------------------------------------------------------------------

    def machine(self, index: int) -> Json:
        """The `MachineResponseModel` of machine `index`, as listings show it."""
        machine = self.build(index, with_sessions=False)[0]
        return sparse_machine(machine) if self.shape == "sparse" else machine

    def sessions(self, index: int) -> list[Json]:
        """Every `SessionResponseModel` on machine `index`, each with its `Machine`."""
        if self.shape == "full":
            return self.build(index, with_sessions=True)[1]
        # A sparse session's small Machine needs none of the machine's own draws, so the
        # whole machine is not built.
        machine_id, catalog, count, rs = self.start(index)[1:]
        host = self.host(index, catalog)
        embedded = embedded_machine({
            "Id": machine_id, "Name": f"{catalog.domain[0]}\\{host}",
            "DnsName": f"{host}.{catalog.domain[1]}",
            "MachineCatalog": dict(catalog.ref), "DeliveryGroup": dict(catalog.group),
            "SessionSupport": "MultiSession" if catalog.multi else "SingleSession",
        })  # fmt: skip
        return [sparse_session(self.session(rs, index, catalog, k), embedded) for k in range(count)]

    def expected_sessions(
        self, indices: Iterable[int] | None = None
    ) -> dict[str, tuple[int, Json]]:
        """Session Id → (machine index, session) over the given machines (default: all)."""
        chosen = range(self.count) if indices is None else indices
        return {s["Id"]: (i, s) for i in chosen for s in self.sessions(i)}

    def start(self, index: int) -> tuple[random.Random, str, Catalog, int, random.Random]:
        """Machine `index`'s own stream, its Id, catalog and session count, and the sessions'
        stream, which is separate so `machine()` (needing at most the one session of a
        single-session machine) agrees with `sessions()` on every value."""
        if not 0 <= index < self.count:
            raise IndexError(f"machine index {index} is not in 0..{self.count - 1}")
        h = self.machine_hash(index)
        catalog = self.catalog_of(index)
        rm = random.Random(h)
        machine_id = guid(rm, index ^ self.id_mask)
        if ((h >> 32) & 0xFFFF) / 65536 < self.empty_fraction:
            count = 0
        elif catalog.multi:
            extra = round(rm.expovariate(1 / self.multi_extra))
            count = 1 + min(extra, MAX_MULTI_SESSIONS - 1)
        else:
            count = 1
        return rm, machine_id, catalog, count, random.Random(h ^ SESSIONS_SALT)

    def build(self, index: int, *, with_sessions: bool) -> tuple[Json, list[Json]]:
        """The full machine and (if asked) its full sessions, which share its dict."""
        rm, machine_id, catalog, count, rs = self.start(index)
        wanted = count if with_sessions or not catalog.multi else 0
        sessions = [self.session(rs, index, catalog, k) for k in range(wanted)]
        machine = self.make_machine(rm, index, machine_id, catalog, count, sessions)
        for session in sessions:
            session["Machine"] = machine
        return machine, sessions

    def assigned_user(self, index: int) -> int:
        return mix64(self.key + 7 * index) % self.users

    def user(self, number: int) -> Json:
        """The `IdentityUserResponseModel` of simulated user `number`, the same in every session."""
        # Users are drawn per session, so they use 128 hashed bits instead of a seeded Random
        # (seeding one costs as much as building the whole user).
        h = mix64(self.key ^ USER_SALT ^ number)
        g = mix64(h)
        netbios, dns, sid_prefix, mail_domain = self.domains[number % len(self.domains)]
        first = FIRST[number % len(FIRST)]
        last = LAST[(number // len(FIRST)) % len(LAST)]
        round_ = number // (len(FIRST) * len(LAST))
        sam = f"{first[0]}{last}".lower() + (str(round_) if round_ else "")
        sid = f"{sid_prefix}-{1100 + number}"
        display = f"{first} {last}"
        dc = ",".join(f"DC={part}" for part in dns.split("."))
        upn = f"{sam}@{mail_domain}"
        groups = [f"{sid_prefix}-{513 + n}" for n in range(g & 3)]
        variant, node = g >> 50 | 0x8000, g >> 2 & 0xFFFF_FFFF_FFFF
        user_guid = (
            f"{h >> 32:08x}-{h >> 16 & 0xFFFF:04x}-4{h & 0xFFF:03x}-{variant:04x}-{node:012x}"
        )
        return {
            "Domain": dns, "Forest": dns, "Guid": user_guid,
            "DistinguishedName": f"CN={display},OU=Users,{dc}",
            "CanonicalName": f"{dns}/Users/{display}", "PossibleLookupFailure": False,
            "DirectoryServer": None, "DisplayName": display, "SamName": f"{netbios}\\{sam}",
            "SamAccountName": sam, "CommonName": display, "PrincipalName": upn, "Oid": None,
            "Sid": sid, "UserIdentity": None, "GroupSids": groups, "DenyOnlySids": [],
            "PasswordCanExpire": True if g >> 8 & 7 else None,
            "DaysUntilPasswordExpiry": 1 + (g >> 11) % 90 if g >> 18 & 1 else None,
            "IsBuiltIn": False, "IsGroup": False, "Name": sam,
            "StreetAddress": None, "City": CITIES[g >> 20 & 3],
            "State": None, "Country": COUNTRIES[g >> 20 & 3], "Mail": upn,
            "TelephoneNumber": None, "HomePhone": None,
            "Mobile": f"+1 555 01{(g >> 22) % 100:02d}" if g >> 29 & 3 == 0 else None,
            "Enabled": True, "Locked": False, "PropertiesFetched": (0, 1, 3, 0)[g >> 30 & 3],
            "Claims": {"Oid": None, "Sid": sid, "Upn": upn, "Email": upn},
            "Directory": {"Forest": dns, "Domain": dns, "Tenant": None, "IdentityProvider": "AD",
                          "IdpInstanceId": None, "IdpNickName": None},
        }  # fmt: skip

    def session(self, rs: random.Random, index: int, catalog: Catalog, ordinal: int) -> Json:
        """One `SessionResponseModel` without its `Machine` (filled in by `build`)."""
        user_no = (
            self.assigned_user(index)
            if catalog.allocation == "Static"
            else int(rs.random() * self.users)
        )
        user = self.user(user_no)
        apps_only = catalog.delivery == "AppsOnly"
        is_app = apps_only or (catalog.delivery == "DesktopsAndApps" and rs.random() < 0.6)
        roll = rs.random()
        state = "Active" if roll < 0.7 else "Disconnected" if roll < 0.95 else "Connected"
        connecting = state == "Connected"
        start = NOW - between(rs, 120, 3 * 86400)
        brokered = start - between(rs, 1, 6)
        established = None if connecting else start + between(rs, 3, 40)
        changed = start + between(rs, 0, NOW - start)
        first_app, n_apps = int(rs.random() * len(self.apps)), between(rs, 1, 3) if is_app else 0
        apps = [self.apps[(first_app + n) % len(self.apps)] for n in range(n_apps)]
        platform, product, versions, prefix = CLIENTS[bisect(CLIENT_WEIGHTS, rs.random())][:4]
        client_name = f"{prefix}{rs.getrandbits(24):06X}"
        autonomous = rs.random() < 0.02
        domain = catalog.domain[1]
        tags = [{"Farm": "Gateway01", "Filter": "ExternalAccess"}] if rs.random() < 0.4 else []
        scopes: list[Json] = [{"ScopeType": "DeliveryGroup", "Scopes": [dict(ALL_SCOPE)]},
                  {"ScopeType": "MachineCatalog", "Scopes": [dict(ALL_SCOPE)]}]  # fmt: skip
        if rs.random() < 0.3:
            scopes[0]["Scopes"].append(dict(self.helpdesk_scope))
        return {
            "Id": guid(rs, (ordinal << 36) ^ index ^ self.id_mask),
            "Uid": 100_000 + index * 64 + ordinal,
            "ApplicationsInUse": [
                {"Id": a["Id"], "Uid": a["Uid"], "Name": a["Name"]} for a in apps
            ],
            "AppState": ("Active" if state == "Active" else "Lingering") if is_app else "Desktop",
            "AppStateLastChangeTime": plain_time(changed),
            "FormattedAppStateLastChangeTime": rfc_time(changed),
            "Brokering": {
                "AutonomouslyBrokered": autonomous,
                "DurationMilliseconds": None if autonomous else between(rs, 80, 2500),
                "Time": None if autonomous else plain_time(brokered),
                "FormattedTime": None if autonomous else rfc_time(brokered),
                "UserName": None if autonomous else user["SamName"],
                "UserSid": None if autonomous else user["Sid"],
            },
            "Client": {
                "DeviceId": f"WR-{guid(rs)}" if platform == "Windows" else None,
                "HardwareId": f"{rs.getrandbits(32):08x}" if platform != "HTML5" else None,
                "IPAddress": ip(rs, "10.107"),
                "Name": client_name,
                "Platform": platform,
                "ProductId": product,
                "ReceiverIPAddress": ip(rs, "203.0"),
                "ReceiverName": client_name,
                "Version": pick(rs, versions),
            },
            "Connection": {
                "ConnectedViaHostName": f"gw01.{domain}" if tags else None,
                "ConnectedViaIP": None if state == "Disconnected" else ip(rs, "10.0"),
                "ConnectionMode": "Brokered" if not autonomous else "VdaHighAvailabilityMode",
                "LaunchedViaHostName": f"sf0{between(rs, 1, 3)}.{domain}",
                "LaunchedViaIP": ip(rs, "52.151"),
                "Protocol": pick(rs, PROTOCOLS),
                "SecureIcaActive": rs.random() < 0.1,
                "SmartAccessTags": tags,
                "LaunchedViaPublishedName": pick(rs, ["Store", "Workspace", None]),
            },
            "ContainerScopes": scopes,
            "EstablishmentDurationMilliseconds": None if connecting else between(rs, 900, 25_000),
            "EstablishmentTime": plain_time(established),
            "FormattedEstablishmentTime": rfc_time(established),
            "IsAnonymousUser": False,
            "IsHidden": rs.random() < 0.01,
            "LogoffInProgress": False,
            "LogonInProgress": connecting,
            "Machine": None,
            "SessionType": "Application" if is_app else "Desktop",
            "StartTime": plain_time(start),
            "FormattedStartTime": rfc_time(start),
            "State": state,
            "StateChangeTime": plain_time(changed),
            "FormattedStateChangeTime": rfc_time(changed),
            "UntrustedUserName": user["SamName"] if rs.random() < 0.9 else None,
            "User": user,
        }

    def make_machine(
        self, rm: random.Random, index: int, machine_id: str, catalog: Catalog, count: int,
        sessions: list[Json],
    ) -> Json:  # fmt: skip
        """The full `MachineResponseModel`, its summary fields agreeing with its sessions."""
        netbios, dns, sid_prefix, _ = catalog.domain
        host = self.host(index, catalog)
        roll = rm.random()
        if count or roll > 0.4:
            power, registration = "On", "Registered"
        elif roll < 0.25:
            power, registration = "Off", "Unregistered"
        else:
            power, registration = "On", pick(rm, ["Unregistered", "AgentError", "Initializing"])
        one = sessions[0] if sessions and not catalog.multi else None
        if registration != "Registered":
            summary = "Off" if power == "Off" else "Unregistered"
        elif not count:
            summary = "Available"
        else:
            summary = "Disconnected" if one and one["State"] == "Disconnected" else "InUse"
        maintenance = rm.random() < 0.03
        registered = registration == "Registered"
        static = catalog.allocation == "Static"
        owner = self.user(self.assigned_user(index)) if static else None
        owners = [owner] if owner else []
        last_user = owner or (
            self.user(int(rm.random() * self.users)) if rm.random() < 0.7 else None
        )
        last_conn = NOW - between(rm, 60, 30 * 86400)
        last_dereg = NOW - between(rm, 3600, 60 * 86400)
        failure = pick(rm, ["None", "None", "None", "SessionPreparation", "Licensing"])
        zone = catalog.zone
        hv = self.hypervisors[zone["Uid"] - 1]
        physical = catalog.provisioning == "Manual"
        hosted = None if physical else f"{host.lower()}-{rm.getrandbits(20):05x}"
        conn = one["Connection"] if one else None
        load = min(10_000, count * between(rm, 250, 450)) if catalog.multi else None
        upgrade = rm.random() < 0.1
        tags = conn["SmartAccessTags"] if conn else []
        return {
            "Id": machine_id, "Uid": 1000 + index, "Name": f"{netbios}\\{host}",
            "DnsName": f"{host}.{dns}",
            "MachineCatalog": dict(catalog.ref), "DeliveryGroup": dict(catalog.group),
            "Zone": dict(zone),
            "AgentVersion": pick(rm, ["2402.0.100.629", "2311.0.0.40", "2407.0.0.1138"]),
            "AllocationType": catalog.allocation,
            "ApplicationsInUse": [dict(a) for a in one["ApplicationsInUse"]] if one else [],
            "AssignedUsers": owners, "AssociatedUsers": owners,
            "AzureAdJoinedMode": "HybridAadJoined" if rm.random() < 0.2 else "NotAadJoined",
            "ContainerMetadata": None if rm.random() < 0.5 else {
                "ContainerType": "MachineCatalog",
                "Metadata": [{"Name": "CostCenter", "Value": f"CC-{between(rm, 100, 999)}"}],
            },
            "ContainerScopes": [{"ScopeType": "MachineCatalog", "Scopes": [dict(ALL_SCOPE)]}],
            "ControllerDnsName": f"cc0{zone['Uid']}.{dns}" if registered else None,
            "DeliveryType": catalog.delivery,
            "Description": f"{catalog.os_type} VDA in {zone['Name']}",
            "DesktopConditions": ["ICALatency"] if rm.random() < 0.05 else [],
            "DrainingUntilShutdown": False,
            "FaultState": "None" if registered else "Unregistered",
            "FunctionalLevel": "L7_25",
            "Hosting": None if physical else {
                "HostedMachineId": guid(rm), "HostedMachineName": hosted,
                "HostingServerName": f"host-{between(rm, 1, 40):02d}.{dns}",
                "HypervisorConnection": dict(hv),
                "LastHostingUpdateTime": plain_time(last_dereg),
                "FormattedLastHostingUpdateTime": rfc_time(last_dereg),
                "ImageOutOfDate": rm.random() < 0.05,
            },
            "IconId": "0", "InMaintenanceMode": maintenance,
            "IPAddress": f"10.{20 + zone['Uid']}.{(index >> 8) & 255}.{index & 255}",
            "IsAssigned": static,
            "LastConnectionFailure": failure,
            "LastConnectionTime": plain_time(last_conn),
            "FormattedLastConnectionTime": rfc_time(last_conn),
            "LastConnectionUser": last_user,
            "LastDeregistrationReason": pick(rm, ["AgentShutdown", "AgentRequested", None]),
            "LastDeregistrationTime": plain_time(last_dereg),
            "FormattedLastDeregistrationTime": rfc_time(last_dereg),
            "LastErrorReason": None, "LastErrorTime": None, "FormattedLastErrorTime": None,
            "LoadIndex": load,
            "LoadIndexNames": ["CPU", "Memory"] if catalog.multi else [],
            "LoadIndexes": [load // 2, load - load // 2] if load is not None else [],
            "MachineConfigurationOutOfSync": rm.random() < 0.02,
            "MachineType": "Physical" if physical else "Virtual",
            "MachineUnavailableReason": "None",
            "MaintenanceModeReason": "Administrator" if maintenance else "None",
            "Metadata": [{"Name": "Owner", "Value": "VDI team"}] if rm.random() < 0.2 else [],
            "OSType": catalog.os_type, "OSVersion": catalog.os_version,
            "PersistUserChanges": "OnLocal" if static else "Discard",
            "PowerActionPending": False,
            "PowerState": "Unmanaged" if physical else power,
            "ProvisioningType": catalog.provisioning,
            "PublishedApplications": (
                [a["Name"] for a in self.apps[:3]] if catalog.delivery == "AppsOnly" else []
            ),
            "PublishedName": None,
            "RegistrationState": registration,
            "ScheduledReboot": "None",
            "SessionClientAddress": one["Client"]["IPAddress"] if one else None,
            "SessionClientName": one["Client"]["Name"] if one else None,
            "SessionClientVersion": one["Client"]["Version"] if one else None,
            "SessionConnectedViaHostName": conn["ConnectedViaHostName"] if conn else None,
            "SessionConnectedViaIP": conn["ConnectedViaIP"] if conn else None,
            "SessionCount": count,
            "SessionLaunchedViaHostName": conn["LaunchedViaHostName"] if conn else None,
            "SessionLaunchedViaIP": conn["LaunchedViaIP"] if conn else None,
            "SessionProtocol": conn["Protocol"] if conn else None,
            "SessionSecureIcaActive": conn["SecureIcaActive"] if conn else None,
            "SessionSmartAccessTags": [f"{t['Farm']}:{t['Filter']}" for t in tags],
            "SessionStartTime": one["StartTime"] if one else None,
            "FormattedSessionStartTime": one["FormattedStartTime"] if one else None,
            "SessionState": one["State"] if one else None,
            "SessionStateChangeTime": one["StateChangeTime"] if one else None,
            "FormattedSessionStateChangeTime": one["FormattedStateChangeTime"] if one else None,
            "SessionSupport": "MultiSession" if catalog.multi else "SingleSession",
            "SessionUserName": one["User"]["SamName"] if one else None,
            "Sid": f"{sid_prefix}-{20_000 + index}",
            "SummaryState": summary,
            "SupportedPowerActions": [] if physical else list(POWER_ACTIONS),
            "Tags": ["gpu"] if catalog.prefix == "GPU-" else [],
            "UpgradeDetail": None if not upgrade else {
                "DurationInHours": 4, "LastStateChangeTimeUtc": rfc_time(last_dereg),
                "ScheduleStatus": "UpgradeScheduled", "ScheduledTimeUtc": rfc_time(NOW),
                "StatusMessage": None, "TargetPackageVersion": "2411.0.0.1",
                "Uuid": guid(rm),
            },
            "UpgradeState": "UpgradeScheduled" if upgrade else "UpToDate",
            "UpgradeType": pick(rm, ["CR", "LTSR", None]),
            "WillShutdownAfterUse": False,
            "WindowsActivationStatus": "Licensed" if not physical else None,
            "WindowsActivationStatusErrorCode": None,
            "WindowsActivationStatusVirtualMachineError": None,
            "WindowsActivationTypeProvisionedVirtualMachine": "KMS" if not physical else None,
            "WindowsConnectionSetting": "LogonEnabled",
        }  # fmt: skip

    # --- machine lists --------------------------------------------------------------------

    def list_key(self, index: int, form: ListForm) -> str:
        """How a machine list written in `form` names machine `index`."""
        if form == "mixed":
            form = FORMS[mix64(self.key + index) % 3]
        if form == "name":
            return self.name(index)
        return self.dns_name(index) if form == "dns" else self.machine_id(index)

    def unknown_keys(self, count: int) -> list[str]:
        """Made-up machine names in the site's domains, which the API answers 404 for."""
        return [
            f"{self.domains[n % len(self.domains)][0]}\\GHOST-{n + 1:06d}" for n in range(count)
        ]

    def write_machine_list(
        self, path: str | Path, form: ListForm = "name", unknown: int = 0
    ) -> list[str]:
        """Write one machine a line and `unknown` made-up names spread through; return those."""
        ghosts = self.unknown_keys(unknown)
        every = max(1, self.count // (unknown + 1))
        with Path(path).open("w", encoding="utf-8") as out:
            pending = list(reversed(ghosts))
            for index in range(self.count):
                if pending and index and index % every == 0:
                    out.write(pending.pop() + "\n")
                out.write(self.list_key(index, form) + "\n")
            out.writelines(ghost + "\n" for ghost in reversed(pending))
        return ghosts


def mean_record_size(shape: Shape, seed: int = 1, machines: int = 400) -> float:
    """The mean size in bytes of one session as the API sends it (compact JSON), for `shape`."""
    site = Site(seed, machines, shape=shape)
    sizes = [len(orjson.dumps(s)) for i in range(machines) for s in site.sessions(i)]
    return sum(sizes) / max(1, len(sizes))
