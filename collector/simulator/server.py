"""Starting and stopping the simulator: in the caller's event loop, in a thread, or for good.

Owns `SimulatorConfig` (with the documented default credentials) and the handle tests and
tools get back. `serve()` follows aiohttp's `BaseTestServer`: bind 127.0.0.1 on port 0, read
the real port back, and yield a handle with the base URL, the credentials, the seeded site,
the live fault knobs and the server-side counters. `start_in_thread()` runs the same server
in a thread with its own loop, for tests that drive the real CLI as a subprocess;
`run_forever()` backs `collector simulate`. Access logging is off: the server is a benchmark
target and must stay cheap per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import shlex
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web

from collector.simulator.app import Counters, Credentials, State, build_app
from collector.simulator.data import ListForm, Site
from collector.simulator.faults import Faults, copy_faults, profile
from collector.simulator.shapes import Shape

DEFAULT_CUSTOMER_ID = "demo-customer"
DEFAULT_CLIENT_ID = "demo-client-id"
DEFAULT_CLIENT_SECRET = "demo-client-secret"
DEFAULT_ONPREM_USERNAME = "DEMO\\ctxadmin"
DEFAULT_ONPREM_PASSWORD = "demo-password"


@dataclass
class SimulatorConfig:
    """How to start a simulator. Knobs left at None keep the fault profile's value.

    `faults` is a profile name (`none`, `flaky`, `hostile`) or a `Faults`; `latency_ms`,
    `latency_jitter_ms`, `rate_limit` (requests/s, 0: none), `max_in_flight` (sessions calls
    served at once, 429 above; 0: none), `token_lifetime_s`, `session_page` (sessions a
    machine's answer holds at most, 0: all), `repeat_token` (a broken pager that repeats its
    token) and `deny` (endpoint name to the status it always answers) override it.
    `shape` is `sparse` (what a tenant typically returns, about 1.7 KB a session) or `full`
    (every property of the model). `write_machines`, if set, is where the machine list (in
    `machine_list_form`) is written before `run_forever` announces the server. `prerender`
    encodes every machine's sessions before serving and keeps them (benchmarks: about 5 KB a
    machine sparse, 23 KB full).
    """

    host: str = "127.0.0.1"
    port: int = 0
    machines: int = 1000
    seed: int = 1
    latency_ms: float | None = None
    latency_jitter_ms: float | None = None
    rate_limit: float | None = None
    max_in_flight: int | None = None
    session_page: int | None = None
    repeat_token: bool | None = None
    deny: dict[str, int] | None = None
    faults: str | Faults = "none"
    token_lifetime_s: float | None = None
    customer_id: str = DEFAULT_CUSTOMER_ID
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    onprem_username: str = DEFAULT_ONPREM_USERNAME
    onprem_password: str = DEFAULT_ONPREM_PASSWORD
    write_machines: str | Path | None = None
    machine_list_form: ListForm = "name"
    empty_fraction: float = 0.15
    shape: Shape = "sparse"
    prerender: bool = False


def resolve_faults(config: SimulatorConfig) -> Faults:
    """The starting knobs: the profile (or a copy of the given Faults) with overrides applied."""
    if isinstance(config.faults, str):
        faults = profile(config.faults)
    else:
        faults = copy_faults(config.faults)
    if config.latency_ms is not None:
        faults.latency_ms = config.latency_ms
    if config.latency_jitter_ms is not None:
        faults.latency_jitter_ms = config.latency_jitter_ms
    if config.rate_limit is not None:
        faults.rate_limit = config.rate_limit
    if config.max_in_flight is not None:
        faults.max_in_flight = config.max_in_flight
    if config.session_page is not None:
        faults.session_page = config.session_page
    if config.repeat_token is not None:
        faults.repeat_token = config.repeat_token
    if config.deny is not None:
        faults.deny = dict(config.deny)
    if config.token_lifetime_s is not None:
        faults.token_lifetime_s = config.token_lifetime_s
    return faults


class Simulator:
    """A running simulator: where it listens, what it accepts, what it serves, what it saw."""

    def __init__(self, state: State, base_url: str) -> None:
        self.state = state
        self.base_url = base_url
        creds = state.credentials
        self.customer_id = creds.customer_id
        self.client_id = creds.client_id
        self.client_secret = creds.client_secret
        self.onprem_username = creds.onprem_username
        self.onprem_password = creds.onprem_password
        self.token_url = f"{base_url}/cctrustoauth2/{creds.customer_id}/tokens/clients"
        self.onprem_token_url = f"{base_url}/cvad/manage/Tokens"
        self.site: Site = state.site
        self.site_id = state.site.site_id

    @property
    def counters(self) -> Counters:
        return self.state.counters

    @property
    def faults(self) -> Faults:
        """The live knobs: edit them, or assign a `Faults` or a profile name, at any time."""
        return self.state.faults

    @faults.setter
    def faults(self, value: Faults | str) -> None:
        self.state.faults = profile(value) if isinstance(value, str) else value

    def revoke_tokens(self) -> None:
        """Invalidate every issued token: data calls get 401 until a new one is fetched."""
        self.state.revoke_tokens()

    def __repr__(self) -> str:
        return f"Simulator({self.base_url}, {self.site!r})"


def make_state(config: SimulatorConfig) -> State:
    credentials = Credentials(
        customer_id=config.customer_id,
        client_id=config.client_id,
        client_secret=config.client_secret,
        onprem_username=config.onprem_username,
        onprem_password=config.onprem_password,
    )
    site = Site(
        config.seed, config.machines, empty_fraction=config.empty_fraction, shape=config.shape
    )
    # The fault stream is seeded too, so a run's faults repeat as long as requests arrive
    # in the same order.
    state = State(site, credentials, resolve_faults(config), random.Random(config.seed))
    if config.prerender:
        state.prerender()
    return state


@asynccontextmanager
async def serve(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    """Serve a simulator on `config.host:config.port` (port 0: a free one) until the block ends."""
    config = config or SimulatorConfig()
    state = make_state(config)
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        listener = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await listener.start()
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        yield Simulator(state, f"http://{host}:{port}")
    finally:
        state.stopping.set()  # releases hung requests at once
        await runner.cleanup()


class ThreadedSimulator(Simulator):
    """A simulator serving from its own thread and event loop; `stop()` ends it."""

    def __init__(
        self, sim: Simulator, loop: asyncio.AbstractEventLoop, stop_event: asyncio.Event
    ) -> None:
        super().__init__(sim.state, sim.base_url)
        self.loop = loop
        self.stop_event = stop_event
        self.thread: threading.Thread | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread; calling it twice is harmless."""
        if not self.loop.is_closed():
            # The loop may close between the check and the call.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.stop_event.set)
        if self.thread is not None:
            self.thread.join(timeout)

    def __enter__(self) -> ThreadedSimulator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(
    config: SimulatorConfig | None = None,
    timeout: float = 30.0,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> ThreadedSimulator:
    """Start a simulator in a daemon thread; return once it listens.

    Raises whatever starting the server raised (such as `OSError` for a port in use), or
    `TimeoutError` if it did not start within `timeout` seconds.
    """
    ready: queue.Queue[ThreadedSimulator | BaseException] = queue.Queue()

    async def main() -> None:
        try:
            async with serve(config) as sim:
                stop_event = asyncio.Event()
                ready.put(ThreadedSimulator(sim, asyncio.get_running_loop(), stop_event))
                await stop_event.wait()
        except Exception as exc:
            # Handed to the starting thread rather than raised here: an exception escaping a
            # thread is only printed, and pytest would turn it into a warning.
            ready.put(exc)

    def serve_in_thread() -> None:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())

    thread = threading.Thread(target=serve_in_thread, name="simulator", daemon=True)
    thread.start()
    try:
        outcome = ready.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"the simulator did not start within {timeout} s") from None
    if isinstance(outcome, BaseException):
        thread.join(timeout)
        raise outcome
    outcome.thread = thread
    return outcome


def announcement(
    sim: Simulator, profile_name: str = "custom", listed: tuple[Path, int] | None = None
) -> list[str]:
    """The lines `collector simulate` prints: where the simulator is and what it accepts."""
    faults = sim.faults
    lines = [
        f"Citrix DaaS simulator: {len(sim.site)} machines (seed {sim.site.seed}), faults"
        f" {profile_name}, tokens live {faults.token_lifetime_s:g} s, rate limit"
        f" {f'{faults.rate_limit:g}/s' if faults.rate_limit else 'none'}"
        + (f", {faults.max_in_flight} sessions calls in flight" if faults.max_in_flight else ""),
        f"  base URL       {sim.base_url}",
        f"  token URL      {sim.token_url}",
        f"  customer id    {sim.customer_id}",
        f"  site id        {sim.site_id}",
        f"  client id      {sim.client_id}",
        f"  client secret  {sim.client_secret}",
        f"  on-premises    POST {sim.onprem_token_url} with Basic {sim.onprem_username}"
        f":{sim.onprem_password}",
    ]
    if listed is not None:
        lines.append(f"  machine list   {listed[0]} ({listed[1]} machines)")
    lines.append(
        f"export CITRIX_CLIENT_ID={shlex.quote(sim.client_id)}"
        f" CITRIX_CLIENT_SECRET={shlex.quote(sim.client_secret)}"
    )
    return lines


async def run_forever(config: SimulatorConfig, announce: Callable[[str], None]) -> None:
    """Serve until cancelled; write the machine list first if asked, then announce the server."""
    async with serve(config) as sim:
        listed = None
        if config.write_machines:
            path = Path(config.write_machines)
            sim.site.write_machine_list(path, form=config.machine_list_form)
            listed = (path, len(sim.site))
        name = config.faults if isinstance(config.faults, str) else "custom"
        for line in announcement(sim, name, listed):
            announce(line)
        await asyncio.Event().wait()
