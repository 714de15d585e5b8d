"""Session → flat record: nested objects joined with the separator, arrays kept or serialized.

Pure and hot (it runs once per session): `make_flattener` settles the options once and returns
a closure, so the per-record path does not branch on configuration (structlog's
`_make_stamper` habit). Every field of the answer is kept, unknown ones and nulls included, in
the API's order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from collector.config import ArraysMode

Flattener = Callable[[Mapping[str, Any]], dict[str, Any]]


def make_flattener(separator: str = ".", arrays: ArraysMode = ArraysMode.KEEP) -> Flattener:
    """Build the function that flattens one session.

    `{"Connection": {"Protocol": "Hdx"}}` becomes `{"Connection.Protocol": "Hdx"}`. An empty
    object stays as `{}` under its key, so no field disappears. Arrays stay arrays whose objects
    are flattened the same way (`arrays = "keep"`) or become their JSON text (`"json"`).
    """

    def keep_array(values: list[Any]) -> list[Any]:
        return [convert(value) for value in values]

    def json_array(values: list[Any]) -> str:
        return orjson.dumps(values).decode()

    array_value: Callable[[list[Any]], Any] = json_array
    if arrays is ArraysMode.KEEP:
        array_value = keep_array

    def convert(value: Any) -> Any:
        # Inside an array: objects flatten on their own, nested arrays keep their shape.
        if type(value) is dict:
            out: dict[str, Any] = {}
            flatten_into(out, "", value)
            return out
        if type(value) is list:
            return [convert(item) for item in value]
        return value

    def flatten_into(out: dict[str, Any], prefix: str, obj: Mapping[str, Any]) -> None:
        for key, value in obj.items():
            name = prefix + key
            kind = type(value)
            if kind is dict and value:
                flatten_into(out, name + separator, value)
            elif kind is list:
                out[name] = array_value(value)
            else:
                out[name] = value

    def flatten(session: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        flatten_into(out, "", session)
        return out

    return flatten


RecordEncoder = Callable[[str, str, list[dict[str, Any]]], bytes]


def make_record_encoder(flatten: Flattener, *, run_id: str, site_id: str) -> RecordEncoder:
    """Build the function that turns one machine's sessions into NDJSON bytes.

    Each record starts with the added fields `_machine`, `_collected_at`, `_run_id` and
    `_site_id`, then the flattened session. The result is one bytes object for the whole
    machine, so a machine's records are written (and committed) together.
    """
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE

    def encode(machine: str, collected_at: str, sessions: list[dict[str, Any]]) -> bytes:
        head = {
            "_machine": machine,
            "_collected_at": collected_at,
            "_run_id": run_id,
            "_site_id": site_id,
        }
        return b"".join(dumps(head | flatten(session), option=newline) for session in sessions)

    return encode
