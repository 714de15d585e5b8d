"""Issue 11 item 2: no token or secret leaks, whatever a hostile server echoes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import pytest

from tests.attack.conftest import echoing_config
from tests.e2e.conftest import Finished, cli_env, run_cli

pytestmark = pytest.mark.e2e


def leaked(secret: str, out: Path, done: Finished) -> list[str]:
    """Where any form of `secret` (as is, percent- or form-encoded) shows: streams or files."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms |= {form.lower() for form in forms if "%" in form}
    streams = {"stderr": done.stderr, "stdout": done.stdout.decode("utf-8", "replace")}
    found = [name for name, text in streams.items() for form in forms if form in text]
    if out.exists():
        for path in out.rglob("*"):
            if path.is_file():
                content = path.read_bytes().decode("utf-8", "replace")
                found += [str(path) for form in forms if form in content]
    return found


def test_a_token_quoted_in_error_answers_is_redacted(tmp_path: Path, echoing_api: Any) -> None:
    """Error answers (400, 404, 500) quoting `Authorization` leave the token in no log or file."""
    api = echoing_api(secret="attack-Secret-0123456789")
    out = tmp_path / "out"
    machines = ["ok-1", "e400-a", "e404-b", "e500-c"]
    config = echoing_config(tmp_path, api, machines, out)

    done = run_cli(
        ["run", "-c", str(config), "--no-progress", "--log-level", "DEBUG", "--log-format", "json"],
        cli_env(api),
        tmp_path,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr[-3000:]
    errors = [orjson.loads(line) for line in (out / "errors.ndjson").read_bytes().splitlines()]
    assert sorted(e["machine"] for e in errors) == ["e400-a", "e404-b", "e500-c"]
    assert (out / "manifest.json").exists()
    assert leaked(api.token, out, done) == []
    assert leaked(api.secret, out, done) == []
    assert all("CwsAuth Bearer=***" in e["message"] for e in errors)  # echoed, then redacted


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("Xy9/+abc==tail", id="percent-encoded-in-the-form"),
        pytest.param("Qz7pX", id="five-characters"),
    ],
)
def test_a_secret_echoed_by_the_token_endpoint_is_redacted(
    tmp_path: Path, echoing_api: Any, secret: str
) -> None:
    """A token endpoint quoting the form body back shows the secret in no form, however short."""
    api = echoing_api(secret=secret, refuse_tokens=True)
    out = tmp_path / "out"
    config = echoing_config(tmp_path, api, ["ok-1"], out)

    done = run_cli(
        ["run", "-c", str(config), "--no-progress", "--log-level", "DEBUG"],
        cli_env(api),
        tmp_path,
        timeout=60,
    )

    assert done.returncode == 3, done.stderr[-3000:]
    assert leaked(secret, out, done) == []
    assert "client_secret=***" in done.stderr  # the body was echoed, and redacted


def test_a_bug_s_traceback_is_redacted_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception that is not ours (a bug) quoting a token is printed redacted, exit 3."""
    from collector import cli
    from collector.redact import SECRETS

    token = "bug-quoted-Token-0123456789abcdef"
    SECRETS.register(token)

    def handler(args: Any) -> int:
        raise RuntimeError(f"unexpected answer for Bearer={token}")

    parser = cli.build_parser()
    real_parse = parser.parse_args

    def parse(argv: Any = None) -> Any:
        args = real_parse(argv)
        args.handler = handler
        return args

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)

    code = cli.main(["check", "-c", "missing.toml"])

    err = capsys.readouterr().err
    assert code == 3
    assert token not in err
    assert "RuntimeError: unexpected answer for Bearer=***" in err
    assert "internal error (a bug)" in err
