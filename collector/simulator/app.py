"""The simulated API over HTTP: routing, the checks the real service makes, and each endpoint.

Owns the aiohttp application and the run-time state it serves from (`State`: credentials,
issued tokens, live `Faults`, `Counters`). Every `/cvad/manage` call goes through the same
gate, in this order: latency, the server-wide rate limit, 406 for an `Accept` other than
exactly `application/json`, 500 without a known `Citrix-CustomerId`, 401 for a missing,
malformed or expired token, 400 without the site's `Citrix-InstanceId`, then the random
faults. Paths are matched segment by segment on the raw path, each segment percent-decoded
once, and case-insensitively, as the real (ASP.NET) service routes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import random
import re
import secrets
import socket
import struct
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from collector.simulator.data import Site
from collector.simulator.faults import (
    BAD_CONTINUATION,
    DENY_NAMES,
    FORBIDDEN,
    INVALID_CLIENT,
    NO_SUCH_RESOURCE,
    NOT_ACCEPTABLE,
    Fault,
    Faults,
    Reply,
    TokenBucket,
    activity_body,
    bad_parameter,
    bucket_for,
    citrix_error,
    decide,
    denied,
    fault_reply,
    machine_failure,
    not_found,
    rate_limit_header,
    spoil,
    throttled,
    unauthenticated,
)

ONPREM_CUSTOMER = "CitrixOnPremises"
DEFAULT_LIMIT = 250
MAX_LIMIT = 1000
SLOTS = 64  # session positions per machine in a /Sessions continuation token (max is 48)
BODY_CACHE_SIZE = 1024  # machines whose encoded sessions (~5 KB sparse, ~23 KB full) are kept
AUTH = re.compile(r"cwsauth\s+bearer=(\S+)", re.IGNORECASE)
# The calls `max_in_flight` limits: the ones that read sessions, per machine and site-wide.
IN_FLIGHT_LIMITED = frozenset({"machine_sessions", "sessions"})
DENY_NAME = {endpoint: name for name, endpoints in DENY_NAMES.items() for endpoint in endpoints}
SINGLE_ROUTES = {
    "me": "me",
    "tokens": "onprem_token",
    "machines": "machines",
    "sessions": "sessions",
}
NESTED_ROUTES = {
    ("machines", "sessions"): "machine_sessions",
    ("deliverygroups", "machines"): "delivery_group_machines",
    ("machinecatalogs", "machines"): "catalog_machines",
}


@dataclass
class Credentials:
    """What the simulator accepts: the customer, the API client and the on-premises admin."""

    customer_id: str
    client_id: str
    client_secret: str
    onprem_username: str
    onprem_password: str


@dataclass(slots=True)
class Token:
    """An issued bearer token: when it expires (monotonic) and the customer it belongs to."""

    expires: float
    customer: str
    wall_expiry: datetime


@dataclass
class Counters:
    """What the server saw, for tests to assert on (read from any thread).

    `requests` by endpoint name (`token`, `onprem_token`, `me`, `machines`,
    `delivery_group_machines`, `catalog_machines`, `machine_sessions`, `sessions`, `unknown`);
    `statuses` by HTTP status; `sessions_served` counts 200 answers per machine index (each
    page of a paged machine); `injected` counts each fault applied, by `Fault` value;
    `throttled` counts 429s, `unauthorized` 401s; `peak_rps` is the most requests seen in any
    one-second window;
    `in_flight_rejected` counts the 429s of `max_in_flight` and `peak_in_flight` the most
    sessions calls served at once.
    """

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    sessions_served: Counter[int] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    unauthorized: int = 0
    tokens_issued: int = 0
    peak_rps: int = 0
    in_flight_rejected: int = 0
    peak_in_flight: int = 0
    window: deque[float] = field(default_factory=deque, repr=False)

    def arrived(self, endpoint: str, now: float) -> None:
        self.requests[endpoint] += 1
        window = self.window
        window.append(now)
        while now - window[0] >= 1.0:
            window.popleft()
        self.peak_rps = max(self.peak_rps, len(window))


@dataclass
class State:
    """Everything the handlers read and change; `faults` may be replaced or edited live."""

    site: Site
    credentials: Credentials
    faults: Faults
    rng: random.Random
    counters: Counters = field(default_factory=Counters)
    tokens: dict[str, Token] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    bucket: TokenBucket | None = None
    bucket_knobs: tuple[float, float] = (0.0, 0.0)
    bodies: OrderedDict[int, list[bytes]] = field(default_factory=OrderedDict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0  # sessions calls being served now, for `Faults.max_in_flight`
    body_cache_size: int | None = BODY_CACHE_SIZE  # None: keep every machine's (`prerender`)

    def revoke_tokens(self) -> None:
        """Forget every issued token: the next data call with any of them gets a 401."""
        self.tokens.clear()

    def issue(self, customer: str) -> tuple[str, Token]:
        lifetime = self.faults.token_lifetime_s
        now = self.clock()
        for stale in [t for t, token in self.tokens.items() if token.expires <= now]:
            del self.tokens[stale]
        value = secrets.token_urlsafe(32)
        wall = datetime.now(UTC) + timedelta(seconds=lifetime)
        token = self.tokens[value] = Token(now + lifetime, customer, wall)
        self.counters.tokens_issued += 1
        return value, token

    def rate_limited(self, now: float) -> float:
        """Seconds until the server-wide bucket lets a request through (0: now)."""
        knobs = (self.faults.rate_limit, self.faults.rate_burst)
        if knobs != self.bucket_knobs:  # the knobs changed at runtime: start a new bucket
            self.bucket, self.bucket_knobs = bucket_for(self.faults), knobs
        return self.bucket.take(now) if self.bucket else 0.0

    def encoded_sessions(self, index: int) -> list[bytes]:
        """One machine's sessions, each as JSON, from a bounded LRU (generating costs ~50 us
        a session; joining encoded ones costs next to nothing, so pages share the entry)."""
        parts = self.bodies.get(index)
        if parts is None:
            parts = [orjson.dumps(s) for s in self.site.sessions(index)]
            self.bodies[index] = parts
            if self.body_cache_size is not None and len(self.bodies) > self.body_cache_size:
                self.bodies.popitem(last=False)
        else:
            self.bodies.move_to_end(index)
        return parts

    def prerender(self) -> None:
        """Encode every machine's sessions now and keep them all, so a benchmark's server spends
        its share of the cores it shares with the client on HTTP alone (generating is most of
        its CPU a call, and adds to every call's round trip)."""
        self.body_cache_size = None
        for index in range(self.site.count):
            self.encoded_sessions(index)

    def sessions_body(self, index: int) -> bytes:
        """One machine's unpaged answer, `{"Items": [...]}`, as the documented example."""
        return b'{"Items":[' + b",".join(self.encoded_sessions(index)) + b"]}"


# --- queries and pages ----------------------------------------------------------------------


def ok(payload: Any) -> Reply:
    return Reply(200, orjson.dumps(payload))


def query_value(request: web.Request, name: str) -> str | None:
    """A query parameter, its name matched in any case (`continuationToken`)."""
    folded = name.casefold()
    for key, value in request.query.items():
        if key.casefold() == folded:
            return value
    return None


def project(items: list[Any], fields: str | None) -> list[Any]:
    """Each item with only the top-level properties `fields=` names, as the service documents
    it: names comma-separated, in any case, spaces around them ignored; a property kept is
    kept whole, and a name that is no top-level property (`Machine.Name`, `Nope`) keeps
    nothing. Without `fields` (or with only commas) every property is kept."""
    wanted = {f.strip().casefold() for f in (fields or "").split(",")} - {""}
    if not wanted:
        return items
    return [{k: v for k, v in item.items() if k.casefold() in wanted} for item in items]


def page_limit(request: web.Request) -> int | Reply:
    raw = query_value(request, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        return bad_parameter("limit", "limit must be an integer", "invalidString")
    if not 1 <= limit <= MAX_LIMIT:
        return bad_parameter("limit", f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def encode_position(site: Site, scope: str, position: int) -> str:
    """An opaque continuation token: the scan position, bound to its query and site."""
    raw = orjson.dumps([scope, position, site.key & 0xFFFF])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(site: Site, scope: str, token: str | None) -> int | None:
    """The position a token encodes; 0 without one; None if it is not ours for `scope`."""
    if not token:
        return 0
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if isinstance(decoded, list) and decoded[::2] == [scope, site.key & 0xFFFF]:
        position = decoded[1]
        if isinstance(position, int) and position >= 0:
            return position
    return None


def paginate(
    state: State,
    request: web.Request,
    scope: str,
    items_of: Callable[[int], list[Any]],
    has_items: Callable[[int], bool],
) -> Reply:
    """A page of the items of machines 0, 1, ... in order, as `{Items, ContinuationToken}`.

    The position is machine index * SLOTS + the item's ordinal on that machine, so a page
    can end in the middle of a machine's sessions. Machines without items after the page are
    skipped, so the last page says null rather than leading to an empty one.
    """
    limit = page_limit(request)
    if isinstance(limit, Reply):
        return limit
    site = state.site
    start = decode_position(site, scope, query_value(request, "continuationToken"))
    if start is None:
        return BAD_CONTINUATION
    index, ordinal = divmod(start, SLOTS)
    items: list[Any] = []
    while index < len(site) and len(items) < limit:
        found = items_of(index)
        taken = found[ordinal : ordinal + limit - len(items)]
        items += taken
        ordinal += len(taken)
        if ordinal >= len(found):
            index, ordinal = index + 1, 0
    while ordinal == 0 and index < len(site) and not has_items(index):
        index += 1
    more = encode_position(site, scope, index * SLOTS + ordinal) if index < len(site) else None
    return ok({"Items": project(items, query_value(request, "fields")), "ContinuationToken": more})


def machines_in(
    state: State, request: web.Request, scope: str, member: Callable[[int], bool]
) -> Reply:
    site = state.site
    return paginate(state, request, scope, lambda i: [site.machine(i)] if member(i) else [], member)


# --- endpoints -------------------------------------------------------------------------------


def me(state: State, token: Token) -> Reply:
    expiry = token.wall_expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    site = {"Id": state.site.site_id, "Name": state.site.site_name}
    return ok({
        "UserId": state.site.site_id.replace("-", "")[:24], "DisplayName": "collector API client",
        "ExpiryTime": expiry, "RefreshExpirationTime": expiry,
        "VerifiedEmail": "api-client@example.com", "IsCspCustomer": False,
        "Customers": [{"Id": token.customer, "Name": "Demo Customer", "Sites": [site]}],
    })  # fmt: skip


def machine_sessions(state: State, request: web.Request, name_or_id: str) -> Reply:
    site = state.site
    index = site.lookup(name_or_id)
    failing = state.faults.fail_machines
    if failing and (
        name_or_id.casefold() in failing
        or (index is not None and not failing.isdisjoint(site.keys_of(index)))
        or (index is not None and site.name(index).casefold() in failing)
    ):
        state.counters.injected[Fault.FAIL_MACHINE] += 1
        return machine_failure(name_or_id)
    if index is None:
        return not_found("Machine", name_or_id)
    page = state.faults.session_page
    fields = query_value(request, "fields")
    if page > 0:
        reply = machine_page(state, request, index, page, fields)
    elif fields:
        reply = ok({"Items": project(site.sessions(index), fields)})
    else:
        reply = Reply(200, state.sessions_body(index))
    if reply.status == 200:
        state.counters.sessions_served[index] += 1
    return reply


def machine_page(
    state: State, request: web.Request, index: int, page: int, fields: str | None
) -> Reply:
    """`page` sessions of machine `index` from the `continuationToken` on, with the next token.

    The token encodes the position of the page's first session on this machine; a token of
    another machine, another site or another endpoint is Citrix's 400. With
    `faults.repeat_token` the pager is broken: it hands back the token it was given.
    """
    site = state.site
    scope = f"machine:{index}"
    given = query_value(request, "continuationToken")
    start = decode_position(site, scope, given)
    if start is None:
        return BAD_CONTINUATION
    end = start + page
    encoded = state.encoded_sessions(index)
    more = encode_position(site, scope, end) if end < len(encoded) else None
    if given and state.faults.repeat_token:
        more = given
    if fields:
        items = project(site.sessions(index)[start:end], fields)
        return ok({"Items": items, "ContinuationToken": more})
    items_json = b",".join(encoded[start:end])
    return Reply(
        200, b'{"Items":[' + items_json + b'],"ContinuationToken":' + orjson.dumps(more) + b"}"
    )


def all_machines(state: State, request: web.Request, _: str) -> Reply:
    support = query_value(request, "sessionSupport")
    if support is None:
        return machines_in(state, request, "machines", lambda i: True)
    multi = {"singlesession": False, "multisession": True}.get(support.casefold())
    if multi is None:
        return bad_parameter("sessionSupport", "Unknown SessionSupport value", "invalidEnum")
    site = state.site
    return machines_in(
        state, request, f"machines:{multi}", lambda i: site.catalog_of(i).multi == multi
    )


def grouped_machines(state: State, request: web.Request, kind: str, name_or_id: str) -> Reply:
    """Machines of one delivery group or catalog, named by Id or by name (any case)."""
    site, key = state.site, name_or_id.casefold()
    refs = site.groups if kind == "DeliveryGroup" else [c.ref for c in site.catalogs]
    found = next((r for r in refs if key in (r["Id"].casefold(), r["Name"].casefold())), None)
    if found is None:
        return not_found(kind, name_or_id)
    ref_id = found["Id"]
    if kind == "DeliveryGroup":
        return machines_in(
            state, request, ref_id, lambda i: site.catalog_of(i).group["Id"] == ref_id
        )
    return machines_in(state, request, ref_id, lambda i: site.catalog_of(i).ref["Id"] == ref_id)


def all_sessions(state: State, request: web.Request, _: str) -> Reply:
    site = state.site
    return paginate(
        state, request, "sessions", site.sessions, lambda i: site.machine(i)["SessionCount"] > 0
    )


# --- the gate and the router -----------------------------------------------------------------


def check_auth(state: State, request: web.Request, instance: bool) -> Token | Reply:
    """The checks of every authenticated /cvad/manage call (module docstring, in order)."""
    headers = request.headers
    if headers.get("Accept") != "application/json":
        return NOT_ACCEPTABLE
    customer = headers.get("Citrix-CustomerId")
    if customer not in (state.credentials.customer_id, ONPREM_CUSTOMER):
        return Reply(500, activity_body(str(uuid.uuid4())))
    match = AUTH.fullmatch(headers.get("Authorization", "").strip())
    if match is None:
        return unauthenticated("missing" if "Authorization" not in headers else "invalid")
    token = state.tokens.get(match.group(1))
    if token is None or token.expires <= state.clock():
        return unauthenticated("invalid")
    if token.customer != customer:
        return Reply(500, activity_body(str(uuid.uuid4())))
    if instance:
        site_id = headers.get("Citrix-InstanceId")
        if site_id is None:
            return citrix_error(
                400, "missing", "Missing required header", header="Citrix-InstanceId"
            )
        if site_id.casefold() != state.site.site_id:
            return citrix_error(400, "invalidString", "Unknown site", header="Citrix-InstanceId")
    return token


def route(segments: list[str]) -> tuple[str, str | None]:
    """(endpoint name, its `{nameOrId}`) of the decoded path segments after /cvad/manage."""
    folded = [s.casefold() for s in segments]
    if len(folded) == 1:
        return SINGLE_ROUTES.get(folded[0], "unknown"), None
    if len(folded) == 3 and (folded[0], folded[2]) in NESTED_ROUTES:
        return NESTED_ROUTES[folded[0], folded[2]], segments[1]
    return "unknown", None


def build_app(state: State) -> web.Application:
    """The aiohttp application serving `state`: one catch-all route, routed by `route`."""
    counters = state.counters

    async def respond(
        request: web.Request, reply: Reply, spoiled: Fault | None = None
    ) -> web.Response:
        body = reply.body
        if spoiled is not None and reply.status == 200:
            counters.injected[spoiled] += 1
            body = spoil(body, spoiled)
        headers = {"Content-Type": reply.content_type, "Server": "Citrix Systems, Inc."}
        if reply.transaction_id:
            given = request.headers.get("Citrix-TransactionId")
            headers["Citrix-TransactionId"] = given or str(uuid.uuid4())
        headers.update(reply.headers)
        counters.statuses[reply.status] += 1
        if reply.status == 429:
            counters.throttled += 1
        elif reply.status == 401:
            counters.unauthorized += 1
        return web.Response(status=reply.status, body=body, headers=headers)

    async def delay() -> None:
        faults = state.faults
        ms = faults.latency_ms + faults.latency_jitter_ms * state.rng.random()
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    def drop(request: web.Request) -> web.Response:
        """Abort the connection with a TCP RST (SO_LINGER 0), so the client sees a reset."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=499)  # never sent: the transport is gone

    async def token_endpoint(request: web.Request, customer: str) -> web.Response:
        counters.arrived("token", state.clock())
        await delay()
        creds = state.credentials
        if request.method != "POST":
            return await respond(request, Reply(405, b""))
        denied_status = state.faults.deny.get("token")
        if denied_status is not None:
            counters.injected[Fault.DENIED] += 1
            return await respond(request, denied(denied_status))
        form = await request.post()
        valid = (
            customer in (creds.customer_id, "root")
            and form.get("grant_type") == "client_credentials"
            and hmac.compare_digest(str(form.get("client_id", "")), creds.client_id)
            and hmac.compare_digest(str(form.get("client_secret", "")), creds.client_secret)
        )
        if not valid:
            return await respond(request, INVALID_CLIENT)
        value, _ = state.issue(creds.customer_id)
        # Whole seconds as a string, as the real service; a sub-second test lifetime says 1.
        lifetime = str(max(1, round(state.faults.token_lifetime_s)))
        return await respond(
            request, ok({"token_type": "bearer", "access_token": value, "expires_in": lifetime})
        )

    async def onprem_token(request: web.Request) -> web.Response:
        if request.headers.get("Accept") != "application/json":
            return await respond(request, NOT_ACCEPTABLE)
        denied_status = state.faults.deny.get("token")
        if denied_status is not None:
            counters.injected[Fault.DENIED] += 1
            return await respond(request, denied(denied_status))
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.casefold() != "basic":
            return await respond(request, unauthenticated("missing"))
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return await respond(request, unauthenticated("invalid"))
        creds = state.credentials
        if user.casefold() != creds.onprem_username.casefold() or not hmac.compare_digest(
            password, creds.onprem_password
        ):
            return await respond(request, unauthenticated("invalid"))
        value, token = state.issue(ONPREM_CUSTOMER)
        expires = token.wall_expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        return await respond(request, ok({
            "Token": value, "Principal": creds.onprem_username, "UserId": state.site.site_id,
            "CustomerId": ONPREM_CUSTOMER, "ExpiresAt": expires,
        }))  # fmt: skip

    async def manage(request: web.Request, segments: list[str]) -> web.StreamResponse:
        endpoint, name = route(segments)
        now = state.clock()
        counters.arrived(endpoint, now)
        if endpoint not in IN_FLIGHT_LIMITED:
            return await answer(request, endpoint, name, now)
        limit = state.faults.max_in_flight  # counted without one too: `peak_in_flight`
        if 0 < limit <= state.in_flight:
            counters.injected[Fault.IN_FLIGHT] += 1
            counters.in_flight_rejected += 1
            await delay()  # a refused call still takes its round trip
            return await respond(request, throttled(state.faults.retry_delay_s, False))
        state.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, state.in_flight)
        try:
            response = await answer(request, endpoint, name, now)
            # A real server holds the call's slot until its answer is sent, so send it here
            # (aiohttp's own prepare and write_eof then do nothing): released at return, the
            # slot would free before the answer left, and the server would count fewer in
            # flight than the client that is still waiting for it.
            transport = request.transport
            if transport is not None and not transport.is_closing():
                with contextlib.suppress(ConnectionError):
                    await response.prepare(request)
                    await response.write_eof()
            return response
        finally:
            state.in_flight -= 1

    async def answer(
        request: web.Request, endpoint: str, name: str | None, now: float
    ) -> web.StreamResponse:
        await delay()
        if endpoint == "onprem_token":
            if request.method != "POST":
                return await respond(request, Reply(405, b""))
            return await onprem_token(request)
        if request.method != "GET":
            return await respond(request, Reply(405, b""))
        if endpoint == "unknown":
            return await respond(request, NO_SUCH_RESOURCE)
        faults = state.faults
        if endpoint != "me":
            wait = state.rate_limited(now)
            if wait > 0:
                counters.injected[Fault.RATE_LIMITED] += 1
                return await respond(request, throttled(wait, rate_limit_header(faults, state.rng)))
        token = check_auth(state, request, instance=endpoint != "me")
        if isinstance(token, Reply):
            return await respond(request, token)
        denied_status = faults.deny.get(DENY_NAME.get(endpoint, ""))
        if denied_status is not None:
            counters.injected[Fault.DENIED] += 1
            return await respond(request, denied(denied_status))
        if endpoint == "me":
            return await respond(request, me(state, token))
        if faults.forbid_all:
            counters.injected[Fault.FORBIDDEN] += 1
            return await respond(request, FORBIDDEN)
        decision = decide(faults, state.rng)
        spoiled = None
        if decision is not None:
            reply = fault_reply(decision, faults, str(uuid.uuid4()))
            if reply is not None:
                counters.injected[decision.fault] += 1
                return await respond(request, reply)
            if decision.fault is Fault.RESET:
                counters.injected[Fault.RESET] += 1
                return drop(request)
            if decision.fault is Fault.HANG:
                counters.injected[Fault.HANG] += 1
                # Hold the request, then drop it; server shutdown releases it at once.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(faults.hang_s):
                        await state.stopping.wait()
                return drop(request)
            spoiled = decision.fault
        return await respond(request, HANDLERS[endpoint](state, request, name or ""), spoiled)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        parts = request.rel_url.raw_parts[1:]
        if parts and parts[-1] == "":
            parts = parts[:-1]
        segments = [unquote(p) for p in parts]
        folded = [s.casefold() for s in segments[:4]]
        if folded[:2] == ["cvad", "manage"] and len(segments) > 2:
            return await manage(request, segments[2:])
        if (
            len(segments) == 4
            and folded[0] == "cctrustoauth2"
            and folded[2:] == ["tokens", "clients"]
        ):
            return await token_endpoint(request, segments[1])
        counters.arrived("unknown", state.clock())
        return await respond(request, NO_SUCH_RESOURCE)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


Endpoint = Callable[[State, web.Request, str], Reply]
HANDLERS: dict[str, Endpoint] = {
    "machine_sessions": machine_sessions,
    "machines": all_machines,
    "delivery_group_machines": lambda s, r, name: grouped_machines(s, r, "DeliveryGroup", name),
    "catalog_machines": lambda s, r, name: grouped_machines(s, r, "MachineCatalog", name),
    "sessions": all_sessions,
}
