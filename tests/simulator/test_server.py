"""Starting the simulator: in the test's loop, in a thread for blocking clients, and for good."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from collector.simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_CUSTOMER_ID,
    Faults,
    SimulatorConfig,
    run_forever,
    serve,
    start_in_thread,
)
from collector.simulator.server import make_state, resolve_faults
from tests.simulator.conftest import api_headers, fetch_token, get, sessions_path


def get_machine_sessions(
    base: str, bearerToken: str, customerid: str, siteid: str, nameOrId: str
) -> Any:
    """The Python example of Citrix's "get sessions on a machine" page, with a base URL."""
    request_uri = (base + "/cvad/manage/Machines/{0}/Sessions").format(nameOrId)
    headers = {
        "Authorization": "CWSAuth Bearer=%s" % bearerToken,  # noqa: UP031 - as published
        "Citrix-CustomerId": customerid,
        "Citrix-InstanceId": siteid,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }

    response = requests.get(request_uri, headers=headers)

    return response.json()


class TestInThread:
    def test_the_published_requests_example_works(self) -> None:
        """Citrix's own `requests` example gets a machine's sessions by Id and DOMAIN|NAME."""
        with start_in_thread(SimulatorConfig(machines=20, seed=3)) as sim:
            form = {
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            }
            token = requests.post(sim.token_url, data=form, timeout=10).json()["access_token"]
            by_id = get_machine_sessions(
                sim.base_url, token, sim.customer_id, sim.site_id, sim.site.machine_id(4)
            )
            by_name = get_machine_sessions(
                sim.base_url,
                token,
                sim.customer_id,
                sim.site_id,
                sim.site.name(4).replace("\\", "|"),
            )

        assert by_id == by_name == {"Items": sim.site.sessions(4)}
        assert sim.counters.sessions_served == {4: 2}

    def test_stop_ends_the_thread_and_frees_the_port(self) -> None:
        """After stop() the thread is gone and the port refuses connections; stop twice is fine."""
        sim = start_in_thread(SimulatorConfig(machines=2))
        sim.stop()
        sim.stop()

        assert sim.thread is not None and not sim.thread.is_alive()
        with pytest.raises(requests.ConnectionError):
            requests.get(sim.base_url + "/cvad/manage/me", timeout=2)

    def test_serves_on_the_loop_it_is_given(self) -> None:
        """A loop factory (uvloop's, for the benches) runs the server, and it answers."""
        uvloop = pytest.importorskip("uvloop")
        with start_in_thread(
            SimulatorConfig(machines=2), loop_factory=uvloop.new_event_loop
        ) as sim:
            response = requests.get(sim.base_url + "/cvad/manage/me", timeout=5)
            loop = sim.loop

        assert isinstance(loop, uvloop.Loop)
        assert response.status_code == 406  # no Accept: application/json; the server answered

    def test_a_start_failure_is_raised_in_the_caller(self) -> None:
        """A port already in use raises OSError in the starting thread."""
        with start_in_thread(SimulatorConfig(machines=2)) as first:
            port = int(first.base_url.rsplit(":", 1)[1])
            with pytest.raises(OSError):
                start_in_thread(SimulatorConfig(machines=2, port=port))

    def test_faults_set_from_the_test_thread_apply(self) -> None:
        """Knobs changed from the test's thread reach the server's loop."""
        with start_in_thread(SimulatorConfig(machines=2)) as sim:
            sim.faults.forbid_all = True
            headers = {"Accept": "application/json"}
            form = {
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            }
            token = requests.post(sim.token_url, data=form, timeout=10).json()["access_token"]
            headers |= api_headers(sim, token)
            response = requests.get(
                sim.base_url + "/cvad/manage/Machines", headers=headers, timeout=10
            )

        assert response.status_code == 403


class TestServe:
    async def test_the_handle_describes_the_server(self) -> None:
        """serve() binds 127.0.0.1 on a free port and hands back URLs and default credentials."""
        async with serve() as sim:
            assert sim.base_url.startswith("http://127.0.0.1:")
            assert not sim.base_url.endswith(":0")
            assert sim.token_url == (
                f"{sim.base_url}/cctrustoauth2/{DEFAULT_CUSTOMER_ID}/tokens/clients"
            )
            assert (sim.client_id, sim.client_secret) == (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            assert sim.site_id == sim.site.site_id
            assert len(sim.site) == 1000

    async def test_counters_see_every_request(self) -> None:
        """Requests by endpoint, statuses, served machines and the peak rate are counted."""
        async with serve(SimulatorConfig(machines=10)) as sim, aiohttp.ClientSession() as client:
            headers = api_headers(sim, await fetch_token(client, sim))
            for i in range(10):
                await get(client, sim, sessions_path(sim.site.machine_id(i)), headers)
            await get(client, sim, "/cvad/manage/me", headers)

        counters = sim.counters
        assert counters.requests == {"token": 1, "machine_sessions": 10, "me": 1}
        assert counters.statuses == {200: 12}
        assert counters.sessions_served == dict.fromkeys(range(10), 1)
        assert counters.peak_rps >= 10

    @pytest.mark.parametrize(
        ("config", "expected"),
        [
            pytest.param(SimulatorConfig(faults="hostile"), (0.0, 0.0, 5.0), id="profile"),
            pytest.param(
                SimulatorConfig(faults="hostile", token_lifetime_s=3, rate_limit=50),
                (0.0, 50.0, 3.0),
                id="overridden",
            ),
            pytest.param(
                SimulatorConfig(faults=Faults(latency_ms=9), latency_jitter_ms=2),
                (9.0, 0.0, 3600.0),
                id="faults-object",
            ),
        ],
    )
    def test_config_knobs_override_the_profile(
        self, config: SimulatorConfig, expected: tuple[float, float, float]
    ) -> None:
        """Knobs left at None keep the profile's value; given ones replace it."""
        faults = resolve_faults(config)

        assert (faults.latency_ms, faults.rate_limit, faults.token_lifetime_s) == expected


async def test_run_forever_announces_writes_the_list_and_stops_on_cancel(tmp_path: Path) -> None:
    """run_forever writes the machine list, announces URLs and credentials, serves, and stops."""
    lines: list[str] = []
    announced = asyncio.Event()

    def announce(line: str) -> None:
        lines.append(line)
        if line.startswith("export "):
            announced.set()

    listing = tmp_path / "machines.txt"
    config = SimulatorConfig(machines=12, seed=4, write_machines=listing)
    task = asyncio.create_task(run_forever(config, announce))
    async with asyncio.timeout(10):
        await announced.wait()
    text = "\n".join(lines)
    base_url = next(line.split()[-1] for line in lines if "base URL" in line)
    async with (
        aiohttp.ClientSession() as client,
        client.get(base_url + "/cvad/manage/me") as response,
    ):
        status = response.status
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert status == 406  # served: the gate answered
    assert len(listing.read_text().splitlines()) == 12
    for needle in ("token URL", DEFAULT_CUSTOMER_ID, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET):
        assert needle in text
    assert (
        f"export CITRIX_CLIENT_ID={DEFAULT_CLIENT_ID} CITRIX_CLIENT_SECRET={DEFAULT_CLIENT_SECRET}"
        in lines
    )


def test_prerender_keeps_every_machine_and_serves_the_same_bytes() -> None:
    """`prerender` encodes every machine's answer up front, past the LRU's size, and the
    bodies are those a simulator without it generates on demand."""
    machines = 1100  # more than the LRU keeps
    warm = make_state(SimulatorConfig(machines=machines, prerender=True))
    cold = make_state(SimulatorConfig(machines=machines))
    assert len(warm.bodies) == machines
    assert not cold.bodies
    for index in (0, 617, machines - 1):
        assert warm.sessions_body(index) == cold.sessions_body(index)


def test_the_simulator_imports_nothing_else_from_collector() -> None:
    """The simulator is an independent implementation: no import of collector's other modules."""
    root = Path(__file__).resolve().parents[2] / "collector" / "simulator"
    for module in root.glob("*.py"):
        for line in module.read_text().splitlines():
            if line.startswith(("import collector", "from collector")):
                assert line.startswith("from collector.simulator"), f"{module.name}: {line}"
