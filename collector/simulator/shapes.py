"""The two shapes the simulator answers in: `full` (every property) and `sparse` (a tenant's).

Owns which properties each shape keeps. `data.py` builds every object in its full form; a
sparse object is the full one cut down by the functions here, so the two shapes of one seed
agree on every value they share (the same session Ids, users and machines). Every property
name here is one of Citrix's model (`tests/fixtures/citrix-schema.json`); a sparse object
keeps each required property of its model.

`sparse` follows the documented example answer for one session (citrix-api.md 12: about
1.7 KB): optional properties absent or null, a small embedded `Machine` and `User`, the plain
times without their `Formatted` twins, scopes with only their required fields.
"""

from __future__ import annotations

from typing import Any, Literal

Json = dict[str, Any]
Shape = Literal["full", "sparse"]
SHAPES: tuple[Shape, ...] = ("full", "sparse")

# A machine in a sparse listing: the properties of the documented example's `Machine`.
LISTED_MACHINE = (
    "Id", "Uid", "Name", "DnsName", "MachineCatalog", "DeliveryGroup", "Zone", "AgentVersion",
    "AllocationType", "ControllerDnsName", "DeliveryType", "FunctionalLevel",
    "InMaintenanceMode", "IPAddress", "LoadIndex", "MachineType", "OSType", "PowerState",
    "ProvisioningType", "RegistrationState", "SessionCount", "SessionSupport", "SummaryState",
    "WindowsConnectionSetting",
)  # fmt: skip
# The `Machine` inside a sparse session: what names it and where it belongs.
EMBEDDED_MACHINE = (
    "Id", "Name", "DnsName", "MachineCatalog", "DeliveryGroup", "SessionSupport",
)  # fmt: skip
USER = ("DisplayName", "PropertiesFetched", "SamName", "Sid", "PrincipalName")
CLIENT = ("IPAddress", "Name", "Platform", "ProductId", "Version")
CONNECTION = (
    "ConnectedViaHostName", "ConnectedViaIP", "ConnectionMode", "LaunchedViaHostName",
    "LaunchedViaIP", "Protocol", "SecureIcaActive", "SmartAccessTags",
)  # fmt: skip
SCOPE = ("Id", "Name", "IsBuiltIn", "IsAllScope", "IsTenantScope")
REF = ("Id", "Name")


def keep(obj: Json, keys: tuple[str, ...]) -> Json:
    return {key: obj[key] for key in keys}


def sparse_machine(machine: Json) -> Json:
    """A listed machine as a tenant returns it: the documented example's properties."""
    return keep(machine, LISTED_MACHINE)


def sparse_user(user: Json) -> Json:
    """A user with its names and Sid, and the required `PropertiesFetched`."""
    return keep(user, USER)


def sparse_session(session: Json, machine: Json) -> Json:
    """A session as a tenant returns it, around a small `Machine` (shared by the caller)."""
    brokering = session["Brokering"]
    return {
        "Id": session["Id"],
        "Uid": session["Uid"],
        "ApplicationsInUse": [keep(a, REF) for a in session["ApplicationsInUse"]],
        "AppState": session["AppState"],
        "AppStateLastChangeTime": session["AppStateLastChangeTime"],
        # As in the documented example: the broker's details are not filled in.
        "Brokering": {
            "AutonomouslyBrokered": brokering["AutonomouslyBrokered"],
            "DurationMilliseconds": brokering["DurationMilliseconds"],
            "Time": None,
            "UserName": None,
            "UserSid": None,
        },
        "Client": keep(session["Client"], CLIENT),
        "Connection": keep(session["Connection"], CONNECTION),
        "ContainerScopes": [
            {"ScopeType": c["ScopeType"], "Scopes": [keep(s, SCOPE) for s in c["Scopes"]]}
            for c in session["ContainerScopes"]
        ],
        "IsAnonymousUser": session["IsAnonymousUser"],
        "LogoffInProgress": session["LogoffInProgress"],
        "LogonInProgress": session["LogonInProgress"],
        "Machine": machine,
        "SessionType": session["SessionType"],
        "StartTime": session["StartTime"],
        "State": session["State"],
        "StateChangeTime": session["StateChangeTime"],
        "UntrustedUserName": session["UntrustedUserName"],
        "User": sparse_user(session["User"]),
    }


def embedded_machine(machine: Json) -> Json:
    """The small `Machine` a sparse session carries."""
    return keep(machine, EMBEDDED_MACHINE)
