"""`collector check`: walk every step a run needs and say, for each, ok or what to fix.

The steps: the configuration (with the effective settings, secrets masked, and where each
came from), the token host, the credentials, the site, one `Machines` call and one call for a
machine's sessions. Mapping an error to its step and its fix is pure (`diagnose`, `network_fix`,
`call_fix`); only `run_checks` does I/O, through the client's public calls. No line ever holds
a secret: credentials are shown as `****` with the variable or file they came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collector.config import (
    NEEDED_SECRETS,
    AuthMethod,
    Config,
    Credentials,
    Region,
    key_specs,
)
from collector.connect import open_client
from collector.errors import ApiError, AuthError, CollectorError
from collector.models import ErrorKind, RunStats

# A check should answer in seconds, not wait out a run's patient retries: two attempts show
# a flaky answer for what it is, and a short timeout names an unreachable host quickly.
CHECK_ATTEMPTS = 2
CHECK_BACKOFF_S = 2.0
CHECK_TIMEOUT_S = 20.0
MASK = "****"

STEP_NAMES = (
    "configuration",
    "token host",
    "credentials",
    "site",
    "Machines call",
    "Sessions call",
)
# Words in a connection error that tell its cause apart (aiohttp and the OS phrase them so).
DNS_WORDS = ("name or service not known", "nodename nor servname", "getaddrinfo", "name resolution")
TLS_WORDS = ("[ssl", "sslerror", "certificate", "tls")  # not "ssl:", in every aiohttp message
REFUSED_WORDS = ("connection refused", "errno 111", "connect call failed")


class Status(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"  # works, but should be looked at (verify_tls = false)
    PROBLEM = "problem"
    SKIPPED = "skipped"  # not tried: an earlier step failed, or the method has no such step


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the check: its name, its status and one line of detail (or the fix)."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.name:<14} {self.status.value}: {self.detail}"


def exit_code(steps: list[Step]) -> int:
    """0 when no step has a problem; 2 for a configuration problem; 3 for any other."""
    problems = [s for s in steps if s.status is Status.PROBLEM]
    if not problems:
        return 0
    return 2 if problems[0].name == "configuration" else 3


# --- the configuration step (pure) -----------------------------------------------------------


def settings_lines(
    config: Config, origins: Mapping[tuple[str, str], str], credentials: Credentials
) -> list[str]:
    """The effective settings, one a line, each with where it came from; secrets masked."""
    lines = []
    for (section, key), spec in key_specs().items():
        value = getattr(getattr(config, section), key)
        if (section, key) in origins:
            where = origins[(section, key)]
        elif value != spec.default:
            where = "derived from [api] region and customer_id"
        else:
            where = "default"
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        lines.append(f"  [{section}] {key} = {as_toml(value)}  ({where})")
    for attr, env_key, _ in NEEDED_SECRETS[config.auth.method]:
        source = credentials.sources.get(attr, getattr(config.auth, env_key))
        lines.append(f"  {attr} = {MASK}  ({source})")
    return lines


def as_toml(value: Any) -> str:
    """A setting as TOML writes it, whole (a path is worth showing in full here)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def configuration_steps(config: Config) -> list[Step]:
    """The configuration step once it loaded, and its warnings."""
    steps = [Step("configuration", Status.OK, f"{config.source or 'no file, defaults'} is valid")]
    if not config.api.verify_tls:
        steps.append(
            Step(
                "configuration",
                Status.WARNING,
                "[api] verify_tls = false: certificates are not checked, so anyone on the path "
                "can read the token; give the CA in [api] ca_bundle instead",
            )
        )
    return steps


def configuration_problem(exc: CollectorError) -> list[Step]:
    """The steps when the configuration or the credentials cannot be read."""
    return [Step("configuration", Status.PROBLEM, str(exc)), *skipped_after("configuration")]


def skipped_after(name: str) -> list[Step]:
    rest = STEP_NAMES[STEP_NAMES.index(name) + 1 :]
    return [Step(n, Status.SKIPPED, f"not tried: the {name} step failed") for n in rest]


# --- mapping an error to its step and its fix (pure) ------------------------------------------


def secret_sources(config: Config, credentials: Credentials) -> str:
    """Where the credentials of `[auth] method` came from: variables or files, never values."""
    names = []
    for attr, env_key, _ in NEEDED_SECRETS[config.auth.method]:
        names.append(credentials.sources.get(attr, getattr(config.auth, env_key)))
    return " and ".join(names)


def token_host(config: Config) -> str:
    if config.auth.method is AuthMethod.ONPREM:
        return f"{config.api.base_url}/cvad/manage/Tokens"
    return config.auth.token_url


def network_fix(message: str, kind: ErrorKind, url: str, key: str) -> str:
    """What to do about a request that got no answer from `url` (named by setting `key`)."""
    text = message.lower()
    if kind is ErrorKind.TIMEOUT:
        return (
            f"no answer from {url} within the request timeout: a firewall or proxy may drop "
            f"the connection; check {key} and that this host may reach it"
        )
    if any(word in text for word in DNS_WORDS):
        return f"the host of {url} does not resolve (DNS): check {key} and [api] region"
    if any(word in text for word in REFUSED_WORDS):
        return f"nothing answers at {url} (connection refused): check the host and port in {key}"
    if any(word in text for word in TLS_WORDS):
        return (
            f"the TLS connection to {url} failed ({message}): for a private CA give its PEM file "
            f"in [api] ca_bundle; check that {key} is https on a TLS port"
        )
    return f"{url} cannot be reached ({message}): check {key} and the network"


def call_fix(name: str, exc: ApiError, config: Config) -> str:
    """What to do about a refused API call of step `name`."""
    status = exc.status
    if exc.kind in (ErrorKind.NETWORK, ErrorKind.TIMEOUT):
        return network_fix(exc.message, exc.kind, config.api.base_url, "[api] base_url")
    if status == 404:
        return (
            f"{exc.message}: [api] base_url ({config.api.base_url}) looks wrong; it is the API's "
            "address without /cvad/manage, such as https://api.cloud.com"
        )
    if status == 400 and config.api.site_id and name != "Sessions call":
        return (
            f"{exc.message}: [api] site_id ({config.api.site_id}) is not a site of customer "
            f"{config.api.customer_id}; correct it, or leave it empty to discover it with /me"
        )
    if status == 403:
        what = {"Machines call": "machines", "Sessions call": "sessions"}.get(name, "the site")
        return (
            f"{exc.message}: the API client lacks permission to read {what}; give it a role with "
            "read access to machines and sessions (Citrix Cloud > Identity and Access "
            "Management > API Access, or Full Administrator on-premises)"
        )
    if status == 406:
        return (
            f"{exc.message}: the API refused the Accept header; collector sends exactly "
            "Accept: application/json, so a proxy or gateway on the way rewrites it; let it "
            "pass the header unchanged"
        )
    return f"{exc.message}: check [api] base_url, customer_id and site_id"


def credentials_fix(exc: AuthError, config: Config, credentials: Credentials) -> str:
    """What to do when the token endpoint or the API refused our credentials.

    The refusal names the `[auth]` variables; where a secret came from a file instead, the
    file is named in the variable's place.
    """
    message = str(exc).rstrip(".")
    for attr, env_key, _ in NEEDED_SECRETS[config.auth.method]:
        source = credentials.sources.get(attr, "")
        if source.startswith("file "):
            message = message.replace(getattr(config.auth, env_key), source)
    region = (
        ""
        if config.api.region is Region.ONPREM
        else f"; check also that [api] region ({config.api.region.value}) is the customer's"
    )
    return f"{message}. Read from {secret_sources(config, credentials)}{region}"


def diagnose(
    name: str, exc: CollectorError, config: Config, credentials: Credentials
) -> list[Step]:
    """The failed step (`name` made the call that raised `exc`) and the steps skipped after it.

    An `AuthError` belongs to the token host when no answer came (or a wrong address
    answered), else to the credentials; an `ApiError` (or a setup refusal caused by one)
    belongs to the step that made the call.
    """
    if isinstance(exc, AuthError):
        cause = exc.__cause__
        if isinstance(cause, ApiError) and config.auth.method is not AuthMethod.BEARER:
            host = token_host(config)
            key = (
                "[api] base_url" if config.auth.method is AuthMethod.ONPREM else "[auth] token_url"
            )
            if cause.kind in (ErrorKind.NETWORK, ErrorKind.TIMEOUT):
                fix = network_fix(cause.message, cause.kind, host, key)
            else:
                fix = (
                    f"{host} answered {cause.message}: it is not a token endpoint; check {key} "
                    "and [api] region (us, eu, ap-s, jp)"
                )
            return [Step("token host", Status.PROBLEM, fix), *skipped_after("token host")]
        fix = credentials_fix(exc, config, credentials)
        return [Step("credentials", Status.PROBLEM, fix), *skipped_after("credentials")]
    api_error = exc if isinstance(exc, ApiError) else exc.__cause__
    if not isinstance(api_error, ApiError):
        return [Step(name, Status.PROBLEM, str(exc)), *skipped_after(name)]
    return [Step(name, Status.PROBLEM, call_fix(name, api_error, config)), *skipped_after(name)]


def passed(name: str, config: Config, credentials: Credentials) -> Step:
    """A step that a later call proved: the token host or the credentials."""
    if name == "token host":
        if config.auth.method is AuthMethod.BEARER:
            return Step(name, Status.SKIPPED, "[auth] method = bearer: no token endpoint")
        return Step(name, Status.OK, f"{token_host(config)} answered")
    return Step(name, Status.OK, f"accepted ({secret_sources(config, credentials)})")


# --- the calls -------------------------------------------------------------------------------


def check_settings(config: Config) -> Config:
    """The configuration with a check's quick retries and timeout."""
    collect = config.collect
    return dataclasses.replace(
        config,
        collect=dataclasses.replace(
            collect,
            max_attempts=min(collect.max_attempts, CHECK_ATTEMPTS),
            max_backoff_s=min(collect.max_backoff_s, CHECK_BACKOFF_S),
            request_timeout_s=min(collect.request_timeout_s, CHECK_TIMEOUT_S),
        ),
    )


async def run_checks(config: Config, credentials: Credentials) -> list[Step]:
    """Every step after the configuration, in order; the first failure skips the rest."""
    config = check_settings(config)
    steps: list[Step] = []
    name = "site"
    try:
        async with open_client(config, credentials, RunStats()) as client:
            site_id = await client.resolve_site_id()
            how = "configured, checked by the Machines call" if config.api.site_id else "from /me"
            steps += [
                passed("token host", config, credentials),
                passed("credentials", config, credentials),
                Step("site", Status.OK, f"{site_id} ({how})"),
            ]
            name = "Machines call"
            first = await first_machine_page(client.machines(*machine_scope(config)))
            steps.append(
                Step(
                    name,
                    Status.OK,
                    f"{config.api.base_url}/cvad/manage/Machines answered "
                    f"({len(first)} machines on the first page)",
                )
            )
            name = "Sessions call"
            machine = machine_name(first[0]) if first else ""
            if not machine:
                steps.append(Step(name, Status.SKIPPED, "the site lists no machine to ask for"))
                return steps
            answer = await client.get_machine_sessions(machine)
            steps.append(
                Step(name, Status.OK, f"machine {machine} answered ({len(answer.items)} sessions)")
            )
    except CollectorError as exc:
        failed = diagnose(name, exc, config, credentials)
        done = {step.name for step in steps}
        for before in STEP_NAMES[1 : STEP_NAMES.index(failed[0].name)]:
            if before not in done:
                steps.append(passed(before, config, credentials))
        steps += failed
    return steps


def machine_scope(config: Config) -> tuple[str, str]:
    return config.input.delivery_group, config.input.catalog


async def first_machine_page(pages: Any) -> list[dict[str, Any]]:
    """The first page of a machine listing (the generator is closed after it)."""
    async with contextlib.aclosing(pages):
        async for page in pages:
            return list(page)
    return []


def machine_name(machine: dict[str, Any]) -> str:
    for key in ("Name", "Id"):
        value = machine.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def summary(steps: list[Step]) -> str:
    problems = sum(s.status is Status.PROBLEM for s in steps)
    if problems:
        plural = "s" if problems > 1 else ""
        return f"{problems} step{plural} failed: fix the first one and run check again"
    return "every step passed: `collector run` will work with this configuration"
