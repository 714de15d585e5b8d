"""Attack helpers: the simulator and the real CLI (from the e2e tier), and a hostile API.

`EchoingApi` is a small aiohttp server on 127.0.0.1 that behaves as a badly written
gateway does: its error answers quote the request back, headers and form body included, so
the bearer token and the client secret come back to the collector inside error messages.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.conftest import simulator, write_config

__all__ = ["EchoingApi", "echoing_api", "echoing_config", "simulator"]

CUSTOMER = "attackcust"
CLIENT_ID = "attack-client"
SITE_ID = "00000000-0000-4000-8000-00000000a77a"
START_TIMEOUT_S = 10.0


@dataclass
class EchoingApi:
    """What the hostile server accepts and issues, and where it listens once started.

    Machines named `ok-*` answer one session; `e400-*`, `e404-*` and `e500-*` answer that
    status with a `detail` quoting every request header. The token endpoint issues `token`
    for `secret`, unless `refuse_tokens`: then it answers 400 quoting the form body.
    """

    secret: str
    token: str = "tok-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"
    refuse_tokens: bool = False
    base_url: str = ""
    seen: list[str] = field(default_factory=list)  # request paths, in order

    client_id: str = CLIENT_ID

    @property
    def client_secret(self) -> str:  # the name `cli_env` reads
        return self.secret

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/cctrustoauth2/{CUSTOMER}/tokens/clients"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cctrustoauth2/{customer}/tokens/clients", self.tokens)
        app.router.add_get("/cvad/manage/me", self.me)
        app.router.add_get("/cvad/manage/Machines/{name}/Sessions", self.sessions)
        return app

    async def tokens(self, request: web.Request) -> web.Response:
        self.seen.append(request.path)
        body = await request.text()
        if self.refuse_tokens:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": f"the request body could not be processed: {body}",
                },
                status=400,
            )
        return web.json_response(
            {"token_type": "bearer", "access_token": self.token, "expires_in": "3600"}
        )

    async def me(self, request: web.Request) -> web.Response:
        self.seen.append(request.path)
        site = {"Id": SITE_ID, "Name": "attack site"}
        return web.json_response({"Customers": [{"Id": CUSTOMER, "Sites": [site]}]})

    async def sessions(self, request: web.Request) -> web.Response:
        self.seen.append(request.path)
        name = request.match_info["name"]
        if name.startswith("ok-"):
            return web.json_response({"Items": [{"Id": f"session-{name}", "UserName": "u"}]})
        status = int(name[1:4])
        quoted = "; ".join(f"{key}: {value}" for key, value in request.headers.items())
        body = {
            "type": "https://errors-api.cloud.com/common/invalidRequest",
            "detail": f"the request could not be served. Request headers: {quoted}",
        }
        return web.json_response(body, status=status)


@pytest.fixture
def echoing_api() -> Iterator[Any]:
    """A factory: `echoing_api(secret=..., refuse_tokens=...)` starts one on 127.0.0.1."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="echoing-api", daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    async def serve(api: EchoingApi) -> str:
        runner = web.AppRunner(api.app(), access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def start(**options: Any) -> EchoingApi:
        api = EchoingApi(**options)
        future = asyncio.run_coroutine_threadsafe(serve(api), loop)
        api.base_url = future.result(START_TIMEOUT_S)
        return api

    yield start
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(START_TIMEOUT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(START_TIMEOUT_S)
    loop.close()


def echoing_config(tmp_path: Path, api: EchoingApi, machines: list[str], out: Path) -> Path:
    """A configuration for `api`: one request at a time, two attempts, short waits."""
    listed = tmp_path / "machines.txt"
    listed.write_text("".join(f"{name}\n" for name in machines))
    return write_config(
        tmp_path / "site.toml",
        {
            "api": {"base_url": api.base_url, "customer_id": CUSTOMER},
            "auth": {"token_url": api.token_url},
            "input": {"machines": str(listed)},
            "collect": {
                "concurrency": 1,
                "rate": 0,
                "max_attempts": 2,
                "max_backoff_s": 0.2,
                "request_timeout_s": 5,
            },
            "output": {"dir": str(out)},
        },
    )
