"""Configuration: TOML file, then `COLLECTOR_<SECTION>_<KEY>` environment variables, then flags.

The result is a frozen dataclass tree that mirrors the TOML sections (SPEC section 3). Secrets
never live here: the config names the environment variables (`*_env`) or the files (`*_file`,
as Kubernetes and Docker mount secrets) that hold them, and `resolve_credentials` reads those
into a `Credentials` whose repr hides them; a secret's value is never logged. This module reads
no environment itself: the CLI hands `os.environ` in as a mapping.

Precedence, highest first: `overrides` (command-line flags), `COLLECTOR_<SECTION>_<KEY>`
variables, the TOML file, the dataclass defaults. Every mistake is a `ConfigError` whose message
names where the value came from (`site.toml:12`, `COLLECTOR_COLLECT_RATE`, `command line`), the
key, and what to do; no message ever holds a secret.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import math
import os
import re
import stat
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from collector.errors import ConfigError

log = logging.getLogger("collector.config")


class Region(enum.StrEnum):
    US = "us"
    EU = "eu"
    AP_S = "ap-s"
    JP = "jp"
    ONPREM = "onprem"


class AuthMethod(enum.StrEnum):
    CLIENT_CREDENTIALS = "client_credentials"
    BEARER = "bearer"
    ONPREM = "onprem"


class InputFormat(enum.StrEnum):
    AUTO = "auto"
    TEXT = "text"
    CSV = "csv"
    NDJSON = "ndjson"


class Mode(enum.StrEnum):
    PER_MACHINE = "per-machine"
    SITE_WIDE = "site-wide"


class Compression(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"


class ArraysMode(enum.StrEnum):
    KEEP = "keep"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    region: Region = Region.US
    base_url: str = ""  # resolved: never empty after load_config
    customer_id: str = ""
    site_id: str = ""
    verify_tls: bool = True
    ca_bundle: str = ""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    method: AuthMethod = AuthMethod.CLIENT_CREDENTIALS
    token_url: str = ""  # resolved, with {customer_id} substituted, for client_credentials
    client_id_env: str = "CITRIX_CLIENT_ID"
    client_secret_env: str = "CITRIX_CLIENT_SECRET"
    bearer_token_env: str = "CITRIX_BEARER_TOKEN"
    username_env: str = "CITRIX_USERNAME"
    password_env: str = "CITRIX_PASSWORD"
    # The same secrets from files (a mounted Kubernetes or Docker secret); the variable wins.
    client_id_file: str = ""
    client_secret_file: str = ""
    bearer_token_file: str = ""
    username_file: str = ""
    password_file: str = ""


@dataclass(frozen=True, slots=True)
class InputConfig:
    machines: str = "machines.txt"
    format: InputFormat = InputFormat.AUTO
    column: str = ""
    all_machines: bool = False
    delivery_group: str = ""
    catalog: str = ""


@dataclass(frozen=True, slots=True)
class CollectConfig:
    mode: Mode = Mode.PER_MACHINE
    concurrency: int = 32
    rate: float = 10.0
    max_attempts: int = 6
    max_backoff_s: float = 120.0
    request_timeout_s: float = 60.0
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutputConfig:
    dir: str = "out"
    compress: Compression = Compression.NONE
    max_records_per_file: int = 500_000
    separator: str = "."
    arrays: ArraysMode = ArraysMode.KEEP


@dataclass(frozen=True, slots=True)
class Config:
    api: ApiConfig = field(default_factory=ApiConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    input: InputConfig = field(default_factory=InputConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    source: str = ""  # the TOML file it was read from, "" for none


@dataclass(frozen=True, slots=True)
class Credentials:
    """Secrets read from the environment or from files. The repr never shows them.

    `sources` says where each one came from (`{"client_secret": "file /run/secrets/x"}`), for
    messages that name what to check; it holds names and paths, never a value.
    """

    client_id: str = field(default="", repr=False)
    client_secret: str = field(default="", repr=False)
    bearer_token: str = field(default="", repr=False)
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """Every non-empty secret, for the log redaction filter."""
        return tuple(s for s in (self.client_secret, self.bearer_token, self.password) if s)


# --- the key table ---------------------------------------------------------------------------

SECTIONS: Mapping[str, type[Any]] = MappingProxyType(
    {
        "api": ApiConfig,
        "auth": AuthConfig,
        "input": InputConfig,
        "collect": CollectConfig,
        "output": OutputConfig,
    }
)

ENV_PREFIX = "COLLECTOR_"
# COLLECTOR_* variables that are read by the CLI, not settings: not reported as unknown.
RESERVED_ENV_VARS = frozenset({"COLLECTOR_CONFIG"})

ONPREM_CUSTOMER_ID = "CitrixOnPremises"
CLOUD_BASE_URLS: Mapping[Region, str] = MappingProxyType(
    {
        Region.US: "https://api.cloud.com",
        Region.EU: "https://api.cloud.com",
        Region.AP_S: "https://api.cloud.com",
        Region.JP: "https://api.citrixcloud.jp",
    }
)
CLOUD_TOKEN_URLS: Mapping[Region, str] = MappingProxyType(
    {
        Region.US: "https://api-us.cloud.com/cctrustoauth2/{customer_id}/tokens/clients",
        Region.EU: "https://api-eu.cloud.com/cctrustoauth2/{customer_id}/tokens/clients",
        Region.AP_S: "https://api-ap-s.cloud.com/cctrustoauth2/{customer_id}/tokens/clients",
        Region.JP: "https://api.citrixcloud.jp/cctrustoauth2/{customer_id}/tokens/clients",
    }
)

# A key that looks like a secret, and the `[auth]` key naming the variable it belongs in.
SECRET_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "client_id": "client_id_env",
        "client_secret": "client_secret_env",
        "secret": "client_secret_env",
        "bearer_token": "bearer_token_env",
        "token": "bearer_token_env",
        "username": "username_env",
        "password": "password_env",
    }
)

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
URL = re.compile(r"https?://[^/\s?#]+(/[^\s]*)?")
# Fields `Id` the projection must keep: deduplication, resume and verify key sessions on it.
REQUIRED_FIELD = "Id"
TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One settable key: its section, name, Python type and default."""

    section: str
    key: str
    type: Any  # str, bool, int, float, an enum class, or tuple[str, ...]
    default: Any

    @property
    def name(self) -> str:
        return f"[{self.section}] {self.key}"

    @property
    def env_var(self) -> str:
        return env_var_name(self.section, self.key)


def env_var_name(section: str, key: str) -> str:
    """The environment variable of a key: `COLLECTOR_<SECTION>_<KEY>`, upper case."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


@cache
def key_specs() -> Mapping[tuple[str, str], KeySpec]:
    """Every valid `(section, key)` with its spec, read from the dataclasses themselves."""
    specs: dict[tuple[str, str], KeySpec] = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            specs[(section, f.name)] = KeySpec(
                section, f.name, hints[f.name], getattr(defaults, f.name)
            )
    return MappingProxyType(specs)


def config_keys() -> frozenset[tuple[str, str]]:
    """The set of valid `(section, key)` pairs of the TOML file."""
    return frozenset(key_specs())


# --- loading ---------------------------------------------------------------------------------

Values = dict[tuple[str, str], Any]
Origins = dict[tuple[str, str], str]


def load_config(
    path: str | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read, merge, check and resolve the configuration (see `load_config_with_origins`)."""
    return load_config_with_origins(path, env, overrides)[0]


def load_config_with_origins(
    path: str | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Config, Mapping[tuple[str, str], str]]:
    """Read, merge, check and resolve the configuration; also say where each value came from.

    The origins map `(section, key)` to `path:line`, the variable's name or `command line`;
    a key missing from it has its default.

    `path=None` reads no file. `overrides` holds command-line values shaped like
    `{"collect": {"rate": 5.0}}`; a None value means the flag was not given. Strings in
    overrides are parsed as environment values are.

    Raises `ConfigError` if the file cannot be read or parsed, a section, key or `COLLECTOR_*`
    variable is unknown (the message suggests the nearest one), a secret is in the file, a value
    has the wrong type or range, or a required value (customer_id, base_url) is missing.
    """
    values: Values = {}
    origins: Origins = {}
    if path is not None:
        data, text = read_toml(path)
        merge(values, origins, file_values(data, text, path))
    merge(values, origins, env_values(env))
    if overrides:
        merge(values, origins, override_values(overrides))

    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        given = {key: value for (s, key), value in values.items() if s == section}
        sections[section] = cls(**given)
    config = Config(**sections, source=path or "")
    check_ranges(config, origins)
    return resolve(config, origins), MappingProxyType(origins)


def merge(values: Values, origins: Origins, layer: tuple[Values, Origins]) -> None:
    values.update(layer[0])
    origins.update(layer[1])


def read_toml(path: str) -> tuple[dict[str, Any], str]:
    """The parsed TOML file and its text (kept to find a key's line for messages)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: check the path given with -c/--config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {path} is a directory: give the path of a .toml file"
        ) from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = TOML_POSITION.search(message)
        if found:
            message = message[: found.start()]
            raise ConfigError(
                f"{path}:{found[1]}:{found[2]}: invalid TOML: {message} "
                f"(at line {found[1]}, column {found[2]})"
            ) from None
        raise ConfigError(f"{path}: invalid TOML: {message}") from None
    return data, text


def file_values(data: Mapping[str, Any], text: str, path: str) -> tuple[Values, Origins]:
    """Check and convert the TOML document; each origin is `path:line` where it can be found."""
    specs = key_specs()
    values: Values = {}
    origins: Origins = {}
    auth_table = data.get("auth")
    named_vars: Mapping[str, Any] = auth_table if isinstance(auth_table, dict) else {}
    for section, table in data.items():
        where = position(path, text, section, None)
        if not isinstance(table, dict):
            # A key before any [section] header.
            where = position(path, text, None, section)
            if section in SECRET_KEYS:
                raise ConfigError(f"{where}: {secret_message(section, section, named_vars)}")
            owners = [s for (s, k) in specs if k == section]
            if owners:
                raise ConfigError(
                    f"{where}: key {section} must be inside a section: write it under [{owners[0]}]"
                )
            if section in SECTIONS:
                raise ConfigError(
                    f"{where}: [{section}] must be a table of keys, got {show(table)}"
                )
            raise ConfigError(
                f"{where}: unknown key {section}; every key belongs in a section: "
                + ", ".join(f"[{s}]" for s in SECTIONS)
            )
        if section not in SECTIONS:
            raise ConfigError(f"{where}: {unknown_section_message(section)}")
        for key, value in table.items():
            kwhere = position(path, text, section, key)
            if key in SECRET_KEYS:
                label = f"[{section}] {key}"
                raise ConfigError(f"{kwhere}: {secret_message(label, key, named_vars)}")
            spec = specs.get((section, key))
            if spec is None:
                raise ConfigError(f"{kwhere}: {unknown_key_message(section, key)}")
            values[(section, key)] = from_toml(spec, value, kwhere)
            origins[(section, key)] = kwhere
    return values, origins


def env_values(env: Mapping[str, str]) -> tuple[Values, Origins]:
    """The `COLLECTOR_<SECTION>_<KEY>` variables, parsed to their key's type."""
    by_var = {spec.env_var: spec for spec in key_specs().values()}
    values: Values = {}
    origins: Origins = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV_VARS:
            continue
        spec = by_var.get(name)
        if spec is None:
            raise ConfigError(unknown_env_message(name, by_var))
        values[(spec.section, spec.key)] = from_text(spec, env[name], name)
        origins[(spec.section, spec.key)] = name
    return values, origins


def override_values(overrides: Mapping[str, Mapping[str, Any]]) -> tuple[Values, Origins]:
    """Command-line values: typed values are checked as TOML ones, strings parsed as env ones."""
    specs = key_specs()
    where = "command line"
    values: Values = {}
    origins: Origins = {}
    for section, table in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: {unknown_section_message(section)}")
        for key, value in table.items():
            if value is None:
                continue
            spec = specs.get((section, key))
            if spec is None:
                raise ConfigError(f"{where}: {unknown_key_message(section, key)}")
            if isinstance(value, str) and spec.type is not str:
                values[(section, key)] = from_text(spec, value, where)
            else:
                values[(section, key)] = from_toml(spec, value, where)
            origins[(section, key)] = where
    return values, origins


# --- values ----------------------------------------------------------------------------------


def from_toml(spec: KeySpec, value: Any, where: str) -> Any:
    """A typed value (TOML or flag) checked against the key's type."""
    t = spec.type
    if t is bool:
        if isinstance(value, bool):
            return value
        raise type_error(spec, "must be true or false", value, where)
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise type_error(spec, "must be an integer", value, where)
    if t is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return finite(spec, float(value), value, where)
        raise type_error(spec, "must be a number", value, where)
    if t is str:
        if isinstance(value, str):
            return value if spec.key == "separator" else value.strip()
        raise type_error(spec, "must be a string", value, where)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        if isinstance(value, str):
            return enum_value(spec, t, value, where)
        raise type_error(spec, f"must be one of {choices(t)}", value, where)
    if typing.get_origin(t) is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            items = tuple(v.strip() for v in value)
            if all(items):
                return items
            raise type_error(spec, "must not hold an empty name", value, where)
        raise type_error(spec, 'must be a list of strings, such as ["Id", "State"]', value, where)
    raise TypeError(f"no conversion for {spec.name} of type {t!r}")  # a new field type


def from_text(spec: KeySpec, text: str, where: str) -> Any:
    """An environment (or flag) string parsed to the key's type."""
    t = spec.type
    word = text.strip()
    if t is bool:
        if word.lower() in TRUE_WORDS:
            return True
        if word.lower() in FALSE_WORDS:
            return False
        raise type_error(spec, "must be true or false (or 1/0, yes/no)", text, where)
    if t is int:
        if re.fullmatch(r"[+-]?\d+", word):
            return int(word)
        raise type_error(spec, "must be an integer", text, where)
    if t is float:
        try:
            number = float(word)
        except ValueError:
            raise type_error(spec, "must be a number", text, where) from None
        return finite(spec, number, text, where)
    if typing.get_origin(t) is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    return from_toml(spec, text, where)


def finite(spec: KeySpec, number: float, value: Any, where: str) -> float:
    if math.isfinite(number):
        return number
    raise type_error(spec, "must be a finite number", value, where)


def enum_value(spec: KeySpec, t: type[enum.Enum], text: str, where: str) -> Any:
    word = text.strip().lower()
    try:
        return t(word)
    except ValueError:
        valid = [str(m.value) for m in t]
        close = difflib.get_close_matches(word, valid, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        raise type_error(spec, f"must be one of {choices(t)}", text, where, hint) from None


def choices(t: type[enum.Enum]) -> str:
    return ", ".join(str(m.value) for m in t)


def type_error(spec: KeySpec, rule: str, value: Any, where: str, hint: str = "") -> ConfigError:
    return ConfigError(f"{where}: {spec.name} {rule}, got {show(value)}{hint}")


def show(value: Any) -> str:
    """A value as the user would write it in TOML, cut short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)  # inf, -inf, nan: as TOML writes them
    elif isinstance(value, str | list | dict | int | float):
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- messages --------------------------------------------------------------------------------


def position(path: str, text: str, section: str | None, key: str | None) -> str:
    """`path:line` of a `[section]` header or of a key inside it, or `path` if not found.

    `section=None` looks for a key before the first header.
    """
    current: str | None = None
    key_line = re.compile(rf"""["']?{re.escape(key)}["']?\s*=""") if key is not None else None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("[") and "]" in line:
            current = line.strip("[").split("]", 1)[0].strip().strip("\"'")
            if key is None and current is not None and current == section:
                return f"{path}:{number}"
        elif key_line is not None and current == section and key_line.match(line):
            return f"{path}:{number}"
    return path


def unknown_section_message(section: str) -> str:
    close = difflib.get_close_matches(section, list(SECTIONS), n=1)
    if close:
        return f'unknown section [{section}]; did you mean "{close[0]}"?'
    return f"unknown section [{section}]; the sections are " + ", ".join(f"[{s}]" for s in SECTIONS)


def unknown_key_message(section: str, key: str) -> str:
    specs = key_specs()
    if section not in SECTIONS:
        return unknown_section_message(section)
    valid = [k for (s, k) in specs if s == section]
    owners = [s for (s, k) in specs if k == key]
    if owners:
        return f"unknown key [{section}] {key}; it belongs in [{owners[0]}]"
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f'unknown key [{section}] {key}; did you mean "{close[0]}"?'
    return f"unknown key [{section}] {key}; the keys of [{section}] are " + ", ".join(valid)


def unknown_env_message(name: str, by_var: Mapping[str, KeySpec]) -> str:
    rest = name[len(ENV_PREFIX) :].lower()
    section, _, key = rest.partition("_")
    if key in SECRET_KEYS:
        return f"{name}: {secret_message(f'[{section}] {key}', key, {})}"
    close = difflib.get_close_matches(name, list(by_var), n=1)
    if close:
        return f"unknown environment variable {name}; did you mean {close[0]}?"
    return (
        f"unknown environment variable {name}; settings are COLLECTOR_<SECTION>_<KEY>, such as "
        "COLLECTOR_COLLECT_RATE: unset it or correct its name"
    )


def secret_message(label: str, key: str, named_vars: Mapping[str, Any]) -> str:
    """Why `label` (a key holding a secret) is refused, and which variable to use instead."""
    env_key = SECRET_KEYS[key]
    var = named_vars.get(env_key)
    if not isinstance(var, str) or not ENV_NAME.fullmatch(var):
        var = getattr(AuthConfig(), env_key)
    file_key = env_key.removesuffix("_env") + "_file"
    return (
        f"{label} must not be in the configuration: secrets live in the environment or in a "
        f"file. Put it in the variable {var} (named by [auth] {env_key}), or in a file named "
        f"by [auth] {file_key}, and remove it here"
    )


# --- checks and resolution -------------------------------------------------------------------


def origin(origins: Origins, *keys: tuple[str, str]) -> str:
    """Where the first of `keys` that was set came from, as a message prefix."""
    for k in keys:
        if k in origins:
            return f"{origins[k]}: "
    return ""


def check_ranges(config: Config, origins: Origins) -> None:
    """Raises `ConfigError` naming the key if a number or string is out of its range."""
    c, o = config.collect, config.output
    rules: list[tuple[str, str, bool, str]] = [
        ("collect", "concurrency", 1 <= c.concurrency <= 1024, "must be between 1 and 1024"),
        ("collect", "rate", c.rate >= 0, "must be 0 (no client-side limit) or more"),
        ("collect", "max_attempts", c.max_attempts >= 1, "must be at least 1"),
        ("collect", "max_backoff_s", c.max_backoff_s > 0, "must be more than 0 seconds"),
        ("collect", "request_timeout_s", c.request_timeout_s > 0, "must be more than 0 seconds"),
        ("output", "max_records_per_file", o.max_records_per_file >= 1, "must be at least 1"),
        ("output", "separator", o.separator != "", "must not be empty"),
        ("output", "dir", o.dir != "", 'must not be empty: give a directory, or "-" for stdout'),
    ]
    for section, key, ok, rule in rules:
        if not ok:
            value = getattr(getattr(config, section), key)
            at = origin(origins, (section, key))
            raise ConfigError(f"{at}[{section}] {key} {rule}, got {show(value)}")
    for f in dataclasses.fields(AuthConfig):
        if f.name.endswith("_env") and not ENV_NAME.fullmatch(getattr(config.auth, f.name)):
            # The value is not shown: a secret pasted here by mistake must not reach a log.
            raise ConfigError(
                f"{origin(origins, ('auth', f.name))}[auth] {f.name} must be the name of an "
                "environment variable (letters, digits and _), not the secret itself"
            )
    check_fields(c.fields, origin(origins, ("collect", "fields")))
    i = config.input
    if not i.all_machines and not i.machines:
        raise ConfigError(
            f"{origin(origins, ('input', 'machines'))}[input] machines is empty: give a path, "
            '"-" for standard input, or set [input] all_machines = true'
        )
    if i.delivery_group and i.catalog:
        raise ConfigError(
            f"{origin(origins, ('input', 'catalog'), ('input', 'delivery_group'))}"
            "set [input] delivery_group or [input] catalog, not both"
        )


def check_fields(fields: tuple[str, ...], at: str) -> None:
    """Raises `ConfigError` if a `[collect] fields` projection is one the run cannot use.

    The service projects top-level properties only, so a nested path is refused; and `Id`
    must stay, as deduplication, resume and `collector verify` key sessions on it.
    """
    if not fields:
        return
    nested = [name for name in fields if "." in name or "/" in name]
    if nested:
        raise ConfigError(
            f"{at}[collect] fields names a nested path ({', '.join(nested)}): the API projects "
            "top-level properties only; name the top-level property, such as "
            f'"{nested[0].replace("/", ".").split(".")[0]}"'
        )
    if REQUIRED_FIELD not in fields:
        raise ConfigError(
            f'{at}[collect] fields leaves out "{REQUIRED_FIELD}": deduplication and --resume '
            f'rely on each session\'s Id; add "{REQUIRED_FIELD}" to the list'
        )


def resolve(config: Config, origins: Origins) -> Config:
    """Fill base_url, customer_id and token_url from the region; check what they need."""
    api, auth = config.api, config.auth
    at_region = origin(origins, ("api", "region"), ("api", "base_url"))
    customer_id = api.customer_id
    if api.region is Region.ONPREM:
        customer_id = customer_id or ONPREM_CUSTOMER_ID
        if not api.base_url:
            raise ConfigError(
                f'{at_region}[api] region = "onprem" needs [api] base_url, the address of a '
                "Delivery Controller such as https://ddc01.example.com: set [api] base_url "
                "or COLLECTOR_API_BASE_URL"
            )
    elif not customer_id:
        raise ConfigError(
            f'{at_region}[api] customer_id is required for region "{api.region.value}" (Citrix '
            "Cloud console, Identity and Access Management, API Access): set [api] customer_id "
            "or COLLECTOR_API_CUSTOMER_ID"
        )
    if auth.method is AuthMethod.ONPREM and not api.base_url:
        raise ConfigError(
            f'{origin(origins, ("auth", "method"))}[auth] method = "onprem" signs in at a '
            "Delivery Controller: set [api] base_url (or COLLECTOR_API_BASE_URL) to its address"
        )
    base_url = checked_url(api.base_url or CLOUD_BASE_URLS[api.region], "api", "base_url", origins)
    if base_url.lower().endswith("/cvad/manage"):
        raise ConfigError(
            f"{origin(origins, ('api', 'base_url'))}[api] base_url must leave out /cvad/manage "
            f"(it is added to every call), got {show(api.base_url)}"
        )

    token_url = auth.token_url
    if not token_url and auth.method is AuthMethod.CLIENT_CREDENTIALS:
        if api.region is Region.ONPREM:
            raise ConfigError(
                f'{at_region}[api] region = "onprem" has no Citrix Cloud token endpoint: set '
                '[auth] method = "onprem" (or "bearer"), or give [auth] token_url'
            )
        token_url = CLOUD_TOKEN_URLS[api.region]
    if token_url:
        for placeholder in ("{customer_id}", "{customerId}"):
            token_url = token_url.replace(placeholder, customer_id)
        token_url = checked_url(token_url, "auth", "token_url", origins)

    return dataclasses.replace(
        config,
        api=dataclasses.replace(api, base_url=base_url, customer_id=customer_id),
        auth=dataclasses.replace(auth, token_url=token_url),
    )


def checked_url(url: str, section: str, key: str, origins: Origins) -> str:
    url = url.rstrip("/")
    if has_userinfo(url):
        # The URL is not shown: the part before @ may be a password.
        raise ConfigError(
            f"{origin(origins, (section, key))}[{section}] {key} must not hold a user name or "
            "password (user:password@host): remove them from the URL and give the credentials "
            "through [auth]"
        )
    if not URL.fullmatch(url):
        raise ConfigError(
            f"{origin(origins, (section, key))}[{section}] {key} must be an http(s) URL such "
            f"as https://api.cloud.com, got {show(url)}"
        )
    return url


def has_userinfo(url: str) -> bool:
    """True if the URL's authority (scheme or not) holds `user@` or `user:password@`."""
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    return "@" in authority


# --- credentials and the manifest ------------------------------------------------------------

# For each method: (Credentials field, [auth] key naming the variable, what the variable holds).
# The `[auth]` key naming its file is the same with `_file` for `_env`.
NEEDED_SECRETS: Mapping[AuthMethod, tuple[tuple[str, str, str], ...]] = MappingProxyType(
    {
        AuthMethod.CLIENT_CREDENTIALS: (
            ("client_id", "client_id_env", "the API client's ID"),
            ("client_secret", "client_secret_env", "the API client's secret"),
        ),
        AuthMethod.BEARER: (("bearer_token", "bearer_token_env", "a Citrix Cloud bearer token"),),
        AuthMethod.ONPREM: (
            ("username", "username_env", "the administrator, as DOMAIN\\user"),
            ("password", "password_env", "the administrator's password"),
        ),
    }
)
# Identifiers and tokens never hold whitespace: a trailing newline from `$(cat file)` is dropped.
# Secrets and passwords lose only a trailing line break.
STRIPPED = frozenset({"client_id", "bearer_token", "username"})


@dataclass(frozen=True, slots=True)
class SecretFile:
    """What was read from a secret file: its text, and whether others may read it."""

    text: str = field(repr=False)
    shared: bool = False


def is_shared(mode: int, gid: int, own_groups: frozenset[int]) -> bool:
    """True if a file of this mode and group can be read by a user other than its owner.

    Group-readable counts, except for a group of our own: Kubernetes mounts a secret as
    `defaultMode: 0440` with the pod's `fsGroup`, which only the collector's user is in.
    """
    if mode & stat.S_IROTH:
        return True
    return bool(mode & stat.S_IRGRP) and gid not in own_groups


def read_secret_file(path: str) -> SecretFile:
    """Read a secret file (the I/O edge of `resolve_credentials`).

    Raises `OSError` as `open` does; `UnicodeDecodeError` if the file is not UTF-8.
    """
    with open(path, encoding="utf-8") as f:
        info = os.fstat(f.fileno())
        own = frozenset({os.getegid(), *os.getgroups()})
        return SecretFile(f.read(), shared=is_shared(info.st_mode, info.st_gid, own))


def file_key(env_key: str) -> str:
    """The `[auth]` key naming the file of a secret: `client_secret_env` -> `client_secret_file`."""
    return env_key.removesuffix("_env") + "_file"


def secret_value(attr: str, text: str) -> str:
    """A secret as given: identifiers trimmed, secrets only of their final line break."""
    return text.strip() if attr in STRIPPED else text.removesuffix("\n").removesuffix("\r")


def resolve_credentials(
    config: Config,
    env: Mapping[str, str],
    read_file: Callable[[str], SecretFile] = read_secret_file,
) -> Credentials:
    """Read the secrets of `[auth] method` from the variables `[auth]` names, or their files.

    The variable wins when both are set. A file that others (or a group we are not in) may
    read is used, with a warning naming the file (never its content).

    Raises `ConfigError` naming every variable (and file key) that is missing or empty, or the
    file that cannot be read; never a value.
    """
    found: dict[str, str] = {}
    sources: dict[str, str] = {}
    missing: list[tuple[str, str, str]] = []
    auth = config.auth
    for attr, key, what in NEEDED_SECRETS[auth.method]:
        var = getattr(auth, key)
        path = getattr(auth, file_key(key))
        value = env.get(var, "")
        if value.strip():
            found[attr], sources[attr] = secret_value(attr, value), var
        elif path:
            found[attr] = secret_value(
                attr, read_secret(path, f"[auth] {file_key(key)}", read_file)
            )
            sources[attr] = f"file {path}"
            if not found[attr].strip():
                raise ConfigError(
                    f"[auth] {file_key(key)}: the file {path} is empty: write {what} in it, "
                    f"or export {var}"
                )
        else:
            missing.append((var, key, what))
    if missing:
        names = " and ".join(var for var, _, _ in missing)
        whats = "; ".join(what for _, _, what in missing)
        keys = " and ".join(key for _, key, _ in missing)
        files = " and ".join(file_key(key) for _, key, _ in missing)
        one = len(missing) == 1
        raise ConfigError(
            f'[auth] method = "{auth.method.value}" reads its credentials from the '
            f"environment or from files, but {names} {'is' if one else 'are'} not set: export "
            f"{'it' if one else 'them'} ({whats}), name "
            f"{'another variable' if one else 'other variables'} in [auth] {keys}, or "
            f"{'a file' if one else 'files'} in [auth] {files}"
        )
    return Credentials(**found, sources=sources)


def read_secret(path: str, label: str, read_file: Callable[[str], SecretFile]) -> str:
    """The text of a secret file; warns if others may read it.

    Raises `ConfigError` naming the key and the file if it cannot be read.
    """
    try:
        secret = read_file(path)
    except FileNotFoundError:
        raise ConfigError(
            f"{label}: the file {path} does not exist: check the path (and that the secret is "
            "mounted there)"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"{label}: the file {path} cannot be read: permission denied; let the user running "
            "collector read it"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: the file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(
            f"{label}: the file {path} cannot be read: {exc.strerror or type(exc).__name__}"
        ) from None
    if secret.shared:
        log.warning(
            "%s: the secret file %s can be read by group or others: chmod 600 it (or 400)",
            label,
            path,
        )
    return secret.text


def public_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data for the manifest (it holds variable names, no secrets)."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, tuple):
            return list(value)
        return value

    out: dict[str, Any] = {
        section: {
            f.name: plain(getattr(getattr(config, section), f.name))
            for f in dataclasses.fields(cls)
        }
        for section, cls in SECTIONS.items()
    }
    out["source"] = config.source
    return out
