"""The Citrix DaaS / CVAD REST API without I/O: URLs, headers, answers and error bodies.

Everything here is a pure function of its arguments (gidgethub's `sansio.py` is the model):
no aiohttp, no awaits, no clock read. `client.py` sends what these functions build and hands
the status, headers and body bytes back to `decipher`, the one place a status becomes data
or an `ApiError`. Facts come from `citrix-api.md`; the simulator implements the same document
on its own and must not import this module.

Messages built here hold the server's words, the status and the transaction id; never a
request header, a token or a secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import orjson

from collector import __version__
from collector.errors import ApiError
from collector.models import ErrorKind

USER_AGENT = f"collector/{__version__}"
ACCEPT = "application/json"  # exactly: a charset parameter or */* gets a 406 (citrix-api.md 1.2)
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"  # exactly, no charset (1.1)
TRANSACTION_HEADER = "Citrix-TransactionId"
LEGACY_TRANSACTION_HEADER = "X-Cws-TransactionId"

MANAGE = "/cvad/manage"
ME_PATH = f"{MANAGE}/me"
TOKENS_PATH = f"{MANAGE}/Tokens"
MACHINES_PATH = f"{MANAGE}/Machines"
SITE_SESSIONS_PATH = f"{MANAGE}/Sessions"
PAGE_LIMIT = 1000  # the documented maximum page size (citrix-api.md 2.3)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
EXCERPT_CHARS = 200

TAG = re.compile(r"<[^>]*>")
SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one HTTP exchange: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# --- requests ----------------------------------------------------------------------------------


def encode_name(name_or_id: str) -> str:
    """A machine name or Id as one path segment: `DOMAIN\\NAME` becomes `DOMAIN%7CNAME`.

    The API wants the backslash replaced by `|` (citrix-api.md 2.2); the result is then
    percent-encoded with nothing left safe, so `/`, `?`, `#`, `%` and spaces cannot escape
    the segment.
    """
    return quote(name_or_id.replace("\\", "|"), safe="")


def sessions_path(name_or_id: str) -> str:
    """The path of one machine's sessions."""
    return f"{MACHINES_PATH}/{encode_name(name_or_id)}/Sessions"


def machines_path(delivery_group: str = "", catalog: str = "") -> str:
    """The path listing machines: the site's, or one delivery group's or catalog's."""
    if delivery_group:
        return f"{MANAGE}/DeliveryGroups/{encode_name(delivery_group)}/Machines"
    if catalog:
        return f"{MANAGE}/MachineCatalogs/{encode_name(catalog)}/Machines"
    return MACHINES_PATH


def query_string(params: Iterable[tuple[str, str]], safe: str = ",") -> str:
    """`k=v&...` with keys and values percent-encoded (a comma may stay: `fields=Id,State`)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe=safe)}" for k, v in params)


def build_url(base_url: str, path: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The full, already-encoded URL of `path` (itself encoded) under `base_url`.

    The client sends it as is (`yarl.URL(..., encoded=True)`), so what is built here is
    exactly what goes on the wire.
    """
    query = query_string(params)
    return f"{base_url.rstrip('/')}{path}" + (f"?{query}" if query else "")


def auth_value(token: str) -> str:
    """The `Authorization` value of a Citrix bearer token (no space around `=`)."""
    return f"CwsAuth Bearer={token}"


def request_headers(
    *, customer_id: str, instance_id: str | None, transaction_id: str
) -> dict[str, str]:
    """The headers of every `/cvad/manage` call but `Authorization`, which the authorisation
    layer adds once pacing let the request go; `instance_id=None` leaves out the site (`/me`)."""
    headers = {
        "Accept": ACCEPT,
        "Citrix-CustomerId": customer_id,
        TRANSACTION_HEADER: transaction_id,
        "User-Agent": USER_AGENT,
    }
    if instance_id is not None:
        headers["Citrix-InstanceId"] = instance_id
    return headers


# --- headers and bodies of answers -------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, looked up case-insensitively (plain dicts included)."""
    value = headers.get(name)
    if value is not None:
        return value
    folded = name.casefold()
    for key, candidate in headers.items():
        if key.casefold() == folded:
            return candidate
    return None


def utc_now() -> datetime:
    """Now, timezone-aware, for Retry-After dates and token expiry."""
    return datetime.now(UTC)


def transaction_note(transaction_id: str | None) -> str:
    """` (transaction ID)` for a message, or nothing when the server sent none."""
    return f" (transaction {transaction_id})" if transaction_id else ""


def transaction_id_of(headers: Mapping[str, str]) -> str | None:
    """The answer's transaction id (502s from the gateway often carry none)."""
    value = header(headers, TRANSACTION_HEADER) or header(headers, LEGACY_TRANSACTION_HEADER)
    return (value.strip() or None) if value else None


def parse_seconds(value: Any) -> float | None:
    """A non-negative, finite number of seconds from a number or a numeric string, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value: delta-seconds or an HTTP date.

    An RFC 3339 date is accepted too (Citrix Endpoint Management sends one). A date in the
    past gives 0. Returns None for a missing or unreadable value; never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds = parse_seconds(text)
    if seconds is not None:
        return seconds
    when: datetime | None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110: an HTTP date is always GMT
    return max(0.0, (when - now).total_seconds())


def get_folded(obj: Mapping[str, Any], *names: str) -> Any:
    """The value of the first of `names` present in `obj`, matched case-insensitively."""
    for name in names:
        if name in obj:
            return obj[name]
    folded = {key.casefold(): value for key, value in obj.items() if isinstance(key, str)}
    for name in names:
        if name.casefold() in folded:
            return folded[name.casefold()]
    return None


def parameter(parameters: Any, name: str) -> Any:
    """One named parameter of an error body: `parameters` is a `[{name, value}]` list or a dict."""
    if isinstance(parameters, dict):
        return get_folded(parameters, name)
    if isinstance(parameters, list):
        for item in parameters:
            if isinstance(item, dict):
                key = get_folded(item, "name")
                if isinstance(key, str) and key.casefold() == name.casefold():
                    return get_folded(item, "value")
    return None


def excerpt(body: bytes) -> str:
    """A short, one-line view of a body that is not a JSON error: tags dropped, spaces folded."""
    text = body[: EXCERPT_CHARS * 8].decode("utf-8", errors="replace")
    text = SPACE.sub(" ", TAG.sub(" ", text)).strip()
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def text_of(value: Any) -> str:
    return SPACE.sub(" ", value).strip() if isinstance(value, str) else ""


def error_message(data: Mapping[str, Any]) -> str:
    """The message of a JSON error body in any of the shapes of citrix-api.md 5.1."""
    detail = text_of(get_folded(data, "detail"))  # {type, detail, parameters}
    if detail:
        return detail
    legacy = text_of(get_folded(data, "ErrorMessage"))  # {ErrorMessage, SdkErrorId}
    if legacy:
        sdk_id = text_of(get_folded(data, "SdkErrorId"))
        return f"{legacy} ({sdk_id})" if sdk_id else legacy
    nested = get_folded(data, "Error")  # old gateway: {Error: {Message, Type}}
    if isinstance(nested, dict):
        message = text_of(get_folded(nested, "Message"))
        if message:
            return message
    oauth = text_of(get_folded(data, "error"))  # token endpoint: {error, error_description}
    if oauth:
        description = text_of(get_folded(data, "error_description"))
        return f"{oauth}: {description}" if description else oauth
    message = text_of(get_folded(data, "message", "title"))  # {message, statusCode, activityId}
    if message:
        activity = text_of(get_folded(data, "activityId"))
        return f"{message} (activity {activity})" if activity else message
    kind = text_of(get_folded(data, "type"))  # a bare type URL is better than nothing
    return kind.rsplit("/", 1)[-1] if kind else ""


def read_error_body(body: bytes) -> tuple[str, float | None]:
    """The message and the `retryDelay` (seconds) of an error body, in any shape.

    JSON bodies of every documented shape give their message; anything else (HTML, plain
    text, a JSON array, invalid bytes) gives a short excerpt, and an empty body gives "".
    Never raises.
    """
    if not body.strip():
        return "", None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return excerpt(body), None
    if not isinstance(data, dict):
        return excerpt(body), None
    delay = parse_seconds(parameter(get_folded(data, "parameters"), "retryDelay"))
    if delay is None:
        delay = parse_seconds(get_folded(data, "retryDelay"))
    return error_message(data) or excerpt(body), delay


def throttle_delay(headers: Mapping[str, str], body: bytes, *, now: datetime) -> float | None:
    """The wait a 429 asks for: `Retry-After`, else the body's `retryDelay`, else None."""
    delay = parse_retry_after(header(headers, "Retry-After"), now)
    return delay if delay is not None else read_error_body(body)[1]


def kind_of(status: int) -> ErrorKind:
    """The `errors.ndjson` kind of an HTTP error status.

    401 and 403 refuse the caller (`forbidden`); any other 4xx (400, 406, 409...) refuses the
    request itself (`rejected`), with the status beside it.
    """
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 429:
        return ErrorKind.THROTTLED
    if status == 408:
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    if status in (401, 403):
        return ErrorKind.FORBIDDEN
    return ErrorKind.REJECTED


def decipher(status: int, headers: Mapping[str, str], body: bytes, *, now: datetime) -> Any:
    """The parsed JSON of a 2xx answer, or the `ApiError` its status and body stand for.

    `now` is the time the answer arrived, to read a `Retry-After` date.

    Raises `ApiError` for any status outside 2xx: retryable for 408, 429, 500, 502, 503 and
    504, with `retry_after` from the `Retry-After` header, else from the body's `retryDelay`;
    not retryable otherwise (404 is `not_found`, 403 `forbidden`, 400 `rejected`).
    Raises a retryable `ApiError` of kind `invalid_response` if a 2xx body is not valid JSON.
    The error's `transaction_id` is the answer's `Citrix-TransactionId`, if any.
    """
    if 200 <= status < 300:
        if status == 204 and not body:
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            # The body is not quoted: a truncated token answer would put a secret in a log.
            raise ApiError(
                f"HTTP {status} with a body that is not valid JSON ({len(body)} bytes: {exc})",
                kind=ErrorKind.INVALID_RESPONSE,
                status=status,
                transaction_id=transaction_id_of(headers),
                retryable=True,
            ) from exc
    transaction_id = transaction_id_of(headers)  # read only for errors: a success needs none
    message, delay = read_error_body(body)
    retry_after = parse_retry_after(header(headers, "Retry-After"), now)
    if retry_after is None:
        retry_after = delay
    raise ApiError(
        f"HTTP {status}: {message}" if message else f"HTTP {status} (the answer gave no reason)",
        kind=kind_of(status),
        status=status,
        transaction_id=transaction_id,
        retry_after=retry_after,
        retryable=status in RETRYABLE_STATUSES,
    )


# --- payloads ----------------------------------------------------------------------------------


def invalid_payload(what: str, status: int = 200) -> ApiError:
    return ApiError(
        f"HTTP {status} with an unexpected answer: {what}",
        kind=ErrorKind.INVALID_RESPONSE,
        status=status,
        retryable=False,
    )


def items_of(payload: Any) -> list[dict[str, Any]]:
    """The `Items` of a collection answer (`{"Items": [...]}`); a null or missing list is empty.

    Raises a non-retryable `ApiError` (`invalid_response`) if the answer is not an object or
    `Items` is not a list of objects.
    """
    if not isinstance(payload, dict):
        raise invalid_payload("not a JSON object")
    items = get_folded(payload, "Items")
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise invalid_payload("Items is not a list of objects")
    return items


def continuation_token(payload: Any) -> str | None:
    """The `ContinuationToken` of a page, or None when it is the last (absent, null or "")."""
    if not isinstance(payload, dict):
        return None
    token = get_folded(payload, "ContinuationToken")
    return token if isinstance(token, str) and token else None


def site_id_from_me(payload: Any) -> str:
    """`Customers[0].Sites[0].Id` of a `/me` answer.

    Raises a non-retryable `ApiError` (`invalid_response`) if the answer has no site.
    """
    try:
        site = payload["Customers"][0]["Sites"][0]["Id"]
    except (KeyError, IndexError, TypeError):
        site = None
    if not isinstance(site, str) or not site:
        raise invalid_payload(
            "/cvad/manage/me lists no site for this customer; set [api] site_id, or check "
            "that the API client belongs to a customer with a DaaS site"
        )
    return site


def parse_expires_in(value: str | int | float) -> float:
    """A token lifetime in seconds from `expires_in`, a number or a numeric string (`"3600"`).

    Raises `ValueError` if it is not a positive, finite number.
    """
    seconds = parse_seconds(value)
    if seconds is None or seconds <= 0:
        raise ValueError(f"expires_in is not a positive number of seconds: {value!r}")
    return seconds


def parse_expires_at(value: str, now: datetime) -> float:
    """Seconds from `now` to an on-premises token's `ExpiresAt` (RFC 3339, UTC if naive).

    Raises `ValueError` if it is not a date.
    """
    when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - now).total_seconds()


def token_form(client_id: str, client_secret: str) -> str:
    """The client-credentials form body (`grant_type`, `client_id`, `client_secret`)."""
    return query_string(
        (
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ),
        safe="",
    )
