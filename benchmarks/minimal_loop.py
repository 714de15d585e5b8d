"""The CPU baseline of SPEC 8: a minimal aiohttp + orjson loop making the collector's calls.

It makes the same calls as `collector run` (the token, `/cvad/manage/me`, one GET a machine
with the same headers, the same concurrency) and writes the same record bytes (the four added
fields, then the session flattened with "."), into one file, with no retries, journal,
manifest or progress. An error answer stops it. It prints the same `machines ok` and
`duration ... s (X machines/s)` lines as the collector's summary, timed from the token
request to the last record (interpreter start-up and imports excluded).

The client id and secret come from CITRIX_CLIENT_ID and CITRIX_CLIENT_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote


def flatten_into(out: dict[str, Any], prefix: str, obj: Mapping[str, Any]) -> None:
    for key, value in obj.items():
        name = prefix + key
        if type(value) is dict and value:
            flatten_into(out, name + ".", value)
        elif type(value) is list:
            out[name] = [flat_item(item) for item in value]
        else:
            out[name] = value


def flat_item(value: Any) -> Any:
    if type(value) is dict:
        out: dict[str, Any] = {}
        flatten_into(out, "", value)
        return out
    if type(value) is list:
        return [flat_item(item) for item in value]
    return value


async def minimal_loop(args: argparse.Namespace) -> int:
    import aiohttp
    import orjson

    started = time.monotonic()
    names = [n.strip() for n in args.machines.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        form = {
            "grant_type": "client_credentials",
            "client_id": os.environ["CITRIX_CLIENT_ID"],
            "client_secret": os.environ["CITRIX_CLIENT_SECRET"],
        }
        async with http.post(args.token_url, data=form) as response:
            response.raise_for_status()
            token = orjson.loads(await response.read())["access_token"]
        headers = {
            "Accept": "application/json",
            "Authorization": f"CwsAuth Bearer={token}",
            "Citrix-CustomerId": args.customer_id,
            "User-Agent": "minimal-loop/1",
        }
        async with http.get(f"{args.base_url}/cvad/manage/me", headers=headers) as response:
            response.raise_for_status()
            site_id = orjson.loads(await response.read())["Customers"][0]["Sites"][0]["Id"]
        headers["Citrix-InstanceId"] = site_id
        run_id = str(uuid.uuid4())
        pending = iter(names)
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        with args.out.open("wb") as out:

            async def worker() -> None:
                for name in pending:
                    wire = quote(name.replace("\\", "|"), safe="")
                    url = f"{args.base_url}/cvad/manage/Machines/{wire}/Sessions"
                    call = headers | {"Citrix-TransactionId": str(uuid.uuid4())}
                    async with http.get(url, headers=call) as response:
                        response.raise_for_status()
                        body = await response.read()
                    at = datetime.now(UTC).isoformat(timespec="milliseconds")
                    head = {
                        "_machine": name,
                        "_collected_at": at.replace("+00:00", "Z"),
                        "_run_id": run_id,
                        "_site_id": site_id,
                    }
                    records = []
                    for session in orjson.loads(body)["Items"]:
                        flat = dict(head)
                        flatten_into(flat, "", session)
                        records.append(dumps(flat, option=newline))
                    out.write(b"".join(records))

            async with asyncio.TaskGroup() as group:
                for _ in range(args.concurrency):
                    group.create_task(worker())
    duration = time.monotonic() - started
    rate = len(names) / duration if duration > 0 else 0.0
    print(f"  machines ok      {len(names)}", file=sys.stderr)
    print(f"  duration         {duration:.1f} s ({rate:.1f} machines/s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--customer-id", required=True)
    parser.add_argument("--machines", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--concurrency", type=int, default=64)
    return asyncio.run(minimal_loop(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
