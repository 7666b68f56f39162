"""`make test-deploy`: build the Dockerfile with podman and run the image as compose.yaml wires it.

What it proves, in order (every step prints what it does; any failure exits non-zero with the
reason, the containers' last log lines, and everything torn down):

1. podman, runc, slirp4netns and mmdebstrap are there (installed with apt when missing and this
   is a root shell with apt-get; otherwise it says what is missing and stops);
2. the base image exists (`localhost/debian-python:bookworm`, made once with mmdebstrap from
   Debian's packages, tarball cached under ~/.cache/conductor/deploy), and podman can run it;
3. the Dockerfile builds (`--build-arg BASE_IMAGE=...`; podman caches the dependency layer while
   pyproject.toml is unchanged);
4. against the machine's PostgreSQL (a throwaway database) and a throwaway redis-server, the
   `migrate` command runs to completion first, then `api`, `worker` and `beat` start, each with
   compose.yaml's command, environment keys and health check (the commands are read from
   compose.yaml, never retyped here), and every health check passes;
5. an admin token comes from `conductor token create` inside the container; a track on the
   `trial` pipeline and a release are created over REST; a badly signed webhook is refused; one
   signed `build.finished` webhook (Standard Webhooks, CONDUCTOR_WEBHOOK_SECRET) is accepted by
   the api container, processed by the worker container, and the release moves branch -> beta;
6. the containers, the database and the redis-server are removed, on failure and on Ctrl-C too.

Networking: each container gets its own network namespace (slirp4netns) in which the machine's
loopback is 10.0.2.2; compose's host names `postgres` and `redis` point there (--add-host), so
the api listens on compose's port and its health check reaches it exactly as compose.yaml says,
and the published port on the machine is a free one (other engineers' servers keep theirs).

Settings (environment): CONDUCTOR_DEPLOY_POSTGRES_URL (a server where a database may be created;
default postgresql://postgres@127.0.0.1:5432/postgres), CONDUCTOR_DEPLOY_BASE_IMAGE (default
localhost/debian-python:bookworm; any other is pulled by podman), CONDUCTOR_DEPLOY_TIMEOUT_S
(per wait, default 120), CONDUCTOR_DEPLOY_KEEP=1 (leave everything running to look at it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
IMAGE = "localhost/conductor:test-deploy"
DEFAULT_BASE_IMAGE = "localhost/debian-python:bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
# This machine's cgroups are the hybrid v1 kind, which crun refuses; resource limits cannot be
# raised here, so they are passed lower than podman's defaults.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# The registries need this machine's CA bundle and pip configuration inside the build.
BUILD_MOUNTS = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro", "-v", "/etc/pip.conf:/etc/pip.conf:ro"]
NETWORK = "slirp4netns:allow_host_loopback=true"
HOST_LOOPBACK = "10.0.2.2"  # the machine's 127.0.0.1, seen from a slirp4netns namespace
ROLES = ("migrate", "api", "worker", "beat")
LONG_RUNNING = ("api", "worker", "beat")
# Set here; every other key of compose's environment keeps compose's value (${VAR:-default}).
WIRED = ("CONDUCTOR_DATABASE_URL", "CONDUCTOR_BROKER_URL", "CONDUCTOR_WEBHOOK_SECRET")
APT_PACKAGES = {"podman": "podman", "runc": "runc", "slirp4netns": "slirp4netns", "mmdebstrap": "mmdebstrap", "newuidmap": "uidmap"}

T0 = time.monotonic()


class DeployFailed(Exception):
    """A step of the deploy test failed; the message says which and why."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def run(argv: list[str], *, capture: bool = False, check: bool = True, timeout: float | None = None, quiet: bool = False):
    """Run a command, printing it first; a non-zero exit raises DeployFailed with its stderr."""
    if not quiet:
        say("$ " + shlex.join(argv))
    try:
        done = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeployFailed(f"{shlex.join(argv[:4])} ... did not finish within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise DeployFailed(f"{argv[0]} is not installed") from None
    if check and done.returncode != 0:
        detail = (done.stderr or "").strip()[-2000:] if capture else ""
        raise DeployFailed(f"{shlex.join(argv[:4])} ... exited {done.returncode}" + (f":\n{detail}" if detail else ""))
    return done


# ---------------------------------------------------------------------------------- compose.yaml


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """compose's `${NAME}` and `${NAME:-default}` (the forms compose.yaml uses)."""
    return _INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), str(value))


def command(compose: dict[str, Any], role: str) -> list[str]:
    """The command compose.yaml runs for a role, exactly."""
    return [str(part) for part in compose["services"][role]["command"]]


def health_command(compose: dict[str, Any], role: str) -> list[str] | None:
    """compose's `["CMD", ...]` health check without the CMD marker, or None."""
    test = compose["services"][role].get("healthcheck", {}).get("test")
    if not test:
        return None
    if test[0] != "CMD":
        raise DeployFailed(f"compose.yaml: {role}'s healthcheck is not in exec form ['CMD', ...]: {test}")
    return [str(part) for part in test[1:]]


def environment(compose: dict[str, Any], role: str, wired: dict[str, str], env: dict[str, str] | None = None) -> dict[str, str]:
    """compose's environment for a role, with the database, broker and secret of this run."""
    declared = compose["services"][role].get("environment") or {}
    missing = [key for key in WIRED if key not in declared]
    if missing:
        raise DeployFailed(f"compose.yaml: {role} has no {', '.join(missing)} in its environment")
    out = {key: interpolate(value, os.environ if env is None else env) for key, value in declared.items()}
    out.update(wired)
    return out


def container_port(compose: dict[str, Any], role: str = "api") -> int:
    """The container side of compose's first published port ("8000:8000" -> 8000)."""
    spec = str(compose["services"][role]["ports"][0])
    return int(spec.rsplit(":", 1)[-1].split("/")[0])


def podman_run(
    compose: dict[str, Any],
    role: str,
    *,
    name: str,
    env_file: Path,
    image: str = IMAGE,
    detach: bool = True,
    publish: int | None = None,
    extra_command: list[str] | None = None,
) -> list[str]:
    """The `podman run` of one compose service: same image, compose's command (or `extra_command`
    for a one-off like `conductor token create`), the run's environment file, compose's health
    check, and compose's host names for the machine's PostgreSQL and Redis."""
    argv = [*podman(), "run", "--name", name, *ULIMITS, "--network", NETWORK]
    argv += ["--add-host", f"postgres:{HOST_LOOPBACK}", "--add-host", f"redis:{HOST_LOOPBACK}", "--env-file", str(env_file)]
    argv += ["-d"] if detach else ["--rm"]
    health = health_command(compose, role)
    if health and detach:
        timeout = compose["services"][role]["healthcheck"].get("timeout", "30s")
        # A JSON array without the CMD marker: podman 4.3 splits a CMD-led array on spaces.
        argv += ["--health-cmd", json.dumps(health), "--health-timeout", str(timeout), "--health-interval", "disable"]
    if publish is not None:
        argv += ["-p", f"127.0.0.1:{publish}:{container_port(compose, role)}"]
    return [*argv, image, *(extra_command or command(compose, role))]


# ------------------------------------------------------------------------------------------ podman


def runc_path() -> str:
    found = shutil.which("runc") or next((p for p in ("/usr/sbin/runc", "/usr/bin/runc") if Path(p).exists()), None)
    return found or "/usr/sbin/runc"


def podman() -> list[str]:
    return ["podman", "--runtime", runc_path()]


def missing_tools() -> list[str]:
    extra = ("/usr/sbin", "/usr/bin", "/sbin")
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    return [tool for tool in APT_PACKAGES if shutil.which(tool, path=path) is None]


def ensure_tools() -> None:
    missing = missing_tools()
    if not missing:
        say("podman, runc, slirp4netns, mmdebstrap: installed")
        return
    packages = sorted({APT_PACKAGES[t] for t in missing})
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DeployFailed(
            f"podman cannot run here: {', '.join(missing)} missing. Install {' '.join(packages)} "
            "(Debian/Ubuntu: apt-get install -y " + " ".join(packages) + "), then run `make test-deploy` again"
        )
    say(f"installing {' '.join(packages)} with apt (missing: {', '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        say("$ " + shlex.join(argv))
        done = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise DeployFailed(f"{shlex.join(argv)} failed:\n{done.stderr.strip()[-1500:]}")
    if missing_tools():
        raise DeployFailed(f"still missing after apt-get install: {', '.join(missing_tools())}")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "conductor" / "deploy"


def ensure_base_image(base_image: str) -> None:
    """The base image: kept when podman has it, else imported from the cached tarball, else made
    with mmdebstrap (a minute or a few) and cached. Any other base is left to podman to pull."""
    if run([*podman(), "image", "exists", base_image], check=False, quiet=True).returncode == 0:
        say(f"base image {base_image}: present (not rebuilt)")
        return
    if base_image != DEFAULT_BASE_IMAGE:
        say(f"base image {base_image}: not here; the build will pull it")
        return
    tarball = cache_dir() / "debian-python-bookworm.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".tar.partial")
        say(f"base image: building it from Debian's packages with mmdebstrap into {tarball} (once; about 1-4 minutes)")
        argv = ["mmdebstrap", "--format=tar", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(partial)]
        try:
            run(argv, capture=True, timeout=1800)
        except DeployFailed:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(tarball)
    else:
        say(f"base image: importing the cached {tarball}")
    run([*podman(), "import", str(tarball), base_image], capture=True, timeout=600)


def check_podman_runs(base_image: str) -> None:
    info = run(
        [*podman(), "info", "--format", "{{.Host.CgroupsVersion}} {{.Store.GraphDriverName}}"], capture=True, check=False, quiet=True
    )
    if info.returncode != 0:
        raise DeployFailed(f"podman cannot run here (`podman info` failed):\n{info.stderr.strip()[-1500:]}")
    if run([*podman(), "image", "exists", base_image], check=False, quiet=True).returncode != 0:
        return  # pulled by the build; the build is the test
    probe = run([*podman(), "run", "--rm", *ULIMITS, "--network", NETWORK, base_image, "true"], capture=True, check=False, quiet=True)
    if probe.returncode != 0:
        raise DeployFailed(
            f"podman cannot run a container here (runc; cgroups, storage: {info.stdout.strip()}):\n{probe.stderr.strip()[-1500:]}"
        )
    say(f"podman runs containers here (runc; cgroups, storage: {info.stdout.strip()})")


def build_image(base_image: str, workdir: Path) -> str:
    """Build the Dockerfile; returns the image id, which the containers run (the tag may move
    under a concurrent run from another checkout)."""
    iidfile = workdir / "image.id"
    argv = [*podman(), "build", "--network", "host", *ULIMITS, *BUILD_MOUNTS]
    argv += ["--build-arg", f"BASE_IMAGE={base_image}", "--iidfile", str(iidfile), "-t", IMAGE, str(ROOT)]
    say("$ " + shlex.join(argv))
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=3600)
    if done.returncode != 0:
        raise DeployFailed(f"podman build failed (exit {done.returncode}); its output is above")
    image_id = iidfile.read_text().strip().removeprefix("sha256:")
    say(f"built {IMAGE} ({image_id[:12]})")
    return image_id


# -------------------------------------------------------------------------------- the services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path, stack: contextlib.ExitStack) -> int:
    """A throwaway redis-server on a free port (the shared one's databases stay untouched)."""
    if shutil.which("redis-server") is None:
        raise DeployFailed("redis-server is not on PATH (apt-get install redis-server): the deploy test runs its own on a free port")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    say("$ " + shlex.join(argv) + " &")
    log = open(workdir / "redis.log", "w")  # noqa: SIM115 - closed by the stack
    stack.enter_context(log)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop() -> None:
        say(f"stopping redis-server (pid {proc.pid})")
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    wait_for(f"redis-server on port {port}", lambda: _redis_pings(port), timeout=20)
    return port


def _redis_pings(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


def create_database(admin_url: str, name: str, stack: contextlib.ExitStack) -> str:
    """Create a throwaway database; its drop is registered at once. Returns the URL the
    containers use (compose's host name `postgres` for a server on this machine's loopback)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.errors.DuplicateDatabase:
        raise DeployFailed(f"database {name} exists already (left by a killed run?): DROP DATABASE {name} and run again") from None
    except psycopg.OperationalError as exc:
        raise DeployFailed(
            f"PostgreSQL at {url.render_as_string(hide_password=True)} does not answer ({str(exc).strip().splitlines()[0]}); "
            "start it (see /work/shared/SERVICES.md) or set CONDUCTOR_DEPLOY_POSTGRES_URL"
        ) from None
    say(f"created database {name} on {url.host}:{url.port or 5432}")

    def drop() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            say(f"dropped database {name}")
        except psycopg.Error as exc:
            say(f"WARNING: could not drop database {name}: {exc}")

    stack.callback(drop)
    host = "postgres" if url.host in (None, "127.0.0.1", "localhost", "::1") else url.host
    return url.set(drivername="postgresql+psycopg", database=name, host=host).render_as_string(hide_password=False)


def wait_for(what: str, ready: Callable[[], Any], *, timeout: float, every: float = 1.0) -> Any:
    """Poll `ready` until it returns something truthy; DeployFailed naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            result = ready()
            if result:
                return result
        except DeployFailed:
            raise
        except Exception as exc:  # not up yet: connection refused and the like
            last_error = f" (last: {type(exc).__name__}: {str(exc)[:200]})"
        if time.monotonic() > deadline:
            raise DeployFailed(f"timed out after {timeout:.0f} s waiting for {what}{last_error}")
        time.sleep(every)


def container_state(name: str) -> str:
    done = run([*podman(), "inspect", "--format", "{{.State.Status}}", name], capture=True, check=False, quiet=True)
    return done.stdout.strip() or "gone"


def healthy(name: str) -> bool:
    state = container_state(name)
    if state != "running":
        raise DeployFailed(f"container {name} is {state}, not running")
    return run([*podman(), "healthcheck", "run", name], capture=True, check=False, quiet=True).returncode == 0


def show_logs(names: list[str]) -> None:
    for name in names:
        done = run([*podman(), "logs", "--tail", "40", name], capture=True, check=False, quiet=True)
        text = (done.stdout + done.stderr).rstrip()
        if text:
            print(f"----- last lines of {name} -----\n{text}", flush=True)


# ----------------------------------------------------------------------------- the release flow


def sign(secret: str, msg_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers for `body` (the library the README's example uses)."""
    from standardwebhooks.webhooks import Webhook

    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }


def expect(response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise DeployFailed(f"{what}: expected HTTP {status}, got {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else {}


def release_flow(api: str, token: str, secret: str, run_id: str, timeout: float) -> dict[str, float]:
    import httpx

    timings: dict[str, float] = {}
    track, repository, version = f"deploy-{run_id}", f"acme/deploy-{run_id}", "1.0"
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=15) as http:
        say(f"POST /tracks {track} (pipeline trial, repository {repository})")
        expect(http.post("/tracks", json={"id": track, "definition": "trial", "repository": repository}), 201, "POST /tracks")
        say(f"POST /releases {track} {version}")
        release = expect(http.post("/releases", json={"track": track, "release_version": version}), 201, "POST /releases")
        rid, stage = release["id"], release["stage"]
        if stage != "branch":
            raise DeployFailed(f"a new trial release should start in stage branch, is in {stage}")
        say(f"release {rid} ({release['key']}) is in stage {stage}, waiting for: {release['waiting_for']}")

        # One CI report carries both gates of branch -> beta: the build and the test pass rate.
        body = json.dumps(
            {
                "type": "build.finished",
                "id": f"deploy-{run_id}-build",
                "repository": repository,
                "branch": f"release/{version}",
                "sha": secrets.token_hex(20),
                "outcome": "success",
                "signals": [{"name": "tests_pass_rate", "value": 1.0, "samples": 420}],
            }
        )
        msg_id = f"msg_deploy_{run_id}"
        forged = sign("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(), msg_id, body)
        say("POST /webhooks/generic signed with a wrong secret: must be refused")
        expect(http.post("/webhooks/generic", content=body, headers=forged), 401, "a webhook signed with another secret")

        say("POST /webhooks/generic build.finished (success, tests_pass_rate 1.0 over 420), signed per Standard Webhooks")
        sent = time.monotonic()
        accepted = expect(http.post("/webhooks/generic", content=body, headers=sign(secret, msg_id, body)), 202, "the signed webhook")
        if accepted["status"] != "accepted":
            raise DeployFailed(f"the signed webhook was not accepted: {accepted}")
        say(f"accepted as event {accepted['event_id']} ({accepted['kind']}); polling GET /releases/{rid} for the transition")

        def moved() -> dict[str, Any] | None:
            now = expect(http.get(f"/releases/{rid}"), 200, f"GET /releases/{rid}")
            return now if now["stage"] != "branch" else None

        after = wait_for(f"release {rid} to leave stage branch", moved, timeout=timeout, every=0.5)
        timings["webhook -> transition"] = time.monotonic() - sent
        event = expect(http.get(accepted["event_url"]), 200, accepted["event_url"])
        say(
            f"release {rid} moved branch -> {after['stage']} {timings['webhook -> transition']:.1f} s after the webhook "
            f"(event {event['id']}: {event['status']}, release {event['release_id']})"
        )
        if after["stage"] != "beta" or event["status"] != "processed" or event["release_id"] != rid:
            raise DeployFailed(f"expected stage beta and the event processed for release {rid}; got {after['stage']}, {event}")
    return timings


# ------------------------------------------------------------------------------------------ main


@contextlib.contextmanager
def phase(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start


def deploy(timings: dict[str, float]) -> None:
    base_image = os.environ.get("CONDUCTOR_DEPLOY_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    admin_url = os.environ.get("CONDUCTOR_DEPLOY_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    timeout = float(os.environ.get("CONDUCTOR_DEPLOY_TIMEOUT_S", "120"))
    keep = os.environ.get("CONDUCTOR_DEPLOY_KEEP") == "1"
    run_id = f"{os.getpid()}"

    with phase(timings, "tools"):
        ensure_tools()
    with phase(timings, "base image"):
        ensure_base_image(base_image)
        check_podman_runs(base_image)

    compose = load_compose()
    names = {role: f"conductor-deploy-{run_id}-{role}" for role in ROLES}
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="conductor-deploy-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        with phase(timings, "image build"):
            image = build_image(base_image, workdir)
        started: list[str] = []

        def remove_containers() -> None:
            if started:
                say(f"removing containers {' '.join(started)}")
                done = run([*podman(), "rm", "--force", "--ignore", "--time", "10", *started], capture=True, check=False, quiet=True)
                say("containers removed" if done.returncode == 0 else f"WARNING: podman rm: {done.stderr.strip()[-500:]}")

        def logs_on_failure(exc_type, exc, tb) -> None:
            if exc_type is not None and started:
                show_logs(started)

        with phase(timings, "services"):
            redis_port = start_redis(workdir, stack)
            db_url = create_database(admin_url, f"conductor_deploy_{run_id}", stack)
        stack.callback(remove_containers)
        stack.push(logs_on_failure)  # runs before the removal (last in, first out)
        if keep:
            stack.pop_all()
            say("CONDUCTOR_DEPLOY_KEEP=1: nothing will be torn down")

        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        wired = {
            "CONDUCTOR_DATABASE_URL": db_url,
            "CONDUCTOR_BROKER_URL": f"redis://redis:{redis_port}/0",
            "CONDUCTOR_WEBHOOK_SECRET": secret,
        }
        env_files = {}
        for role in ROLES:
            env_files[role] = workdir / f"{role}.env"
            env_files[role].write_text("".join(f"{k}={v}\n" for k, v in environment(compose, role, wired).items()))
            env_files[role].chmod(0o600)
        say(f"environment (compose.yaml's keys): database {db_url.rsplit('/', 1)[-1]}, broker redis:{redis_port}/0, a fresh webhook secret")

        with phase(timings, "migrate"):
            started.append(names["migrate"])
            run(
                podman_run(compose, "migrate", name=names["migrate"], env_file=env_files["migrate"], image=image, detach=False),
                timeout=timeout,
            )
            started.remove(names["migrate"])
            say("migrate completed (exit 0): api, worker and beat may start (compose: service_completed_successfully)")

        api_port = free_port()
        with phase(timings, "start until healthy"):
            for role in LONG_RUNNING:
                started.append(names[role])
                publish = api_port if role == "api" else None
                run(
                    podman_run(compose, role, name=names[role], env_file=env_files[role], image=image, publish=publish),
                    capture=True,
                    timeout=60,
                )
            for role in LONG_RUNNING:
                check = shlex.join(health_command(compose, role) or [])
                say(f"waiting for {role}'s health check: {check}")
                wait_for(f"{names[role]} to be healthy ({check})", lambda n=names[role]: healthy(n), timeout=timeout, every=2)
                say(f"{role} is healthy")

        with phase(timings, "token"):
            token_cmd = ["conductor", "token", "create", f"deploy-{run_id}", "--role", "admin"]
            name = f"conductor-deploy-{run_id}-token"
            argv = podman_run(compose, "migrate", name=name, env_file=env_files["api"], image=image, detach=False, extra_command=token_cmd)
            started.append(name)
            token = run(argv, capture=True, timeout=60).stdout.strip().splitlines()[-1]
            started.remove(name)
            say(f"admin token created ({token[:8]}...)")

        with phase(timings, "release flow"):
            timings.update(release_flow(f"http://127.0.0.1:{api_port}", token, secret, run_id, timeout))

        for role in LONG_RUNNING:  # nothing crashed or restarted along the way
            if (state := container_state(names[role])) != "running":
                raise DeployFailed(f"{names[role]} is {state} at the end, not running")
        if keep:
            say(f"left running: {' '.join(started)}; api at http://127.0.0.1:{api_port}, token {token}")
            say(f"and redis-server on port {redis_port}, database {db_url.rsplit('/', 1)[-1]}, files in {workdir}")
            return
        say("teardown")
        teardown_start = time.monotonic()
    timings["teardown"] = time.monotonic() - teardown_start


def on_sigterm(*_: object) -> None:
    print("\ntest-deploy: SIGTERM; tearing down", file=sys.stderr, flush=True)
    sys.exit(143)


def main() -> int:
    # Ctrl-C and a CI runner's SIGTERM unwind through the teardown like any failure.
    signal.signal(signal.SIGTERM, on_sigterm)
    timings: dict[str, float] = {}
    os.chdir(ROOT)
    try:
        deploy(timings)
    except DeployFailed as exc:
        print(f"\ntest-deploy FAILED after {time.monotonic() - T0:.0f} s: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ntest-deploy interrupted; torn down", file=sys.stderr, flush=True)
        return 130
    summary = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"\ntest-deploy passed in {time.monotonic() - T0:.0f} s: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
