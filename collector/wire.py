"""The wire: aiohttp, and the one place its exceptions become ours.

The bottom layer of the request path (see `transport.py`) and the only module that imports
aiohttp. httpx's `map_httpcore_exceptions` is the model for the mapping: most specific first,
`raise ... from exc`, so nothing above this module sees an aiohttp type. Messages carry the
method, the path and the host; never a header.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
import yarl

from collector.errors import ApiError
from collector.models import ErrorKind
from collector.protocol import Answer
from collector.transport import Request

POOL_SPARE = 4  # connections beyond `concurrency`: token calls, a page fetched alongside


class AioHttpTransport:
    """The wire: one aiohttp session (one connection pool, keep-alive) for the whole run."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, *, concurrency: int, timeout_s: float, tls: ssl.SSLContext | bool
    ) -> AsyncIterator[AioHttpTransport]:
        """A transport with its own pool of `concurrency` + spare connections, closed on exit."""
        connector = aiohttp.TCPConnector(
            limit=concurrency + POOL_SPARE, ssl=tls, keepalive_timeout=30.0
        )
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield cls(session)

    async def send(self, request: Request) -> Answer:
        """The whole answer to one request.

        Raises `ApiError` when no answer came: retryable `timeout` for a timeout, retryable
        `network` for a refused or reset connection or a body cut short, and non-retryable
        `network` for an invalid URL or a TLS certificate that is not trusted.
        """
        method = request.method
        target = yarl.URL(request.url, encoded=True)
        try:
            async with self.session.request(
                method, target, headers=request.headers, data=request.data, allow_redirects=False
            ) as response:
                body = await response.read()
                return Answer(response.status, response.headers, body)
        except Exception as exc:
            mapped = map_exception(exc, method, target)
            if mapped is exc:
                raise
            raise mapped from exc


def map_exception(exc: Exception, method: str, target: yarl.URL) -> Exception:
    """The `ApiError` an aiohttp or socket exception stands for, most specific first.

    Anything else is returned as it is (a bug, not an answer).
    """
    where = f"{method} {target.path}"
    if isinstance(exc, TimeoutError):  # asyncio's and aiohttp's timeouts alike
        return ApiError(
            f"no answer within the request timeout ({where})",
            kind=ErrorKind.TIMEOUT,
            retryable=True,
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ApiError(
            f"the TLS certificate of {target.host} is not trusted ({exc.certificate_error}):"
            " give the CA in [api] ca_bundle, or set [api] verify_tls = false",
            kind=ErrorKind.NETWORK,
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return ApiError(f"invalid URL {target}: check [api] base_url", kind=ErrorKind.NETWORK)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ApiError(
            f"the answer was cut short ({where}): {exc}", kind=ErrorKind.NETWORK, retryable=True
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ApiError(
            f"the server closed the connection ({where})", kind=ErrorKind.NETWORK, retryable=True
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return ApiError(
            f"connection to {target.host} failed: {exc or type(exc).__name__}",
            kind=ErrorKind.NETWORK,
            retryable=True,
        )
    return exc
