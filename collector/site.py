"""Read-only calls for operators: `collector machines` (`collector check` is in check.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from collector.config import Config, Credentials
from collector.connect import open_client
from collector.errors import OutputError
from collector.models import RunStats
from collector.sinks import PART, describe_os_error, private_opener

MACHINE_FIELDS = ("Id", "Name", "DnsName", "SessionCount", "RegistrationState")


def machine_row(machine: dict[str, Any]) -> dict[str, Any]:
    """The columns `collector machines` lists (SPEC 2): refs reduced to their names."""
    row = {key: machine.get(key) for key in MACHINE_FIELDS}
    row["DeliveryGroup"] = (machine.get("DeliveryGroup") or {}).get("Name")
    row["MachineCatalog"] = (machine.get("MachineCatalog") or {}).get("Name")
    return row


async def list_machines(
    config: Config, credentials: Credentials, target: Path | None, stdout: BinaryIO
) -> int:
    """Write the site's machines as NDJSON to `target` (whole, by rename) or standard output.

    The file is private as the run's files are (`sinks.PRIVATE_MODE`): names and counts of a
    site are nobody else's business.
    """
    stats = RunStats()
    count = 0
    part = target.with_name(target.name + PART) if target else None
    try:
        handle = open(part, "wb", opener=private_opener) if part else stdout  # noqa: SIM115 - closed below
    except OSError as exc:
        raise OutputError(describe_os_error(exc, part or "stdout")) from exc
    try:
        async with open_client(config, credentials, stats) as client:
            await client.resolve_site_id()
            pages = client.machines(config.input.delivery_group, config.input.catalog)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    handle.write(
                        b"".join(
                            orjson.dumps(machine_row(m), option=orjson.OPT_APPEND_NEWLINE)
                            for m in page
                        )
                    )
                    count += len(page)
        handle.flush()
        if part and target:
            handle.close()
            part.replace(target)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, target or "stdout")) from exc
    finally:
        if part:
            handle.close()
    return count
