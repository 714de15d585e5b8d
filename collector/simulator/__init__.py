"""The embedded Citrix DaaS simulator (SPEC section 7): a second, independent implementation of
`citrix-api.md` on loopback, for `collector simulate`, `collector demo`, tests and benchmarks.

It imports nothing from the rest of `collector`: if the client and the simulator shared code
they would agree on the same bug, and no test could tell.
"""

from __future__ import annotations

from collector.simulator.app import Counters
from collector.simulator.data import Site, mean_record_size
from collector.simulator.faults import DENY_NAMES, PROFILES, Fault, Faults, parse_deny, profile
from collector.simulator.server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_CUSTOMER_ID,
    DEFAULT_ONPREM_PASSWORD,
    DEFAULT_ONPREM_USERNAME,
    Simulator,
    SimulatorConfig,
    ThreadedSimulator,
    run_forever,
    serve,
    start_in_thread,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_CUSTOMER_ID",
    "DEFAULT_ONPREM_PASSWORD",
    "DEFAULT_ONPREM_USERNAME",
    "DENY_NAMES",
    "PROFILES",
    "Counters",
    "Fault",
    "Faults",
    "Simulator",
    "SimulatorConfig",
    "Site",
    "ThreadedSimulator",
    "mean_record_size",
    "parse_deny",
    "profile",
    "run_forever",
    "serve",
    "start_in_thread",
]
