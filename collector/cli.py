"""The command line: argparse, one `cmd_<name>` a subcommand, exit codes.

Only this module reads `os.environ` and `sys.argv`, and decides where standard output goes.
Handlers stay thin: build the Config, run the app, map the outcome to an exit code. Errors of
ours become one line on standard error (`collector: error: ...`) and their exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from collector import __version__
from collector.app import RunOptions, StdStreams, run
from collector.config import Config, load_config, load_config_with_origins, resolve_credentials
from collector.errors import CollectorError, ConfigError
from collector.logs import setup_logging
from collector.redact import SECRETS
from collector.sources import parse_shard

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 3  # SPEC 2: "fatal ... the run was aborted"; committed files stay valid
INTERNAL_ERROR_HELP = (
    "committed files are intact and `--resume` continues the run; please report the traceback"
)

RUN_EXAMPLES = """\
examples:
  collector run -c site.toml --out /data/sessions/2026-11-29
  collector run -c site.toml --machines machines.csv --concurrency 64 --rate 20
  collector run -c site.toml --out /data/sessions/2026-11-29 --resume
  collector run -c site.toml --out /data/sessions/2026-11-29 --retry-failed
  cat machines.txt | collector run -c site.toml --machines - --out - > sessions.ndjson
  collector run -c site.toml --shard 2/8 --out /data/sessions/shard-2

exit codes: 0 every machine collected; 1 some machines failed (see errors.ndjson);
  2 usage, configuration or input error; 3 fatal (credentials, permissions, output);
  130 interrupted (resumable with --resume)
"""

CHECK_EXAMPLES = """\
examples:
  collector check -c site.toml
  CITRIX_CLIENT_ID=... CITRIX_CLIENT_SECRET=... collector check -c site.toml

Each step prints ok, or the problem and its fix on one line: configuration (the effective
settings, where each came from), token host, credentials, site, one Machines call, one
Sessions call. exit codes: 0 every step passed; 2 the configuration is wrong; 3 a later step
failed
"""

MACHINES_EXAMPLES = """\
examples:
  collector machines -c site.toml --out machines.ndjson
  collector machines -c site.toml | head
"""

SIMULATE_EXAMPLES = """\
examples:
  collector simulate --machines 5000 --faults hostile --write-machines machines.txt
  collector simulate --port 8080 --latency-ms 100 --rate-limit 200
  collector simulate --shape full --max-in-flight 6 --session-page 3 --deny machines=403
"""

VERIFY_EXAMPLES = """\
examples:
  collector verify /data/sessions/2026-11-29
  collector verify demo-out

Run it after `collector run` and load the files only when it exits 0.
exit codes: 0 the run is whole; 1 it is not (one line a problem)
"""

DEMO_EXAMPLES = """\
examples:
  collector demo
  collector demo --out /tmp/demo
"""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="TOML configuration (see config.example.toml)"
    )


def add_log_options(parser: argparse.ArgumentParser, level: str = "INFO") -> None:
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--log-level", default=level, choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector",
        description="Collect every session of many Citrix DaaS / CVAD machines into NDJSON.",
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = commands.add_parser(
        "run",
        help="collect the sessions of a machine list",
        epilog=RUN_EXAMPLES,
        formatter_class=raw,
    )
    add_config_option(p)
    p.add_argument(
        "--machines", metavar="PATH", help="machine list (text, csv, ndjson) or - for stdin"
    )
    p.add_argument("--all-machines", action="store_true", help="discover machines with the API")
    p.add_argument("--site-wide", action="store_true", help="read /cvad/manage/Sessions pages")
    p.add_argument("--out", metavar="DIR", help="output directory, or - for standard output")
    p.add_argument("--errors", metavar="PATH", help="with --out -: write failed machines here")
    # One of them at most: each says something else about the run already in --out.
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue the run in --out")
    existing.add_argument(
        "--retry-failed", action="store_true", help="collect again the machines of errors.ndjson"
    )
    existing.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--concurrency", type=int, metavar="N", help="requests in flight at most")
    p.add_argument("--rate", type=float, metavar="R", help="requests per second at most (0: none)")
    p.add_argument("--shard", metavar="K/N", help="collect only shard K of N (0 <= K < N)")
    p.add_argument("--strict", action="store_true", help="stop before any request on a bad line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--metrics-file", metavar="PATH", help="Prometheus text metrics at the end")
    p.add_argument(
        "--no-uvloop", action="store_true", help="the standard asyncio loop even if uvloop is in"
    )
    add_log_options(p)
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser(
        "machines", help="list the site's machines", epilog=MACHINES_EXAMPLES, formatter_class=raw
    )
    add_config_option(p)
    p.add_argument("--out", metavar="PATH", default="-", help="NDJSON file, or - (default)")
    add_log_options(p)
    p.set_defaults(handler=cmd_machines)

    p = commands.add_parser(
        "check",
        help="validate the configuration and call the API once",
        epilog=CHECK_EXAMPLES,
        formatter_class=raw,
    )
    add_config_option(p)
    add_log_options(p)
    p.set_defaults(handler=cmd_check)

    p = commands.add_parser(
        "verify",
        help="check that a finished run is whole before loading it",
        epilog=VERIFY_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("dir", metavar="DIR", help="the output directory of a run")
    add_log_options(p, level="WARNING")
    p.set_defaults(handler=cmd_verify)

    p = commands.add_parser(
        "simulate",
        help="run the embedded Citrix DaaS simulator",
        epilog=SIMULATE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--machines", type=int, default=1000, metavar="N")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument("--latency-ms", type=float, metavar="MS", help="added to every answer")
    p.add_argument("--rate-limit", type=float, metavar="R", help="requests/s, 429 above it")
    p.add_argument(
        "--max-in-flight", type=int, metavar="N", help="sessions calls served at once, 429 above"
    )
    p.add_argument("--faults", choices=("none", "flaky", "hostile"), default="none")
    p.add_argument(
        "--shape",
        choices=("sparse", "full"),
        default="sparse",
        help="sessions as a tenant returns them (sparse) or with every property (full)",
    )
    p.add_argument(
        "--session-page", type=int, metavar="N", help="page each machine's sessions N at a time"
    )
    p.add_argument(
        "--repeat-token",
        action="store_true",
        default=None,
        help="with --session-page: a broken pager that repeats its continuation token",
    )
    p.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="NAME=STATUS",
        help="always answer STATUS on an endpoint (token, me, machines, sessions, site-sessions);"
        " repeatable",
    )
    p.add_argument(
        "--token-lifetime", type=float, metavar="S", help="token lifetime (default: the profile's)"
    )
    p.add_argument("--write-machines", metavar="FILE", help="write the machine list here")
    add_log_options(p)
    p.set_defaults(handler=cmd_simulate)

    p = commands.add_parser(
        "demo",
        help="collect from the embedded simulator: no credentials, no network",
        epilog=DEMO_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--out", default="demo-out", metavar="DIR", help="default: ./demo-out")
    p.add_argument("--machines", type=int, default=500, metavar="N")
    add_log_options(p, level="WARNING")  # the retries show in the summary; INFO lists each one
    p.set_defaults(handler=cmd_demo)
    return parser


def run_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Command-line flags as configuration overrides (the top of the precedence)."""
    overrides: dict[str, dict[str, Any]] = {"input": {}, "collect": {}, "output": {}}
    if args.machines is not None:
        overrides["input"]["machines"] = args.machines
    if args.all_machines:
        overrides["input"]["all_machines"] = True
    if args.site_wide:
        overrides["collect"]["mode"] = "site-wide"
    if args.concurrency is not None:
        overrides["collect"]["concurrency"] = args.concurrency
    if args.rate is not None:
        overrides["collect"]["rate"] = args.rate
    if args.out is not None:
        overrides["output"]["dir"] = args.out
    return overrides


def load(args: argparse.Namespace, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    return load_config(args.config, os.environ, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args, run_overrides(args))
    credentials = resolve_credentials(config, os.environ)
    SECRETS.register_all(credentials.secrets())
    if args.errors and config.output.dir != "-":
        raise ConfigError("--errors goes with --out -; a directory run writes DIR/errors.ndjson")
    options = RunOptions(
        resume=args.resume,
        retry_failed=args.retry_failed,
        overwrite=args.overwrite,
        strict=args.strict,
        shard=parse_shard(args.shard) if args.shard else None,
        progress=not args.no_progress,
        metrics_file=args.metrics_file or "",
        errors_path=args.errors or "",
    )
    streams = StdStreams(
        stdin=sys.stdin,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr,
        interactive=sys.stderr.isatty(),
    )
    from collector.connect import loop_options

    backend = loop_options(not args.no_uvloop)
    result = anyio.run(run, config, credentials, options, streams, backend_options=backend)
    return result.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    from collector import check

    try:
        config, origins = load_config_with_origins(args.config, os.environ)
        credentials = resolve_credentials(config, os.environ)
    except ConfigError as exc:
        steps = check.configuration_problem(exc)
        settings: list[str] = []
    else:
        SECRETS.register_all(credentials.secrets())
        settings = check.settings_lines(config, origins, credentials)
        steps = check.configuration_steps(config)
        steps += anyio.run(check.run_checks, config, credentials)
    lines = [steps[0].line(), *settings, *(step.line() for step in steps[1:]), check.summary(steps)]
    for line in lines:
        print(SECRETS.redact(line))
    return check.exit_code(steps)


def cmd_machines(args: argparse.Namespace) -> int:
    from collector.site import list_machines

    config = load(args)
    credentials = resolve_credentials(config, os.environ)
    SECRETS.register_all(credentials.secrets())
    target = None if args.out == "-" else Path(args.out)
    count = anyio.run(list_machines, config, credentials, target, sys.stdout.buffer)
    print(f"{count} machines", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from collector.verify import verify_run

    report = verify_run(Path(args.dir))
    for problem in report.problems:
        print(problem)
    if report.problems:
        return 1
    files = f"{report.files} file{'' if report.files == 1 else 's'}"
    print(f"{report.directory}: whole: {files}, {report.records} records")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from collector.simulator import SimulatorConfig, parse_deny, run_forever

    try:
        deny = parse_deny(args.deny)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sim_config = SimulatorConfig(
        host=args.host,
        port=args.port,
        machines=args.machines,
        seed=args.seed,
        latency_ms=args.latency_ms,
        rate_limit=args.rate_limit,
        max_in_flight=args.max_in_flight,
        session_page=args.session_page,
        repeat_token=args.repeat_token,
        deny=deny or None,
        faults=args.faults,
        token_lifetime_s=args.token_lifetime,
        write_machines=args.write_machines,
        shape=args.shape,
    )

    def announce(line: str) -> None:
        print(line, flush=True)
        if line.startswith("export "):
            print("serving until Ctrl-C", file=sys.stderr, flush=True)

    try:
        anyio.run(run_forever, sim_config, announce)
    except KeyboardInterrupt:
        print("simulator stopped", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import demo

    streams = StdStreams(
        stdin=None, stdout=sys.stdout.buffer, stderr=sys.stderr, interactive=sys.stderr.isatty()
    )
    result = anyio.run(demo, Path(args.out), args.machines, streams)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.redactor = setup_logging(args.log_level, args.log_format)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CollectorError as exc:
        print(f"collector: error: {args.redactor.redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("collector: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        # A bug, not an answer: its traceback may quote a token or a secret (an exception's
        # message, a URL), so it goes out redacted, as every log line does, rather than through
        # Python's own hook.
        trace = args.redactor.redact(traceback.format_exc())
        print(f"{trace}collector: internal error (a bug): {INTERNAL_ERROR_HELP}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        logging.shutdown()
