"""Fixtures for the simulator's tests: a served simulator, a client, a token, the headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from yarl import URL

from collector.simulator import Simulator, SimulatorConfig, serve

MACHINES = 60
SEED = 7


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with serve(SimulatorConfig(machines=MACHINES, seed=SEED)) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def fetch_token(client: aiohttp.ClientSession, sim: Simulator) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
    }
    async with client.post(sim.token_url, data=form) as response:
        assert response.status == 200
        token: str = (await response.json())["access_token"]
    return token


@pytest.fixture
async def token(client: aiohttp.ClientSession, sim: Simulator) -> str:
    return await fetch_token(client, sim)


def api_headers(sim: Simulator, token: str, **changes: str | None) -> dict[str, str]:
    """The headers a correct client sends; a change of None leaves that header out."""
    headers = {
        "Accept": "application/json",
        "Authorization": f"CwsAuth Bearer={token}",
        "Citrix-CustomerId": sim.customer_id,
        "Citrix-InstanceId": sim.site_id,
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


@pytest.fixture
def headers(sim: Simulator, token: str) -> dict[str, str]:
    return api_headers(sim, token)


def url(sim: Simulator, path: str) -> URL:
    """`path` under the simulator exactly as written: no re-encoding of `%7C` or `|`."""
    return URL(sim.base_url + path, encoded=True)


def sessions_path(key: str) -> str:
    return f"/cvad/manage/Machines/{key}/Sessions"


async def get(
    client: aiohttp.ClientSession, sim: Simulator, path: str, headers: dict[str, str]
) -> tuple[int, Any, Mapping[str, str]]:
    """Status, parsed JSON body (or text if it is not JSON) and headers of a GET."""
    async with client.get(url(sim, path), headers=headers) as response:
        raw = await response.read()
        try:
            body: Any = await response.json(content_type=None)
        except ValueError:
            body = raw.decode(errors="replace")
        return response.status, body, response.headers
