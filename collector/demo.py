"""`collector demo`: the main job against the embedded simulator, with no credentials.

It starts the simulator in-process on a free port, writes its machine list, and calls the very
`app.run` that `collector run` calls; only the Config differs.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from collector.app import RunOptions, StdStreams, run
from collector.config import (
    ApiConfig,
    AuthConfig,
    CollectConfig,
    Config,
    Credentials,
    InputConfig,
    OutputConfig,
)
from collector.errors import ConfigError
from collector.rundir import DIRECTORY_MODE, run_files
from collector.simulator import SimulatorConfig, profile, serve
from collector.sinks import PRIVATE_MODE, private_opener

MARKER = ".collector-demo"
DEMO_SEED = 2026


def demo_config(base_url: str, token_url: str, customer_id: str, out: Path) -> Config:
    return Config(
        api=ApiConfig(base_url=base_url, customer_id=customer_id),
        auth=AuthConfig(token_url=token_url),
        input=InputConfig(machines=str(out / "machines.txt")),
        collect=CollectConfig(concurrency=16, rate=0.0, max_backoff_s=2.0, request_timeout_s=10.0),
        output=OutputConfig(dir=str(out), max_records_per_file=500),
        source="(demo)",
    )


async def demo(out: Path, machines: int, streams: StdStreams) -> int:
    """Run a full collection against a small simulated site with mild faults; return the exit code.

    Raises `ConfigError` if `out` holds a run that the demo did not write.
    """
    if run_files(out) and not (out / MARKER).exists():
        raise ConfigError(f"{out} holds a run that is not a demo's; pass another --out directory")
    out.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    with open(out / MARKER, "w", opener=private_opener) as marker:
        marker.write("written by collector demo; safe to delete\n")
    stderr = streams.stderr or sys.stderr
    # The flaky profile, with fewer random 429s: each one pauses the whole run for a second.
    faults = replace(profile("flaky"), p_429=0.004)
    sim_config = SimulatorConfig(
        machines=machines,
        seed=DEMO_SEED,
        faults=faults,
        latency_ms=20.0,
        token_lifetime_s=5.0,
        shape="sparse",
    )
    async with serve(sim_config) as sim:
        machine_list = out / "machines.txt"
        sim.site.write_machine_list(machine_list, form="mixed")
        machine_list.chmod(PRIVATE_MODE)  # the demo's directory is a run's: nothing for others
        print(
            f"collector demo: a simulated Citrix DaaS site of {machines} machines at {sim.base_url}"
            " (with throttling, 5xx answers, bad bodies and tokens that expire every 5 s)\n",
            file=stderr,
            flush=True,
        )
        config = demo_config(sim.base_url, sim.token_url, sim.customer_id, out)
        credentials = Credentials(client_id=sim.client_id, client_secret=sim.client_secret)
        result = await run(config, credentials, RunOptions(overwrite=True), streams)
    print(
        f"\nopen {out}/sessions-00001.ndjson for the records, {out}/manifest.json for the counts"
        f" and checksums, {out}/errors.ndjson for the machines that failed.",
        file=stderr,
        flush=True,
    )
    return result.exit_code
