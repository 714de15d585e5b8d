"""What can go wrong on the simulated API: fault knobs, profiles, decisions and error bodies.

Owns the `Faults` knobs (mutable at runtime: the server reads them on every request), the
`none`/`flaky`/`hostile` profiles, the decision of which fault a request gets (a pure function
of an injected `random.Random`), the server-side token bucket (clock passed in), and the
exact body of every error the simulator answers, injected or not, in the shapes
`citrix-api.md` section 5 documents. No HTTP objects and no I/O here: `app.py` turns a
`Reply` into a response.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field, replace
from typing import Literal

import orjson

JSON_TYPE = "application/json; charset=utf-8"
ERRORS = "https://errors-api.cloud.com/common/"
RetryHint = Literal["header", "body", "mixed"]


class Fault(enum.StrEnum):
    """An injected failure; its value is its name in `Counters.injected`."""

    THROTTLED = "429"  # a random 429, as a gateway under load answers
    RATE_LIMITED = "rate_limit"  # the token bucket said no
    SERVER_ERROR = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    RESET = "reset"
    HANG = "hang"
    TRUNCATED = "truncated"
    INVALID_JSON = "invalid_json"
    FORBIDDEN = "forbidden"
    FAIL_MACHINE = "fail_machine"
    IN_FLIGHT = "in_flight"  # a sessions call beyond `max_in_flight`
    DENIED = "denied"  # an endpoint named in `deny`


@dataclass
class Faults:
    """The fault knobs; probabilities are per data call and are drawn in the order listed.

    `rate_limit` is requests/s for the whole server (0: none) with a bucket of `rate_burst`
    (0: one second's worth). `retry_after` says how its 429s tell the wait: a `Retry-After`
    header besides the body's `retryDelay`, the body alone, or either at random. Random 429s
    carry the header half of the time. `max_in_flight` (0: none) caps the sessions calls
    (per-machine and site-wide) being served at once: the rest get 429 with the documented
    `retryDelay` body and no `Retry-After`, as Citrix's Monitor OData service limits a tenant
    (citrix-api.md 12). `fail_machines` holds case-folded Ids, names
    (`DOMAIN\\NAME` or `DOMAIN|NAME`) or DNS names that always get a 500.

    Not faults of the service but answers it may give: `session_page` (0: unpaged) pages each
    `Machines/{nameOrId}/Sessions` answer that many sessions at a time with a
    `ContinuationToken`; `repeat_token` breaks that pager, so it hands back the token it was
    given. `deny` maps an endpoint (`DENY_NAMES`) to the HTTP status it always answers, in
    the `ErrorResponse` shape, as a tenant whose API client lacks a permission.
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    max_in_flight: int = 0
    retry_after: RetryHint = "mixed"
    p_429: float = 0.0
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_504: float = 0.0
    p_reset: float = 0.0
    p_hang: float = 0.0
    p_truncated: float = 0.0
    p_invalid_json: float = 0.0
    hang_s: float = 10.0
    retry_delay_s: int = 1  # small on purpose: tests that meet random 429/503 stay fast
    token_lifetime_s: float = 3600.0
    fail_machines: set[str] = field(default_factory=set)
    forbid_all: bool = False
    session_page: int = 0
    repeat_token: bool = False
    deny: dict[str, int] = field(default_factory=dict)


PROFILES: dict[str, Faults] = {
    "none": Faults(),
    "flaky": Faults(
        p_429=0.02, p_500=0.01, p_502=0.005, p_503=0.02, p_504=0.005, p_invalid_json=0.002,
        token_lifetime_s=300.0,
    ),
    "hostile": Faults(
        p_429=0.01, p_500=0.01, p_502=0.02, p_503=0.03, p_504=0.01, p_reset=0.01,
        p_truncated=0.01, p_invalid_json=0.005, token_lifetime_s=5.0,
    ),
}  # fmt: skip


def profile(name: str) -> Faults:
    """A fresh copy of a named profile (so tests can change it freely).

    Raises `ValueError` if there is no such profile; the message lists the known ones.
    """
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown fault profile {name!r}; known: {', '.join(PROFILES)}") from None
    return copy_faults(base)


def copy_faults(faults: Faults) -> Faults:
    """A copy of `faults` whose sets and dicts are its own."""
    return replace(faults, fail_machines=set(faults.fail_machines), deny=dict(faults.deny))


@dataclass(frozen=True, slots=True)
class Decision:
    """The fault one request gets, with the variant drawn for its shape."""

    fault: Fault
    with_header: bool = False  # 429: send Retry-After too
    legacy: bool = False  # 500: ErrorMessage/SdkErrorId, not activityId; 503: parameters object


def decide(faults: Faults, rng: random.Random) -> Decision | None:
    """Which random fault, if any, a data call gets: one draw against the cumulated odds."""
    draw = rng.random()
    for fault, odds in (
        (Fault.THROTTLED, faults.p_429),
        (Fault.SERVER_ERROR, faults.p_500),
        (Fault.BAD_GATEWAY, faults.p_502),
        (Fault.UNAVAILABLE, faults.p_503),
        (Fault.GATEWAY_TIMEOUT, faults.p_504),
        (Fault.RESET, faults.p_reset),
        (Fault.HANG, faults.p_hang),
        (Fault.TRUNCATED, faults.p_truncated),
        (Fault.INVALID_JSON, faults.p_invalid_json),
    ):
        draw -= odds
        if draw < 0:
            variant = rng.random() < 0.5
            return Decision(fault, with_header=variant, legacy=variant)
    return None


def rate_limit_header(faults: Faults, rng: random.Random) -> bool:
    """Whether a rate-limit 429 carries `Retry-After` (else only the body's `retryDelay`)."""
    if faults.retry_after == "mixed":
        return rng.random() < 0.5
    return faults.retry_after == "header"


@dataclass(slots=True)
class TokenBucket:
    """A token bucket: `rate` requests/s on average, bursts of up to `burst`."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float | None = None

    def take(self, now: float) -> float:
        """0.0 if a request may pass at `now` (it takes a token), else seconds until one may."""
        if self.stamp is None:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def bucket_for(faults: Faults) -> TokenBucket | None:
    if faults.rate_limit <= 0:
        return None
    return TokenBucket(faults.rate_limit, faults.rate_burst or max(1.0, faults.rate_limit))


# --- bodies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer before it becomes HTTP: status, body, type and extra headers.

    `transaction_id` is False for what a gateway answers on its own (502, 504), which carries
    no `Citrix-TransactionId` (citrix-api.md 5.1, item 5).
    """

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    transaction_id: bool = True


def citrix_error(status: int, kind: str, detail: str, **params: str) -> Reply:
    """The current gateway error shape: `type`, `detail`, `parameters` as a name/value list."""
    parameters = [{"name": k, "value": v} for k, v in params.items()]
    body = {"type": ERRORS + kind, "detail": detail, "parameters": parameters}
    return Reply(status, orjson.dumps(body))


def throttled(delay_s: float, with_header: bool) -> Reply:
    """429 with the documented `rateLimitExceeded` body, and `Retry-After` if asked."""
    seconds = str(max(1, math.ceil(delay_s)))
    reply = citrix_error(
        429, "rateLimitExceeded", f"Rate limit exceeded; try again in {seconds} seconds",
        retryDelay=seconds,
    )  # fmt: skip
    if with_header:
        return replace(reply, headers=(("Retry-After", seconds),))
    return reply


def unauthenticated(reason: str) -> Reply:
    """401 for a missing (`reason=missing`) or malformed, unknown or expired token (`invalid`)."""
    detail = "Missing or invalid authentication details"
    return citrix_error(401, "authentication", detail, reason=reason)


def not_found(kind: str, name_or_id: str) -> Reply:
    """404 for an unknown machine, delivery group or catalog, naming the key as given."""
    return citrix_error(404, "notFound", f"{kind} not found", entityType=kind, id=name_or_id)


def bad_parameter(name: str, detail: str, kind: str = "outOfRange") -> Reply:
    return citrix_error(400, kind, detail, parameter=name)


# Verbatim as documented, `parameters` an object: one of the shapes besides `ErrorResponse`.
NOT_ACCEPTABLE = Reply(
    406,
    orjson.dumps({
        "type": ERRORS + "notAcceptable",
        "detail": "Must accept application/json media type",
        "parameters": {"contentType": "application/json"},
    }),
)  # fmt: skip
INVALID_CLIENT = Reply(
    400,
    orjson.dumps(
        {"error": "invalid_client", "error_description": "Invalid client id or client secret."}
    ),
)
NO_SUCH_RESOURCE = citrix_error(404, "notFound", "Resource not found")
BAD_CONTINUATION = bad_parameter("continuationToken", "Invalid continuation token", "invalidString")


def server_error(activity_id: str, legacy: bool) -> Reply:
    """500 in one of its two observed shapes."""
    if legacy:
        body = {
            "ErrorMessage": "An unexpected error occurred while processing the request.",
            "SdkErrorId": "InternalServerError", "ErrorType": None, "ErrorDetails": None,
            "SupportLink": None,
        }  # fmt: skip
        return Reply(500, orjson.dumps(body))
    return Reply(500, activity_body(activity_id))


def activity_body(activity_id: str) -> bytes:
    """The gateway's own 500 shape (also its answer to a missing `Citrix-CustomerId`)."""
    return orjson.dumps(
        {"activityId": activity_id, "message": "Internal server error", "statusCode": 500}
    )


def machine_failure(name_or_id: str) -> Reply:
    """The 500 a machine listed in `fail_machines` gets every time (legacy shape)."""
    body = {
        "ErrorMessage": f"Failed to read the sessions of machine {name_or_id}.",
        "SdkErrorId": "BrokerServiceError", "ErrorType": None, "ErrorDetails": None,
        "SupportLink": None,
    }  # fmt: skip
    return Reply(500, orjson.dumps(body))


BAD_GATEWAY = Reply(
    502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html", transaction_id=False
)
GATEWAY_TIMEOUT = Reply(504, b"504 Gateway Time-out", "text/plain", transaction_id=False)
FORBIDDEN = citrix_error(
    403, "authorization", "Access denied",
    message="User is not authorized to access the specified resource",
)  # fmt: skip


def unavailable(delay_s: int, as_object: bool = True) -> Reply:
    """503 in the `ErrorResponse` shape, or with `parameters` as an object, as some real
    answers have it (citrix-api.md 5.1)."""
    seconds = str(delay_s)
    detail = f"Service is unavailable; try again in {seconds} seconds"
    if not as_object:
        return citrix_error(503, "serviceUnavailable", detail, retryDelay=seconds)
    body = {
        "type": ERRORS + "serviceUnavailable",
        "detail": detail,
        "parameters": {"retryDelay": seconds},
    }
    return Reply(503, orjson.dumps(body))


def fault_reply(decision: Decision, faults: Faults, activity_id: str) -> Reply | None:
    """The answer of an error-status fault; None for faults that spoil or drop an answer."""
    fault = decision.fault
    if fault is Fault.THROTTLED:
        return throttled(faults.retry_delay_s, decision.with_header)
    if fault is Fault.SERVER_ERROR:
        return server_error(activity_id, decision.legacy)
    if fault is Fault.BAD_GATEWAY:
        return BAD_GATEWAY
    if fault is Fault.UNAVAILABLE:
        return unavailable(faults.retry_delay_s, as_object=decision.legacy)
    if fault is Fault.GATEWAY_TIMEOUT:
        return GATEWAY_TIMEOUT
    return None


def spoil(body: bytes, fault: Fault) -> bytes:
    """A 200 body cut in half, or made invalid JSON (an XSSI guard prefix before it)."""
    if fault is Fault.TRUNCATED:
        return body[: len(body) // 2]
    return b")]}',\n" + body


# The endpoint names `Faults.deny` takes, and the routed endpoints each one covers.
DENY_NAMES: dict[str, tuple[str, ...]] = {
    "token": ("token", "onprem_token"),
    "me": ("me",),
    "machines": ("machines", "delivery_group_machines", "catalog_machines"),
    "sessions": ("machine_sessions",),
    "site-sessions": ("sessions",),
}
# Citrix's common error codes (citrix-api.md 5.1): the `type` and `detail` of each status.
DENIAL_TEXTS: dict[int, tuple[str, str]] = {
    400: ("invalidString", "Invalid request"),
    401: ("authentication", "Missing or invalid authentication details"),
    403: ("authorization", "Access denied"),
    404: ("notFound", "Resource not found"),
    406: ("notAcceptable", "Must accept application/json media type"),
    409: ("optimisticConcurrency", "Conflict"),
    415: ("unsupportedMediaType", "Unsupported media type"),
    429: ("rateLimitExceeded", "Rate limit exceeded; try again in 1 seconds"),
    501: ("notImplemented", "Not implemented"),
    503: ("serviceUnavailable", "Service is unavailable; try again in 1 seconds"),
}
DENIAL_PARAMS: dict[int, dict[str, str]] = {
    401: {"reason": "invalid"},
    403: {"message": "User is not authorized to access the specified resource"},
    406: {"contentType": "application/json"},
    429: {"retryDelay": "1"},
    503: {"retryDelay": "1"},
}


def parse_deny(items: list[str]) -> dict[str, int]:
    """`NAME=STATUS` items (`machines=403`) as a `Faults.deny` mapping.

    Raises `ValueError` naming the item, and the known names, if one cannot be read.
    """
    deny: dict[str, int] = {}
    for item in items:
        name, _, status = item.partition("=")
        name = name.strip().casefold()
        if name not in DENY_NAMES:
            raise ValueError(f"--deny {item!r}: unknown endpoint; known: {', '.join(DENY_NAMES)}")
        try:
            code = int(status)
        except ValueError:
            raise ValueError(
                f"--deny {item!r}: expected NAME=STATUS, such as machines=403"
            ) from None
        if not 400 <= code <= 599:
            raise ValueError(f"--deny {item!r}: the status must be between 400 and 599")
        deny[name] = code
    return deny


def denied(status: int) -> Reply:
    """What a denied endpoint answers: `status` in the `ErrorResponse` shape."""
    kind, detail = DENIAL_TEXTS.get(
        status,
        ("internalServerError" if status >= 500 else "invalidString", f"Request failed ({status})"),
    )
    return citrix_error(status, kind, detail, **DENIAL_PARAMS.get(status, {}))
