"""compose.yaml and the Dockerfile name only real entry points of this package, and compose.yaml
is wired the way `make test-deploy` (deploy/test_deploy.py) runs and proves it.

No container engine is needed: the files are parsed and every command is resolved against the
console scripts in pyproject.toml, the typer app behind `conductor`, and the Celery app behind
`celery -A workers`. What test-deploy runs comes from compose.yaml (commands, environment keys,
health checks, the api's port); these tests pin what it relies on.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONDUCTOR_ROLES = {"migrate", "api", "worker", "beat"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def deploy_script():
    """deploy/test_deploy.py, the script behind `make test-deploy` (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("conductor_test_deploy", ROOT / "deploy" / "test_deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def resolve_click(group, argv: list[str]):
    """Walk subcommands; every --option must exist on the command it is given to."""
    import click

    cmd, ctx = group, click.Context(group)
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            assert name in opts, f"{cmd.name} has no option {name} (has {sorted(opts)})"
            param = next(p for p in cmd.params if name in (*p.opts, *p.secondary_opts))
            if not getattr(param, "is_flag", False) and "=" not in token and rest:
                rest.pop(0)
            continue
        if hasattr(cmd, "get_command"):  # a group (typer's groups are not click.Group subclasses)
            sub = cmd.get_command(ctx, token)
            assert sub is not None, f"{cmd.name or 'conductor'} has no subcommand {token!r}"
            cmd, ctx = sub, click.Context(sub, parent=ctx)
    assert not hasattr(cmd, "get_command"), f"{argv} stops at a command group"
    return cmd


def check_command(argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    if program == "conductor":
        assert scripts()["conductor"] == "conductor.cli:main"
        from conductor.cli import app

        resolve_click(typer.main.get_command(app), args)
    elif program == "celery":
        from celery import Celery

        assert args[:2] == ["-A", "workers"], argv
        import workers

        assert isinstance(workers.app, Celery)
        assert args[2] in ("worker", "beat"), argv
        from celery.bin.celery import celery as celery_cli

        resolve_click(celery_cli, args[2:])
    elif program == "python":
        assert args[0] in ("-m", "-c"), argv
        if args[0] == "-m":
            import importlib

            module = importlib.import_module(args[1])
            assert hasattr(module, "main"), f"{args[1]} has no main()"
    else:
        raise AssertionError(f"{argv}: not an entry point of this package")


def test_compose_has_the_distributed_deployment(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *CONDUCTOR_ROLES}
    for name, svc in services.items():
        if name != "migrate":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    for role in ("api", "worker", "beat"):
        deps = services[role]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N must work
    env = services["api"]["environment"]
    assert env["CONDUCTOR_DATABASE_URL"].startswith("postgresql+psycopg://") and env["CONDUCTOR_BROKER_URL"].startswith("redis://")
    assert len({json.dumps(services[r].get("build")) for r in CONDUCTOR_ROLES}) == 1  # one image for every role


@pytest.mark.parametrize("role", sorted(CONDUCTOR_ROLES))
def test_every_service_command_is_a_real_entry_point(compose, role):
    svc = compose["services"][role]
    check_command(svc["command"])
    test = svc.get("healthcheck", {}).get("test")
    if test:
        assert test[0] == "CMD", test
        check_command(test[1:])


def test_dockerfile_is_slim_non_root_and_starts_an_entry_point():
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in re.findall(r"^FROM\s+(\S+)", text, re.M)]
    assert froms and all(f.endswith("-slim") for f in froms)  # by default; test-deploy passes its own base
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = json.loads(re.findall(r"^CMD\s+(\[.*\])", text, re.M)[-1])
    check_command(cmd)
    for path in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s", text, re.M):
        assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"


def test_dockerfile_takes_its_base_as_a_build_argument_and_needs_only_python3():
    """`--build-arg BASE_IMAGE=localhost/debian-python:bookworm` (test-deploy) has `python3` and no
    `python`: the venv is made with python3, and nothing calls `python` before the venv is on PATH."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    arg = next(i for i, line in enumerate(lines) if line.startswith("ARG BASE_IMAGE="))
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    assert arg < first_from and lines[first_from].split()[1] == "${BASE_IMAGE}"
    assert lines[arg].split("=", 1)[1].startswith("python:")  # the official image stays the default
    venv = next(i for i, line in enumerate(lines) if "-m venv /opt/venv" in line)
    assert lines[venv] == "RUN python3 -m venv /opt/venv"
    assert not any(re.search(r"\bpython\b(?!3)", line) for line in lines[:venv] if line.startswith("RUN"))
    assert "PATH=/opt/venv/bin:$PATH" in text


def test_dockerfile_installs_dependencies_before_anything_but_pyproject_is_copied():
    """podman (and docker) reuse the dependency layer while pyproject.toml is unchanged."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")  # continuation lines joined
    steps = re.findall(r"^(COPY|RUN)\s+(.*)$", text, re.M)
    install = next(i for i, (op, rest) in enumerate(steps) if op == "RUN" and "pip install -r" in rest)
    copied_before = [rest.split()[:-1] for op, rest in steps[:install] if op == "COPY"]
    assert copied_before == [["pyproject.toml"]]


# What `make test-deploy` runs for each role; compose.yaml is its source, these are its roles.
ROLE_COMMANDS = {
    "migrate": ["conductor", "db", "upgrade"],
    "api": ["conductor", "api"],
    "worker": ["celery", "-A", "workers", "worker"],
    "beat": ["celery", "-A", "workers", "beat"],
}


def test_deploy_script_runs_every_role_from_compose_with_the_same_image(compose, deploy_script):
    services = compose["services"]
    assert set(deploy_script.ROLES) == CONDUCTOR_ROLES and deploy_script.ROLES[0] == "migrate"  # migrate first
    assert set(deploy_script.LONG_RUNNING) == CONDUCTOR_ROLES - {"migrate"}
    assert len({services[r]["image"] for r in CONDUCTOR_ROLES}) == 1  # one image for every role
    for role, prefix in ROLE_COMMANDS.items():
        cmd = services[role]["command"]
        assert cmd[: len(prefix)] == prefix, f"{role}: {cmd}"
        argv = deploy_script.podman_run(compose, role, name=f"t-{role}", env_file=Path("/dev/null"))
        image_at = argv.index(deploy_script.IMAGE)
        assert argv[image_at + 1 :] == cmd, f"test-deploy does not run compose's {role} command"
        health = services[role].get("healthcheck", {}).get("test")
        if health:
            assert json.loads(argv[argv.index("--health-cmd") + 1]) == health[1:]
        else:
            assert "--health-cmd" not in argv


def test_compose_roles_share_one_environment_with_database_broker_and_webhook_secret(compose, deploy_script):
    services = compose["services"]
    envs = [services[r]["environment"] for r in sorted(CONDUCTOR_ROLES)]
    assert all(env == envs[0] for env in envs), "every Conductor service must see the same settings"
    env = envs[0]
    assert set(deploy_script.WIRED) <= set(env)  # what test-deploy sets for its own run
    database, broker = urlsplit(env["CONDUCTOR_DATABASE_URL"]), urlsplit(env["CONDUCTOR_BROKER_URL"])
    # compose's service names; test-deploy points the same names at the machine's servers (--add-host)
    assert (database.scheme, database.hostname) == ("postgresql+psycopg", "postgres")
    assert (broker.scheme, broker.hostname) == ("redis", "redis")
    user, password, name = database.username, database.password, database.path.lstrip("/")
    pg = services["postgres"]["environment"]
    assert (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]) == (user, password, name)
    assert env["CONDUCTOR_WEBHOOK_SECRET"].startswith("${CONDUCTOR_WEBHOOK_SECRET")  # from the operator, never in the file
    wired = {"CONDUCTOR_DATABASE_URL": "db", "CONDUCTOR_BROKER_URL": "broker", "CONDUCTOR_WEBHOOK_SECRET": "secret"}
    resolved = deploy_script.environment(compose, "api", wired, env={})
    assert set(resolved) == set(env) and {k: resolved[k] for k in wired} == wired
    assert resolved["CONDUCTOR_LOG_LEVEL"] == "INFO"  # ${CONDUCTOR_LOG_LEVEL:-INFO}, as compose reads it


def test_api_port_command_publish_and_healthcheck_agree(compose, deploy_script):
    api = compose["services"]["api"]
    cmd = api["command"]
    port = int(cmd[cmd.index("--port") + 1])
    assert deploy_script.container_port(compose) == port
    assert any(f"127.0.0.1:{port}/readyz" in part for part in api["healthcheck"]["test"])
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # reachable through the published port


def test_every_long_running_role_has_a_healthcheck_test_deploy_waits_for(compose):
    services = compose["services"]
    for role in ("api", "worker", "beat"):
        check = services[role]["healthcheck"]
        assert check["test"][0] == "CMD" and check["timeout"] and check["interval"], role
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
