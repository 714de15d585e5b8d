"""The seed's approach, as a baseline: one `requests.get` after another (SPEC section 8).

This is what the Citrix documentation's Python example does (`get_machine_sessions` in
/work/shared/seeds/), wrapped in the smallest loop that makes it a collection: get a token by
POSTing the client-credentials form, read the site id from `/cvad/manage/me`, then for each
machine of the list one GET of `/cvad/manage/Machines/{nameOrId}/Sessions` with the
`CWSAuth Bearer=` header, writing each session as one JSON line. No concurrency, no retries,
no flattening: an error answer stops the script.

The client id and secret come from CITRIX_CLIENT_ID and CITRIX_CLIENT_SECRET. At the end it
prints, to standard error, the same `duration ... s (X machines/s)` line as the collector's
summary, timed from the token request to the last line written (interpreter start-up and
imports excluded, as in the collector's own figure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests


def get_token(token_url: str, client_id: str, client_secret: str) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    response = requests.post(token_url, data=form, timeout=60)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def get_site_id(base_url: str, customer_id: str, token: str) -> str:
    headers = {
        "Accept": "application/json",
        "Authorization": f"CWSAuth Bearer={token}",
        "Citrix-CustomerId": customer_id,
    }
    response = requests.get(f"{base_url}/cvad/manage/me", headers=headers, timeout=60)
    response.raise_for_status()
    site_id: str = response.json()["Customers"][0]["Sites"][0]["Id"]
    return site_id


def get_machine_sessions(
    base_url: str, token: str, customer_id: str, site_id: str, name_or_id: str
) -> Any:
    """The seed's function; `DOMAIN\\NAME` goes on the wire as `DOMAIN%7CNAME`."""
    wire = quote(name_or_id.replace("\\", "|"), safe="")
    request_uri = f"{base_url}/cvad/manage/Machines/{wire}/Sessions"
    headers = {
        "Authorization": f"CWSAuth Bearer={token}",
        "Citrix-CustomerId": customer_id,
        "Citrix-InstanceId": site_id,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    response = requests.get(request_uri, headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--customer-id", required=True)
    parser.add_argument("--machines", required=True, type=Path, help="one name a line")
    parser.add_argument("--out", required=True, type=Path, help="NDJSON file to write")
    parser.add_argument("--limit", type=int, default=0, help="only the first N machines")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.machines.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if args.limit > 0:
        names = names[: args.limit]

    started = time.monotonic()
    token = get_token(
        args.token_url, os.environ["CITRIX_CLIENT_ID"], os.environ["CITRIX_CLIENT_SECRET"]
    )
    site_id = get_site_id(args.base_url, args.customer_id, token)
    sessions = 0
    with args.out.open("w", encoding="utf-8") as out:
        for name in names:
            answer = get_machine_sessions(args.base_url, token, args.customer_id, site_id, name)
            for session in answer["Items"]:
                out.write(json.dumps(session) + "\n")
                sessions += 1
    duration = time.monotonic() - started
    rate = len(names) / duration if duration > 0 else 0.0
    print(f"  machines ok      {len(names)}", file=sys.stderr)
    print(f"  sessions         {sessions}", file=sys.stderr)
    print(f"  duration         {duration:.1f} s ({rate:.1f} machines/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
