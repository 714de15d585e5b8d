"""The sans-I/O API layer: URLs, headers, Retry-After, error bodies and answers, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from collector import __version__
from collector.errors import ApiError
from collector.models import ErrorKind
from collector.protocol import (
    build_url,
    continuation_token,
    decipher,
    encode_name,
    items_of,
    machines_path,
    parse_expires_at,
    parse_expires_in,
    parse_retry_after,
    read_error_body,
    request_headers,
    sessions_path,
    site_id_from_me,
    throttle_delay,
    token_form,
)
from tests.conftest import load_fixture

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
ERROR_BODIES: dict[str, Any] = load_fixture("error-bodies.json")


def body_of(name: str) -> bytes:
    value = ERROR_BODIES[name]
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


class TestNames:
    @pytest.mark.parametrize(
        ("name", "wire"),
        [
            pytest.param("DOMAIN\\NAME", "DOMAIN%7CNAME", id="domain-backslash"),
            pytest.param("CONTOSO\\VDA-01", "CONTOSO%7CVDA-01", id="dash-kept"),
            pytest.param("VDA01.corp.local", "VDA01.corp.local", id="dns-name"),
            pytest.param(
                "8bd7c72f-1a4c-4e00-ae4f-bf2eb3448a11",
                "8bd7c72f-1a4c-4e00-ae4f-bf2eb3448a11",
                id="guid",
            ),
            pytest.param("DOMAIN|NAME", "DOMAIN%7CNAME", id="pipe-already"),
            pytest.param("a b/c?d#e%f", "a%20b%2Fc%3Fd%23e%25f", id="reserved"),
            pytest.param("CORP\\Mäschine", "CORP%7CM%C3%A4schine", id="unicode"),
        ],
    )
    def test_encode_name(self, name: str, wire: str) -> None:
        """A machine name goes on the wire as one path segment, backslash as %7C."""

        assert encode_name(name) == wire

    def test_sessions_path(self) -> None:
        """The per-machine path holds the encoded name."""

        assert sessions_path("D\\N") == "/cvad/manage/Machines/D%7CN/Sessions"

    @pytest.mark.parametrize(
        ("group", "catalog", "path"),
        [
            ("", "", "/cvad/manage/Machines"),
            ("DG 1", "", "/cvad/manage/DeliveryGroups/DG%201/Machines"),
            ("", "MC/1", "/cvad/manage/MachineCatalogs/MC%2F1/Machines"),
        ],
    )
    def test_machines_path(self, group: str, catalog: str, path: str) -> None:
        """Machines are listed for the site, a delivery group or a catalog."""

        assert machines_path(group, catalog) == path

    def test_build_url_encodes_query(self) -> None:
        """Query values are percent-encoded, except the comma of a fields list."""

        url = build_url(
            "https://api.cloud.com/",
            "/cvad/manage/Sessions",
            [("fields", "Id,State"), ("continuationToken", "a+b/c=d&e")],
        )
        assert url == (
            "https://api.cloud.com/cvad/manage/Sessions"
            "?fields=Id,State&continuationToken=a%2Bb%2Fc%3Dd%26e"
        )

    def test_build_url_without_query(self) -> None:
        """No parameters, no question mark."""

        assert build_url("http://h:1", "/x") == "http://h:1/x"


class TestHeaders:
    def test_every_header_exact(self) -> None:
        """Accept is exactly application/json; Authorization is left to the auth layer."""

        headers = request_headers(customer_id="cust", instance_id="site", transaction_id="tx")
        assert headers == {
            "Accept": "application/json",
            "Citrix-CustomerId": "cust",
            "Citrix-InstanceId": "site",
            "Citrix-TransactionId": "tx",
            "User-Agent": f"collector/{__version__}",
        }

    def test_no_instance_for_me(self) -> None:
        """`instance_id=None` (for /me) leaves the header out."""

        headers = request_headers(customer_id="c", instance_id=None, transaction_id="x")
        assert "Citrix-InstanceId" not in headers

    def test_token_form(self) -> None:
        """The client-credentials form encodes every reserved character of the secret."""

        assert token_form("id 1", "s&e=c+r/t") == (
            "grant_type=client_credentials&client_id=id%201&client_secret=s%26e%3Dc%2Br%2Ft"
        )


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            pytest.param("4", 4.0, id="delta"),
            pytest.param(" 1.5 ", 1.5, id="fraction"),
            pytest.param("0", 0.0, id="zero"),
            pytest.param(
                format_datetime(NOW + timedelta(seconds=10), usegmt=True), 10.0, id="date"
            ),
            pytest.param(format_datetime(NOW - timedelta(seconds=10), usegmt=True), 0.0, id="past"),
            pytest.param("2026-11-29T12:00:30Z", 30.0, id="rfc3339"),
            pytest.param("soon", None, id="garbage"),
            pytest.param("-3", None, id="negative"),
            pytest.param("", None, id="empty"),
            pytest.param(None, None, id="absent"),
            pytest.param("nan", None, id="nan"),
        ],
    )
    def test_parse(self, value: str | None, seconds: float | None) -> None:
        """Retry-After is delta-seconds or a date; anything else is None, never an error."""

        assert parse_retry_after(value, NOW) == seconds

    def test_throttle_delay_prefers_header(self) -> None:
        """The header wins over the body's retryDelay; the body is the fallback."""

        body = body_of("rate_limited")
        assert throttle_delay({"Retry-After": "2"}, body, now=NOW) == 2.0
        assert throttle_delay({}, body, now=NOW) == 4.0
        assert throttle_delay({}, b"", now=NOW) is None


class TestErrorBodies:
    @pytest.mark.parametrize(
        ("fixture", "message", "delay"),
        [
            ("not_found_modern", "Machine not found", None),
            ("not_found_legacy", "Machine not found (MachineNotFound)", None),
            ("rate_limited", "Rate limit exceeded; try again in 4 seconds", 4.0),
            ("unavailable_params_object", "Service is unavailable; try again in 4 seconds", 4.0),
            ("unauthenticated", "Missing or invalid authentication details", None),
            ("unauthenticated_old_gateway", "Missing or invalid CWSAuth header.", None),
            ("not_acceptable", "Must accept application/json media type", None),
            (
                "missing_customer_500",
                "Internal server error (activity c59d4c1e-0000-4000-8000-000000000000)",
                None,
            ),
            ("token_invalid_client", "invalid_client: Invalid client id or client secret.", None),
            ("bad_gateway_html", "502 Bad Gateway", None),
        ],
    )
    def test_every_documented_shape(self, fixture: str, message: str, delay: float | None) -> None:
        """Each documented error body gives its message and retryDelay."""

        assert read_error_body(body_of(fixture)) == (message, delay)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            pytest.param(b"", "", id="empty"),
            pytest.param(b"  \n", "", id="blank"),
            pytest.param(b"[1, 2]", "[1, 2]", id="json-array"),
            pytest.param(b'"oops"', '"oops"', id="json-string"),
            pytest.param(b"\xff\xfe broken", "\ufffd\ufffd broken", id="not-utf8"),
            pytest.param(b"{}", "{}", id="empty-object"),
            pytest.param(b'{"type": "https://errors-api.cloud.com/common/x"}', "x", id="type-only"),
            pytest.param(
                b'{"parameters": [1, null, "x"], "detail": 5}',
                '{"parameters": [1, null, "x"], "detail": 5}',
                id="odd-types",
            ),
            pytest.param(b'{"Error": "flat"}', "flat", id="error-as-string"),
            pytest.param(b'{"message": "Bad", "statusCode": 400}', "Bad", id="message"),
        ],
    )
    def test_odd_bodies(self, body: bytes, message: str) -> None:
        """Bodies of no known shape give an excerpt or nothing, never an exception."""

        assert read_error_body(body) == (message, None)

    def test_long_html_excerpt(self) -> None:
        """A long HTML page becomes one short line of its text."""

        body = b"<html><body>" + b"<p>gateway  timeout</p>\n" * 500 + b"</body></html>"
        message, _ = read_error_body(body)
        assert message.startswith("gateway timeout gateway timeout")
        assert len(message) <= 200
        assert "<" not in message

    @pytest.mark.parametrize(
        ("parameters", "delay"),
        [
            pytest.param([{"name": "RetryDelay", "value": 3}], 3.0, id="number-any-case"),
            pytest.param({"retrydelay": "2.5"}, 2.5, id="object"),
            pytest.param([{"name": "retryDelay", "value": "soon"}], None, id="garbage"),
            pytest.param([{"name": "retryDelay"}], None, id="no-value"),
        ],
    )
    def test_retry_delay_forms(self, parameters: Any, delay: float | None) -> None:
        """retryDelay is read whatever the case, as a number or a string."""

        body = orjson.dumps({"detail": "slow down", "parameters": parameters})
        assert read_error_body(body) == ("slow down", delay)


class TestDecipher:
    def test_ok(self) -> None:
        """A 2xx answer gives its parsed JSON."""

        assert decipher(200, {}, b'{"Items": []}', now=NOW) == {"Items": []}

    def test_no_content(self) -> None:
        """A 204 without a body gives None."""

        assert decipher(204, {}, b"", now=NOW) is None

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b'{"Items": [{"Id": "a"', id="truncated"),
            pytest.param(b"<html>ok</html>", id="html"),
            pytest.param(b"", id="empty"),
        ],
    )
    def test_invalid_json_is_retryable(self, body: bytes) -> None:
        """A 2xx body that is not JSON is a retryable invalid_response, without the body."""

        with pytest.raises(ApiError) as caught:
            decipher(200, {"citrix-transactionid": "tx-1"}, body, now=NOW)
        exc = caught.value
        assert (exc.kind, exc.retryable, exc.status) == (ErrorKind.INVALID_RESPONSE, True, 200)
        assert exc.transaction_id == "tx-1"
        assert "Items" not in exc.message

    @pytest.mark.parametrize(
        ("status", "kind", "retryable"),
        [
            (400, ErrorKind.REJECTED, False),
            (401, ErrorKind.FORBIDDEN, False),
            (403, ErrorKind.FORBIDDEN, False),
            (404, ErrorKind.NOT_FOUND, False),
            (406, ErrorKind.REJECTED, False),
            (408, ErrorKind.TIMEOUT, True),
            (409, ErrorKind.REJECTED, False),
            (429, ErrorKind.THROTTLED, True),
            (500, ErrorKind.SERVER_ERROR, True),
            (501, ErrorKind.SERVER_ERROR, False),
            (502, ErrorKind.SERVER_ERROR, True),
            (503, ErrorKind.SERVER_ERROR, True),
            (504, ErrorKind.SERVER_ERROR, True),
            (530, ErrorKind.SERVER_ERROR, False),
        ],
    )
    def test_status_table(self, status: int, kind: ErrorKind, retryable: bool) -> None:
        """Each error status maps to its kind, and only the documented ones are retried."""

        with pytest.raises(ApiError) as caught:
            decipher(status, {}, body_of("not_found_modern"), now=NOW)
        exc = caught.value
        assert (exc.kind, exc.retryable, exc.status) == (kind, retryable, status)
        assert exc.message == f"HTTP {status}: Machine not found"

    def test_retry_after_header_then_body(self) -> None:
        """retry_after comes from Retry-After, else from the body's retryDelay."""

        body = body_of("rate_limited")
        with pytest.raises(ApiError) as header:
            decipher(429, {"retry-after": "7"}, body, now=NOW)
        with pytest.raises(ApiError) as bodyonly:
            decipher(429, {}, body, now=NOW)
        with pytest.raises(ApiError) as neither:
            decipher(503, {}, b"", now=NOW)
        assert header.value.retry_after == 7.0
        assert bodyonly.value.retry_after == 4.0
        assert neither.value.retry_after is None
        assert neither.value.message == "HTTP 503 (the answer gave no reason)"

    @pytest.mark.parametrize(
        ("headers", "transaction"),
        [
            ({"Citrix-TransactionId": "a"}, "a"),
            ({"citrix-transactionid": "b"}, "b"),
            ({"X-Cws-TransactionId": "c"}, "c"),
            ({"Citrix-TransactionId": " "}, None),
            ({}, None),
        ],
    )
    def test_transaction_id(self, headers: dict[str, str], transaction: str | None) -> None:
        """The transaction id is read case-insensitively; a 502 may have none."""

        with pytest.raises(ApiError) as caught:
            decipher(502, headers, body_of("bad_gateway_html"), now=NOW)
        assert caught.value.transaction_id == transaction


class TestPayloads:
    @pytest.mark.parametrize(
        ("payload", "token"),
        [
            ({"Items": []}, None),
            ({"Items": [], "ContinuationToken": None}, None),
            ({"Items": [], "ContinuationToken": ""}, None),
            ({"Items": [], "ContinuationToken": "abc"}, "abc"),
            ({"Items": [], "continuationToken": "low"}, "low"),
            ([], None),
        ],
    )
    def test_continuation_token(self, payload: Any, token: str | None) -> None:
        """Absent, null and empty tokens all mean the last page."""

        assert continuation_token(payload) == token

    @pytest.mark.parametrize(
        ("payload", "items"),
        [
            ({"Items": [{"Id": "a"}]}, [{"Id": "a"}]),
            ({"Items": None}, []),
            ({}, []),
        ],
    )
    def test_items(self, payload: Any, items: list[dict[str, Any]]) -> None:
        """A collection's Items; a null or missing list is empty."""

        assert items_of(payload) == items

    @pytest.mark.parametrize("payload", [[], {"Items": {"Id": "a"}}, {"Items": [1]}, None])
    def test_items_refused(self, payload: Any) -> None:
        """An answer that is not a collection is a non-retryable invalid_response."""

        with pytest.raises(ApiError) as caught:
            items_of(payload)
        assert (caught.value.kind, caught.value.retryable) == (ErrorKind.INVALID_RESPONSE, False)

    def test_site_id(self) -> None:
        """The site is Customers[0].Sites[0].Id of /me."""

        me = {"Customers": [{"Id": "c", "Sites": [{"Id": "site-1", "Name": "S"}]}]}
        assert site_id_from_me(me) == "site-1"

    @pytest.mark.parametrize(
        "me", [{}, {"Customers": []}, {"Customers": [{"Sites": []}]}, {"Customers": None}]
    )
    def test_no_site(self, me: Any) -> None:
        """A /me answer without a site says to set [api] site_id."""

        with pytest.raises(ApiError, match=r"site_id"):
            site_id_from_me(me)

    @pytest.mark.parametrize(
        ("value", "seconds"), [("3600", 3600.0), (7200, 7200.0), (" 60 ", 60.0), (1.5, 1.5)]
    )
    def test_expires_in(self, value: str | int | float, seconds: float) -> None:
        """expires_in may be a string (as the real service sends it) or a number."""

        assert parse_expires_in(value) == seconds

    @pytest.mark.parametrize("value", ["abc", "", "0", -5, True, "inf"])
    def test_expires_in_refused(self, value: Any) -> None:
        """A lifetime that is not a positive number is a ValueError."""

        with pytest.raises(ValueError, match="expires_in"):
            parse_expires_in(value)

    @pytest.mark.parametrize(
        "value", ["2026-11-29T13:00:00Z", "2026-11-29T13:00:00+00:00", "2026-11-29T13:00:00"]
    )
    def test_expires_at(self, value: str) -> None:
        """An on-premises ExpiresAt is RFC 3339, UTC when it has no offset."""

        assert parse_expires_at(value, NOW) == 3600.0
