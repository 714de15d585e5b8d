"""`collector check`: each step's ok, and each failure's fix in one line (SPEC 2).

The mapping from an error to its fix is tested as plain functions; every failure a user can
meet is also produced for real, against the simulator on 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from collector.check import (
    STEP_NAMES,
    Status,
    Step,
    configuration_problem,
    configuration_steps,
    exit_code,
    network_fix,
    run_checks,
    settings_lines,
)
from collector.config import Credentials, load_config, load_config_with_origins
from collector.errors import ConfigError
from collector.models import ErrorKind
from collector.simulator import SimulatorConfig, start_in_thread

SECRET = "check-Secret-value-0123456789"
TIME_LIMIT_S = 60


@pytest.fixture
def sim() -> Iterator[Any]:
    with start_in_thread(SimulatorConfig(machines=30, seed=3, client_secret=SECRET)) as handle:
        yield handle


def sim_env(sim: Any, **extra: str) -> dict[str, str]:
    env = {
        "COLLECTOR_API_BASE_URL": sim.base_url,
        "COLLECTOR_API_CUSTOMER_ID": sim.customer_id,
        "COLLECTOR_AUTH_TOKEN_URL": sim.token_url,
        "COLLECTOR_COLLECT_MAX_BACKOFF_S": "0.1",
    }
    env.update({f"COLLECTOR_{k.upper()}": v for k, v in extra.items()})
    return env


def good_credentials(sim: Any, secret: str | None = None) -> Credentials:
    return Credentials(
        client_id=sim.client_id,
        client_secret=SECRET if secret is None else secret,
        sources={"client_id": "CITRIX_CLIENT_ID", "client_secret": "CITRIX_CLIENT_SECRET"},
    )


async def checked(env: dict[str, str], credentials: Credentials) -> dict[str, Step]:
    with anyio.fail_after(TIME_LIMIT_S):
        steps = await run_checks(load_config(None, env), credentials)
    assert [s.name for s in steps] == list(STEP_NAMES[1:])
    return {s.name: s for s in steps}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def only_problem(steps: dict[str, Step]) -> Step:
    problems = [s for s in steps.values() if s.status is Status.PROBLEM]
    assert len(problems) == 1, problems
    assert "\n" not in problems[0].detail
    return problems[0]


class TestAgainstTheSimulator:
    async def test_every_step_passes(self, sim: Any) -> None:
        """Against a healthy simulator every step is ok and names what answered."""
        steps = await checked(sim_env(sim), good_credentials(sim))

        assert all(s.status is Status.OK for s in steps.values()), steps
        assert sim.site_id in steps["site"].detail
        assert "machines on the first page" in steps["Machines call"].detail
        assert exit_code(list(steps.values())) == 0

    async def test_a_wrong_secret_names_the_variable(self, sim: Any) -> None:
        """A refused secret is a credentials problem naming the variable, never the value."""
        steps = await checked(sim_env(sim), good_credentials(sim, secret="wrong-secret-1234"))

        problem = only_problem(steps)
        assert problem.name == "credentials"
        assert "invalid_client" in problem.detail
        assert "CITRIX_CLIENT_SECRET" in problem.detail
        assert "wrong-secret-1234" not in problem.detail
        assert steps["token host"].status is Status.OK
        assert steps["site"].status is Status.SKIPPED

    async def test_a_wrong_secret_file_names_the_file(self, sim: Any) -> None:
        """A refused secret read from a file names that file."""
        credentials = Credentials(
            client_id=sim.client_id,
            client_secret="wrong-secret-1234",
            sources={"client_id": "CITRIX_CLIENT_ID", "client_secret": "file /run/secrets/cs"},
        )

        problem = only_problem(await checked(sim_env(sim), credentials))

        assert problem.name == "credentials"
        assert "the secret in file /run/secrets/cs" in problem.detail
        assert "CITRIX_CLIENT_SECRET" not in problem.detail

    async def test_nothing_listening_at_the_token_host(self, sim: Any) -> None:
        """A token URL where nothing listens is a token host problem: connection refused."""
        url = f"http://127.0.0.1:{closed_port()}/tokens"

        steps = await checked(sim_env(sim, auth_token_url=url), good_credentials(sim))

        problem = only_problem(steps)
        assert problem.name == "token host"
        assert "connection refused" in problem.detail
        assert "[auth] token_url" in problem.detail
        assert steps["credentials"].status is Status.SKIPPED

    async def test_tls_to_a_plain_http_port(self, sim: Any) -> None:
        """https:// to a server that speaks plain HTTP is named a TLS problem, with the CA key."""
        url = sim.token_url.replace("http://", "https://")

        problem = only_problem(
            await checked(sim_env(sim, auth_token_url=url), good_credentials(sim))
        )

        assert problem.name == "token host"
        assert "TLS connection" in problem.detail
        assert "[api] ca_bundle" in problem.detail

    async def test_a_wrong_token_path_points_to_the_region(self, sim: Any) -> None:
        """A token URL that answers 404 is not a token endpoint: check token_url and region."""
        url = f"{sim.base_url}/elsewhere/tokens"

        problem = only_problem(
            await checked(sim_env(sim, auth_token_url=url), good_credentials(sim))
        )

        assert problem.name == "token host"
        assert "not a token endpoint" in problem.detail
        assert "[api] region" in problem.detail

    async def test_a_wrong_base_url_path_is_named(self, sim: Any) -> None:
        """A base URL whose /me answers 404 is a site problem saying base_url looks wrong."""
        env = sim_env(sim, api_base_url=f"{sim.base_url}/wrong")

        steps = await checked(env, good_credentials(sim))

        problem = only_problem(steps)
        assert problem.name == "site"
        assert "[api] base_url" in problem.detail
        assert "looks wrong" in problem.detail
        assert steps["credentials"].status is Status.OK

    async def test_a_wrong_site_id_is_named(self, sim: Any) -> None:
        """A configured site id the customer lacks is named, with the way to discover it."""
        env = sim_env(sim, api_site_id="00000000-0000-0000-0000-000000000000")

        problem = only_problem(await checked(env, good_credentials(sim)))

        assert problem.name == "Machines call"
        assert "[api] site_id (00000000-0000-0000-0000-000000000000)" in problem.detail
        assert "discover it with /me" in problem.detail

    @pytest.mark.parametrize(
        ("deny", "step", "expected"),
        [
            pytest.param(
                {"machines": 403}, "Machines call", "lacks permission to read machines", id="403-m"
            ),
            pytest.param(
                {"sessions": 403}, "Sessions call", "lacks permission to read sessions", id="403-s"
            ),
            pytest.param({"sessions": 406}, "Sessions call", "rewrites it", id="406-sessions"),
            pytest.param({"me": 404}, "site", "[api] base_url", id="404-me"),
        ],
    )
    async def test_a_refused_call_names_its_fix(
        self, deny: dict[str, int], step: str, expected: str
    ) -> None:
        """An endpoint that always refuses is the problem of its step, with the fix for it."""
        config = SimulatorConfig(machines=30, seed=3, client_secret=SECRET, deny=deny)
        with start_in_thread(config) as sim:
            problem = only_problem(await checked(sim_env(sim), good_credentials(sim)))

        assert problem.name == step
        assert expected in problem.detail

    async def test_a_wrong_bearer_token_names_its_variable(self, sim: Any) -> None:
        """With bearer, a refused token is a credentials problem naming its variable."""
        env = sim_env(sim, auth_method="bearer")
        credentials = Credentials(
            bearer_token="not-a-token-123456", sources={"bearer_token": "CITRIX_BEARER_TOKEN"}
        )

        steps = await checked(env, credentials)

        problem = only_problem(steps)
        assert problem.name == "credentials"
        assert "CITRIX_BEARER_TOKEN" in problem.detail
        assert steps["token host"].status is Status.SKIPPED


class TestConfigurationStep:
    def test_settings_say_where_each_came_from(self, tmp_path: Path) -> None:
        """Each setting shows its origin: file and line, variable, or default; secrets masked."""
        path = tmp_path / "site.toml"
        path.write_text('[api]\ncustomer_id = "c1"\n')
        config, origins = load_config_with_origins(str(path), {"COLLECTOR_COLLECT_RATE": "4"}, None)
        credentials = Credentials(
            client_id="the-id-12345",
            client_secret=SECRET,
            sources={"client_id": "CITRIX_CLIENT_ID", "client_secret": "file /run/secrets/cs"},
        )

        text = "\n".join(settings_lines(config, origins, credentials))

        assert f'[api] customer_id = "c1"  ({path}:2)' in text
        assert "[collect] rate = 4.0  (COLLECTOR_COLLECT_RATE)" in text
        assert "[collect] concurrency = 32  (default)" in text
        assert "client_secret = ****  (file /run/secrets/cs)" in text
        assert SECRET not in text
        assert "the-id-12345" not in text

    def test_verify_tls_false_is_a_warning(self) -> None:
        """verify_tls = false passes the configuration step with a warning, not a problem."""
        config = load_config(
            None, {"COLLECTOR_API_CUSTOMER_ID": "c", "COLLECTOR_API_VERIFY_TLS": "0"}
        )

        steps = configuration_steps(config)

        assert [s.status for s in steps] == [Status.OK, Status.WARNING]
        assert "verify_tls = false" in steps[1].detail
        assert exit_code(steps) == 0

    def test_a_configuration_problem_skips_the_rest_and_exits_2(self) -> None:
        """A bad configuration is the first problem; every later step is skipped; exit 2."""
        steps = configuration_problem(ConfigError("[collect] rate must be 0 or more"))

        assert steps[0].status is Status.PROBLEM
        assert {s.status for s in steps[1:]} == {Status.SKIPPED}
        assert exit_code(steps) == 2


class TestNetworkFix:
    @pytest.mark.parametrize(
        ("message", "kind", "expected"),
        [
            pytest.param(
                "connection to x failed: Cannot connect to host x:443 ssl:default "
                "[Name or service not known]",
                ErrorKind.NETWORK,
                "does not resolve (DNS)",
                id="dns",
            ),
            pytest.param(
                "connection to x failed: [SSL: CERTIFICATE_VERIFY_FAILED]",
                ErrorKind.NETWORK,
                "[api] ca_bundle",
                id="tls",
            ),
            pytest.param(
                "connection to x failed: Connect call failed ('127.0.0.1', 9)",
                ErrorKind.NETWORK,
                "connection refused",
                id="refused",
            ),
            pytest.param(
                "no answer within the request timeout", ErrorKind.TIMEOUT, "no answer", id="timeout"
            ),
        ],
    )
    def test_each_cause_has_its_fix(self, message: str, kind: ErrorKind, expected: str) -> None:
        """A connection error is told apart by its cause and names the setting to check."""
        fix = network_fix(message, kind, "https://api-us.cloud.com/x", "[auth] token_url")

        assert expected in fix
        assert "[auth] token_url" in fix
