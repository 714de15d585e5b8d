"""Citrix's model as the tests read it: a jsonschema validator per model, and a strict decode.

The schema (`tests/fixtures/citrix-schema.json`, a copy of the shared contract, so a clean clone
has it) is JSON Schema 2020-12, taken from Citrix's generated Go SDK. `strict_decode` is a
second, independent reading of the same file that decodes as that SDK does: an unknown
property, a missing required one, a value of the wrong type or outside its enum is refused.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from tests.conftest import load_fixture

Schema = dict[str, Any]
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


@cache
def schema() -> Schema:
    loaded: Schema = load_fixture("citrix-schema.json")
    return loaded


@cache
def validator(model: str) -> Draft202012Validator:
    """A validator of `model` (a name under `$defs`), format checking off."""
    root = schema()
    wrapped = {"$schema": root["$schema"], "$defs": root["$defs"], "$ref": f"#/$defs/{model}"}
    Draft202012Validator.check_schema(wrapped)
    return Draft202012Validator(wrapped)


def violations(model: str, value: Any) -> list[str]:
    """Every way `value` breaks `model`, as `path: message` lines (empty: it validates)."""
    errors = validator(model).iter_errors(value)
    return [f"{e.json_path}: {e.message[:200]}" for e in errors]


class DecodeError(ValueError):
    """Raised when a value does not decode strictly into its model."""


def strict_decode(model: str, value: Any, path: str = "$") -> None:
    """Decode `value` as `model` the way the generated SDK does, or raise `DecodeError`."""
    check(schema()["$defs"][model], value, path)


def check(node: Schema, value: Any, path: str) -> None:
    if "$ref" in node:
        strict_decode(node["$ref"].rsplit("/", 1)[1], value, path)
        return
    if "anyOf" in node:
        for option in node["anyOf"]:
            try:
                check(option, value, path)
            except DecodeError:
                continue
            return
        raise DecodeError(f"{path}: {value!r:.80} matches none of {node['anyOf']}")
    kind = node.get("type")
    if kind is not None and not is_type(value, kind):
        raise DecodeError(f"{path}: {value!r:.80} is not {kind}")
    if "enum" in node and value not in node["enum"]:
        raise DecodeError(f"{path}: {value!r} is not one of {node['enum']}")
    if kind == "array":
        for n, item in enumerate(value):
            check(node["items"], item, f"{path}[{n}]")
    if kind == "object" or "properties" in node:
        properties = node.get("properties", {})
        unknown = set(value) - set(properties)
        if unknown and node.get("additionalProperties") is False:
            raise DecodeError(f"{path}: unknown properties {sorted(unknown)}")
        missing = set(node.get("required", [])) - set(value)
        if missing:
            raise DecodeError(f"{path}: missing required {sorted(missing)}")
        for key, item in value.items():
            check(properties[key], item, f"{path}.{key}")


def is_type(value: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[kind])


def model_properties(model: str) -> set[str]:
    return set(schema()["$defs"][model]["properties"])
