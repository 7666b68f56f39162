"""The `conductor` command line (typer + rich). Every command maps ConductorError to exit code 1."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from conductor.console import LIGHTS, fmt_time, plain, print_decision, print_replay, print_timeline
from conductor.domain.errors import ConductorError, DefinitionError

# Plain click help (rich_markup_mode=None): typer's rich help tags every option with its type,
# "--help <bool>" included. No shell-completion options: they only crowd the help.
_TYPER = {"no_args_is_help": True, "pretty_exceptions_enable": False, "rich_markup_mode": None, "add_completion": False}
app = typer.Typer(help="Conductor: the release conductor robot.", **_TYPER)  # type: ignore[arg-type]
db_app = typer.Typer(help="Database schema.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)


AsOpt = Annotated[str | None, typer.Option("--as", help="Who is acting (default: the OS user).")]
RoleOpt = Annotated[str, typer.Option("--role", help="Role recorded with the action.")]


def _actor(name: str | None, role: str = "release_manager"):
    from conductor.service import Actor

    return Actor(name or getpass.getuser(), role)


def _settings():
    """The settings, with the CLI's log level: warnings and errors only, on stderr, unless
    CONDUCTOR_LOG_LEVEL asks for more (info lines would interleave with the command's output)."""
    import os

    from conductor.config import get_settings

    settings = get_settings()
    if "CONDUCTOR_LOG_LEVEL" not in os.environ:
        settings = settings.model_copy(update={"log_level": "WARNING"})
    return settings


def _conductor():
    from conductor.bootstrap import conductor

    return conductor(_settings())


@app.command()
def validate(paths: Annotated[list[Path], typer.Argument(help="Definition files or directories.")]) -> None:
    """Validate pipeline definitions; every problem is listed with file, line and field."""
    from conductor.domain.loader import validate_paths

    pipelines, problems = validate_paths(paths)
    for problem in problems:
        err.print(f"[red]error[/] {problem}", highlight=False, soft_wrap=True)
    for p in pipelines:
        out.print(f"[green]ok[/] {p.name}: {len(p.stages)} stages, {len(p.transitions)} transitions, {len(p.gates)} gates")
    if problems:
        err.print(f"{len(problems)} problem(s)")
        raise typer.Exit(1)
    if not pipelines:
        err.print("no definition files found")
        raise typer.Exit(1)


@app.command()
def diagram(
    definition: Annotated[
        str, typer.Argument(metavar="DEFINITION", help="A definition file, or the name of one in CONDUCTOR_DEFINITIONS_DIR.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="mermaid, dot or md")] = "mermaid",
) -> None:
    """Print the state diagram of a definition (python-statemachine's renderer)."""
    from statemachine.contrib.diagram import formatter

    from conductor.domain.loader import load_pipeline
    from conductor.machines import machine_for

    class _Model:
        stage = None
        halted_from = None

    path = Path(definition)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        pipeline = load_pipeline(path)
    else:
        from conductor.domain.loader import DefinitionCatalog

        pipeline = DefinitionCatalog(_settings().definitions_dir).get(definition)
    typer.echo(formatter.render(machine_for(pipeline, _Model()), fmt))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply Alembic migrations to CONDUCTOR_DATABASE_URL."""
    from conductor.config import get_settings
    from conductor.store.db import upgrade

    url = get_settings().database_url
    upgrade(url, revision)
    out.print(f"database at {revision}: {url.split('@')[-1]}")


@app.command()
def start(
    track: str,
    version: str,
    definition: Annotated[str | None, typer.Option(help="Pipeline for a new track.")] = None,
    repository: Annotated[str | None, typer.Option(help="owner/name of the track's repository.")] = None,
    as_: AsOpt = None,
) -> None:
    """Start a release of TRACK at VERSION (creating the track when --definition is given)."""
    c = _conductor()
    if definition:
        c.ensure_track(track, definition, repository=repository, actor=_actor(as_))
    rid = c.start_release(track, version, _actor(as_))
    snap = c.snapshot(rid)
    out.print(f"started release {rid} {escape(snap.key)} in stage {snap.stage}")


@app.command()
def status(track: Annotated[str | None, typer.Option(help="Only this track.")] = None) -> None:
    """A table of releases: stage, gate lights and what each waits for."""
    from conductor.read.release import list_releases

    table = Table(title="Releases")
    for col in ("id", "release", "stage", "status", "gates", "waiting for", "in stage since"):
        table.add_column(col)
    c = _conductor()
    snaps = list_releases(c, track=track, limit=None, newest_first=False).items
    for snap in snaps:
        lights = Text("  ").join(Text.from_markup(LIGHTS.get(g.outcome, "?")) + " " + plain(g.gate) for g in snap.lights)
        table.add_row(
            str(snap.id), plain(snap.key), snap.stage, snap.status, lights, plain(snap.waiting_for), fmt_time(snap.entered_stage_at)
        )
    out.print(table)
    _unconnected_stores(c, {snap.release.track_id for snap in snaps})


def _unconnected_stores(c, tracks: set[str]) -> None:
    """A line for each track whose pipeline moves a store rollout but that has no store connected."""
    from conductor.actions.connections import parse_connections
    from conductor.domain.actions import STORE_ACTIONS
    from conductor.read.tracks import get_track

    for track_id in sorted(tracks):
        info = get_track(c, track_id)
        pipeline = c.catalog.get(info.definition_name)
        uses_store = any(a.action in STORE_ACTIONS for t in pipeline.transitions for a in t.actions)
        if uses_store and parse_connections(track_id, info.settings).store is None:
            out.print(Text(f"{track_id}: store not connected: rollout actions are not performed (conductor track store {track_id} ...)"))


@app.command()
def show(release: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Timeline, gates and evidence of one RELEASE (id or TRACK/VERSION)."""
    c = _conductor()
    snap = c.snapshot(release)
    r = snap.release
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": r.id,
                    "release": r.key,
                    "stage": r.stage,
                    "status": snap.status,
                    "waiting_for": snap.waiting_for,
                    "pending_decision": snap.pending.id if snap.pending else None,
                    "fingerprint": snap.pending.fingerprint if snap.pending else None,
                    "late_decision": snap.late.id if snap.late else None,
                    "build": r.build,
                    "store": snap.store.line if snap.store else None,
                    "audit": [
                        {"kind": a.kind, "actor": a.actor, "from": a.from_stage, "to": a.to_stage, "reason": a.reason} for a in snap.audit
                    ],
                },
                indent=2,
            )
        )
        return
    out.print(
        f"[bold]{escape(r.key)}[/] (id {r.id}) stage [bold]{r.stage}[/] — {snap.status}; "
        f"definition {snap.pipeline.name}@{r.definition_hash[:12]}"
    )
    if snap.waiting_for:
        out.print(Text(f"waiting for: {snap.waiting_for}"))
    if snap.store is not None:
        out.print(Text(f"store build: {r.build or 'unknown'}; {snap.store.line}"))
    if snap.pending is not None:
        print_decision(out, snap.pending)
    elif snap.late is not None:
        out.print(
            Text(f"decision {snap.late.id} went unanswered by its deadline; `conductor approve {r.key}` (or reject) still answers it")
        )
        print_decision(out, snap.late)
    elif snap.latest is not None:
        print_decision(out, snap.latest)
    print_timeline(out, snap)
    if snap.outbox:
        t = Table(title="Actions")
        for col in ("action", "params", "status", "attempts", "last error"):
            t.add_column(col)
        for a in snap.outbox:
            t.add_row(
                a.action,
                plain(json.dumps({k: v for k, v in a.params.items() if k != "release"})),
                a.status,
                str(a.attempts),
                plain(a.last_error or ""),
            )
        out.print(t)


@app.command()
def signal(
    release: str,
    name: str,
    value: str,
    samples: Annotated[int | None, typer.Option(help="Sample size behind the value.")] = None,
    source: str = "cli",
    sha: Annotated[str | None, typer.Option(help="Commit the value was measured on.")] = None,
    events: Annotated[
        int | None, typer.Option(help="Of the samples, how many the value counts (e.g. crash-free sessions); compare gates use it.")
    ] = None,
) -> None:
    """Record a signal value for RELEASE and re-evaluate it."""
    verdict = _conductor().record_signal(release, name, value, samples=samples, source=source, sha=sha, events=events)
    out.print(Text(f"recorded {name}={value}; verdict: {verdict or '-'}"))


@app.command()
def signoff(release: str, team: str, as_: AsOpt = None, refuse: bool = False, reason: str = "") -> None:
    """TEAM signs off RELEASE (or refuses with --refuse)."""
    verdict = _conductor().sign_off(release, team, _actor(as_), approved=not refuse, reason=reason)
    out.print(Text(f"{team} {'refused' if refuse else 'signed off'}; verdict: {verdict or '-'}"))


@app.command()
def approve(
    release: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (required).")],
    decision: Annotated[int | None, typer.Option(help="Decision id being approved.")] = None,
    fingerprint: Annotated[str | None, typer.Option(help="Evidence fingerprint being approved.")] = None,
    as_: AsOpt = None,
    role: RoleOpt = "release_manager",
) -> None:
    """Approve the paused decision of RELEASE."""
    stage = _conductor().approve(release, _actor(as_, role), reason, evaluation_id=decision, fingerprint=fingerprint)
    out.print(f"approved; release is now in {stage}")


@app.command()
def reject(
    release: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (required).")],
    decision: Annotated[int | None, typer.Option()] = None,
    as_: AsOpt = None,
    role: RoleOpt = "release_manager",
) -> None:
    """Reject the paused decision of RELEASE (hold, or halt in a rollout stage)."""
    stage = _conductor().reject(release, _actor(as_, role), reason, evaluation_id=decision)
    out.print(f"rejected; release is in {stage}")


@app.command()
def pause(release: str, reason: Annotated[str, typer.Option("--reason")], as_: AsOpt = None) -> None:
    """Stop the robot from advancing RELEASE."""
    changed = _conductor().pause(release, _actor(as_), reason)
    out.print("paused" if changed else "already paused")


@app.command()
def resume(
    release: str,
    reason: Annotated[str, typer.Option("--reason")],
    as_: AsOpt = None,
    role: RoleOpt = "release_manager",
    restore_flags: Annotated[bool, typer.Option("--restore-flags", help="Turn the kill-switch flags a halt turned off back on.")] = False,
) -> None:
    """Lift a pause, or resume a halted rollout (its kill-switch flags stay off unless --restore-flags)."""
    stage = _conductor().resume(release, _actor(as_, role), reason, restore_flags=restore_flags)
    out.print(f"resumed; release is in {stage}")


@app.command()
def cancel(release: str, reason: Annotated[str, typer.Option("--reason")], as_: AsOpt = None) -> None:
    """Abandon RELEASE."""
    _conductor().cancel(release, _actor(as_), reason)
    out.print("cancelled")


@app.command()
def replay(
    definition: Annotated[Path, typer.Option("--definition", help="The definition to try (a YAML file).")],
    track: Annotated[str | None, typer.Option(help="Only this track (default: every track using a definition of that name).")] = None,
    since: Annotated[str, typer.Option(help="Releases started within this long, e.g. 90d or 36h.")] = "90d",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run past releases' recorded signals through DEFINITION: where its decisions would differ,
    and totals (pauses, halts, time to release). Writes nothing."""
    from conductor.domain.definition import parse_duration
    from conductor.domain.loader import load_pipeline
    from conductor.read.replay import replay as run

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    report = run(_conductor(), load_pipeline(definition), track=track, since=window)
    if as_json:
        from conductor.api.schemas import ReplayOut

        typer.echo(ReplayOut.model_validate(report).model_dump_json(indent=2))
        return
    print_replay(out, report)


@app.command()
def tick() -> None:
    """Fire every timer that is due now (soak ends, branch day, approval deadlines)."""
    n = _conductor().tick()
    out.print(f"fired {n} timer(s)")


token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name_arg: Annotated[str | None, typer.Argument(metavar="NAME", help="Who or what uses the token.", show_default=False)] = None,
    role: Annotated[str, typer.Option("--role", help="viewer, release_manager or admin.")] = "viewer",
    name: Annotated[str | None, typer.Option("--name", help="The same as NAME.")] = None,
    identity: Annotated[
        list[str] | None, typer.Option("--identity", help="A VCS login or email the holder commits as (repeat it); four-eyes uses them.")
    ] = None,
    as_: AsOpt = None,
) -> None:
    """Create an API token for NAME (e.g. `conductor token create rita --role release_manager`);
    it is printed once and only its hash is kept."""
    from conductor.service.tokens import create_token

    who = name_arg or name
    if not who or (name_arg and name and name_arg != name):
        raise typer.BadParameter("give the token's NAME once, as an argument (or --name)", param_hint="NAME")
    typer.echo(create_token(_conductor(), who, role, identity or [], actor=_actor(as_, "admin")))


@token_app.command("identities")
def token_identities(
    name: str,
    identities: Annotated[list[str] | None, typer.Argument(help="Logins and emails; none clears them.")] = None,
    as_: AsOpt = None,
) -> None:
    """Set the VCS identities (logins, emails) the holder of token NAME commits as."""
    from conductor.service.tokens import set_identities

    known = set_identities(_conductor(), name, identities or [], actor=_actor(as_, "admin"))
    out.print(Text(f"{name} commits as: {', '.join(known) or 'its token name only'}"))


@token_app.command("revoke")
def token_revoke(name: str, as_: AsOpt = None) -> None:
    """Revoke the token NAME."""
    from conductor.service.tokens import revoke_token

    revoke_token(_conductor(), name, actor=_actor(as_, "admin"))
    out.print(Text(f"revoked {name}"))


@token_app.command("list")
def token_list() -> None:
    """List tokens (names and roles, never the tokens)."""
    from conductor.service.tokens import list_tokens

    t = Table(title="API tokens")
    for col in ("name", "role", "identities", "created", "revoked"):
        t.add_column(col)
    for row in list_tokens(_conductor()):
        t.add_row(
            plain(row["name"]),
            row["role"],
            plain(", ".join(row["identities"])),
            fmt_time(row["created_at"]),
            "yes" if row["revoked"] else "",
        )
    out.print(t)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (webhooks, REST, health, metrics) with uvicorn; configured by CONDUCTOR_* variables."""
    import uvicorn

    # The factory runs in each worker process: nothing is built here, so workers share no connections.
    uvicorn.run("conductor.api:create_app", factory=True, host=host, port=port, workers=workers, proxy_headers=True, log_level="warning")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Embedded mode: the API plus an in-process worker and scheduler, no broker (SQLite by default)."""
    import uvicorn

    from conductor.api import create_app
    from conductor.bootstrap import build
    from conductor.config import get_settings

    settings = get_settings()
    if settings.broker_url:
        raise ConductorError(
            "CONDUCTOR_BROKER_URL is set: run `conductor api`, `celery -A workers worker` and "
            "`celery -A workers beat` (distributed mode), or unset it for `conductor serve`"
        )
    wired = build(settings, mode="embedded")
    api_app = create_app(settings, wired)  # given a wired app, the API starts no runner of its own
    _serving_banner(wired.conductor, host, port)
    wired.runner.start()
    try:
        uvicorn.run(api_app, host=host, port=port, log_level="warning")
    finally:
        wired.runner.stop()
        wired.close()


def _serving_banner(c, host: str, port: int) -> None:
    """What a newcomer needs after `conductor serve`: where it listens, where the data is, and how
    to get in (the first token)."""
    from conductor.service.tokens import list_tokens

    url = c.db.engine.url
    where = f"SQLite file {url.database}" if url.get_backend_name() == "sqlite" else url.render_as_string(hide_password=True)
    out.print(Text(f"conductor serving on http://{host}:{port} (dashboard at /, API docs at /docs)"))
    out.print(Text(f"  embedded worker and scheduler; database: {where}"))
    if not list_tokens(c):
        out.print(Text("  no API tokens yet; with the same CONDUCTOR_* settings, run"))
        out.print(Text("    conductor token create me --role admin"))
        out.print(Text("  and paste the token it prints on the dashboard's sign-in page"))


track_app = typer.Typer(help="Tracks: an app x platform, its pipeline and where its events come from.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(track_app, name="track")


def _show_track(info, as_json: bool) -> None:
    from conductor.api.schemas import TrackOut

    shown = TrackOut.model_validate(info)  # the API's view: secrets by name only, never their values
    if as_json:
        typer.echo(shown.model_dump_json(indent=2))
        return
    table = Table(title=f"Track {info.id}", show_header=False)
    for key, value in shown.model_dump().items():
        table.add_row(key, plain(", ".join(value) if isinstance(value, list) else value))
    out.print(table)


@track_app.command("list")
def track_list() -> None:
    """Every track with its definition and repository."""
    from conductor.read.tracks import list_tracks

    table = Table(title="Tracks")
    for col in ("track", "definition", "repository", "branch pattern", "four-eyes"):
        table.add_column(col)
    for t in list_tracks(_conductor()):
        four_eyes = "on" if t.four_eyes else "off"
        table.add_row(plain(t.id), plain(t.definition_name), plain(t.repository or "-"), plain(t.branch_pattern), four_eyes)
    out.print(table)


@track_app.command("show")
def track_show(track: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """TRACK's settings (secrets by name only)."""
    from conductor.read.tracks import get_track

    _show_track(get_track(_conductor(), track), as_json)


@track_app.command("update")
def track_update(
    track: str,
    repository: Annotated[str | None, typer.Option(help="owner/name that webhooks are matched by ('' detaches it).")] = None,
    branch_pattern: Annotated[str | None, typer.Option(help="Release branch name, with {version} once.")] = None,
    critical_fix_marker: Annotated[str | None, typer.Option(help="Commit text or label that marks a critical fix.")] = None,
    four_eyes: Annotated[bool | None, typer.Option("--four-eyes/--no-four-eyes", help="Nobody approves behind their own change.")] = None,
    github_secret: Annotated[str | None, typer.Option(help="X-Hub-Signature-256 secret for this track ('' removes it).")] = None,
    gitlab_token: Annotated[str | None, typer.Option(help="X-Gitlab-Token for this track ('' removes it).")] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="whsec_... Standard Webhooks secret ('' removes it).")] = None,
    as_: AsOpt = None,
) -> None:
    """Change TRACK's settings; only the options given change. Audited."""
    from conductor.read.tracks import get_track
    from conductor.service.tracks import TrackChanges, update_track

    secrets = {k: v for k, v in (("github_secret", github_secret), ("gitlab_token", gitlab_token), ("webhook_secret", webhook_secret))
               if v is not None}  # fmt: skip
    changes = TrackChanges(
        repository=repository or None,
        clear_repository=repository == "",
        branch_pattern=branch_pattern,
        critical_fix_marker=critical_fix_marker,
        four_eyes=four_eyes,
        secrets=secrets or None,
    )
    c = _conductor()
    update_track(c, track, _actor(as_, "admin"), changes)
    _show_track(get_track(c, track), as_json=False)


@track_app.command("store")
def track_store(
    track: str,
    kind: Annotated[str | None, typer.Argument(metavar="[play|appstore]", help="The store; omit with --check or --disconnect.")] = None,
    package: Annotated[str | None, typer.Option(help="Play: the app's package name.")] = None,
    credentials_file: Annotated[str | None, typer.Option(help="Play: the service account's JSON key file.")] = None,
    credentials_env: Annotated[str | None, typer.Option(help="Play: a variable holding the service account's JSON key.")] = None,
    app_id: Annotated[str | None, typer.Option(help="App Store: the app's Apple id.")] = None,
    key_id: Annotated[str | None, typer.Option(help="App Store: the API key's id.")] = None,
    issuer_id: Annotated[str | None, typer.Option(help="App Store: the API key's issuer id.")] = None,
    key_file: Annotated[str | None, typer.Option(help="App Store: the API key's .p8 file.")] = None,
    key_env: Annotated[str | None, typer.Option(help="App Store: a variable holding the .p8 key.")] = None,
    ring: Annotated[
        list[str] | None, typer.Option(help="RING=TARGET: distribute RING to this Play testing track / TestFlight group.")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="One read-only call: do the credentials work?")] = False,
    disconnect: Annotated[bool, typer.Option("--disconnect", help="Remove the store connection.")] = False,
    as_: AsOpt = None,
) -> None:
    """Connect TRACK to its app store (credentials by reference: a file or a variable name, never the
    secret), check the connection, or disconnect it."""
    from conductor.service.tracks import connect_store

    c = _conductor()
    if disconnect:
        connect_store(c, track, _actor(as_, "admin"), None)
        out.print(Text(f"{track}: store disconnected (rollout actions are not performed)"))
        return
    if kind is not None:
        rings = dict(_pair(r, "--ring") for r in ring or [])
        if kind == "play":
            ref = _credential_ref(credentials_file, credentials_env, "--credentials-file", "--credentials-env")
            connection = {"kind": "play", "package": package, "credentials": ref, "rings": rings}
        elif kind == "appstore":
            ref = _credential_ref(key_file, key_env, "--key-file", "--key-env")
            connection = {
                "kind": "appstore",
                "app_id": app_id,
                "key_id": key_id,
                "issuer_id": issuer_id,
                "private_key": ref,
                "rings": rings,
            }
        else:
            raise typer.BadParameter(f"{kind!r}: the store is play or appstore", param_hint="KIND")
        out.print(Text(f"{track}: {connect_store(c, track, _actor(as_, 'admin'), connection)}"))
    if check or kind is None:
        _check(c, track, "store")


def _connection_cmd(key: str, track: str, config: Path | None, check: bool, disconnect: bool, as_: str | None) -> None:
    from conductor.service.tracks import connect

    c = _conductor()
    if disconnect:
        connect(c, track, _actor(as_, "admin"), key, None)
        out.print(Text(f"{track}: {key} disconnected"))
        return
    if config is not None:
        out.print(Text(f"{track}: {connect(c, track, _actor(as_, 'admin'), key, _read_mapping(config))}"))
    if check or config is None:
        _check(c, track, key)


def _read_mapping(path: Path) -> dict:
    """A small YAML or JSON file holding one mapping (a connection's settings)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConductorError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConductorError(f"{path}: not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConductorError(f"{path}: expected a mapping (kind: ..., and its settings)")
    return data


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A YAML/JSON file with the connection (see README: Connecting).")]
CheckOpt = Annotated[bool, typer.Option("--check", help="One read-only call: do the credentials work?")]
DisconnectOpt = Annotated[bool, typer.Option("--disconnect", help="Remove the connection.")]


@track_app.command("vcs")
def track_vcs(track: str, config: ConfigOpt = None, check: CheckOpt = False, disconnect: DisconnectOpt = False, as_: AsOpt = None) -> None:
    """Connect TRACK's VCS/CI host (GitHub or GitLab: cut_branch, distribute to CI rings, tag_release),
    check it, or disconnect it."""
    _connection_cmd("vcs", track, config, check, disconnect, as_)


@track_app.command("cdevents")
def track_cdevents(
    track: str, config: ConfigOpt = None, check: CheckOpt = False, disconnect: DisconnectOpt = False, as_: AsOpt = None
) -> None:
    """Connect TRACK's CDEvents sink ({url, secret: {env|file}}): every stage change, halt, resume and
    answer is sent there as a CloudEvent."""
    if check:
        raise typer.BadParameter(
            "a CDEvents sink has no read-only call to check; its deliveries show on the release's actions", param_hint="--check"
        )
    if not (config or disconnect):
        raise typer.BadParameter("give --config sink.yaml (url, secret) or --disconnect", param_hint="--config")
    _connection_cmd("cdevents", track, config, False, disconnect, as_)


@track_app.command("flags")
def track_flags(
    track: str, config: ConfigOpt = None, check: CheckOpt = False, disconnect: DisconnectOpt = False, as_: AsOpt = None
) -> None:
    """Connect TRACK's feature-flag service (Unleash or Flagsmith: set_flag, the kill switch on a halt),
    check it, or disconnect it."""
    _connection_cmd("flags", track, config, check, disconnect, as_)


@track_app.command("sources")
def track_sources(
    track: str,
    file: Annotated[
        Path | None, typer.Option("--file", help="The track's sources (YAML; see README: Connecting your health data).")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop pulling signals for this track.")] = False,
    as_: AsOpt = None,
) -> None:
    """Set (or remove) where TRACK's signals are pulled from: Sentry, Play vitals, Jira, GitHub or
    GitLab issues, Prometheus, any JSON API. Errors name the file, line and field."""
    from conductor.service.sources import set_sources
    from conductor.sources.pull.config import load_sources

    c = _conductor()
    if remove:
        set_sources(c, track, _actor(as_, "admin"), None)
        out.print(Text(f"{track}: sources removed"))
        return
    if file is None:
        raise typer.BadParameter("give --file sources.yaml, or --remove", param_hint="--file")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConductorError(f"{file}: cannot read: {exc.strerror}") from None
    parsed = set_sources(c, track, _actor(as_, "admin"), load_sources(text, str(file)), str(file))
    assert parsed is not None
    for s in parsed.sources:
        out.print(Text(f"{track}: {s.name} ({s.config.kind}, every {s.config.interval}) -> {', '.join(s.config.signals)}"))
    out.print(Text(f"try them once, writing nothing: conductor sources check {track}"))


@track_app.command("night")
def track_night(
    track: str,
    quiet_hours: Annotated[str | None, typer.Option(help="HH:MM-HH:MM in the pipeline's time zone, e.g. 22:00-07:00.")] = None,
    up_to: Annotated[str | None, typer.Option(help="The last stage the robot may enter at night, e.g. rollout_1.")] = None,
    up_to_percent: Annotated[float | None, typer.Option(help="The most users the robot may reach at night, in %.")] = None,
    off: Annotated[bool, typer.Option("--off", help="No quiet hours.")] = False,
    as_: AsOpt = None,
) -> None:
    """TRACK's quiet hours: at night, moves beyond the budget wait for the morning window."""
    from conductor.service.tracks import set_night

    if off:
        set_night(_conductor(), track, _actor(as_, "admin"), None)
        out.print(Text(f"{track}: no quiet hours"))
        return
    if quiet_hours is None:
        raise typer.BadParameter(
            "give --quiet-hours HH:MM-HH:MM (and --up-to STAGE or --up-to-percent N), or --off", param_hint="--quiet-hours"
        )
    raw = {"quiet_hours": quiet_hours, "up_to_stage": up_to, "up_to_percent": up_to_percent}
    out.print(Text(f"{track}: {set_night(_conductor(), track, _actor(as_, 'admin'), {k: v for k, v in raw.items() if v is not None})}"))


def _pair(text: str, option: str) -> tuple[str, str]:
    ring, sep, target = text.partition("=")
    if not sep or not ring or not target:
        raise typer.BadParameter(f"{text!r}: write RING=TARGET", param_hint=option)
    return ring, target


def _credential_ref(path: str | None, env: str | None, file_opt: str, env_opt: str) -> dict[str, str]:
    if (path is None) == (env is None):
        raise typer.BadParameter(f"give the credentials as exactly one of {file_opt} PATH or {env_opt} NAME", param_hint=file_opt)
    return {"file": path} if path is not None else {"env": env}  # type: ignore[dict-item]


def _check(c, track: str, key: str) -> None:
    from conductor.actions.http import make_client
    from conductor.actions.registry import ActionAdapters
    from conductor.service.connections import check_connection

    adapters = ActionAdapters(make_client(30.0))
    try:
        out.print(Text(f"{track}: {key} check ok: {check_connection(c, adapters, track, key)}"))
    finally:
        adapters.close()


store_app = typer.Typer(help="The stores' side of releases: drift and the rollout state.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(store_app, name="store")


@store_app.command("sync")
def store_sync() -> None:
    """Read the store's state of every release with a production rollout now (as the periodic job does)."""
    from conductor.actions.http import make_client
    from conductor.actions.registry import ActionAdapters
    from conductor.service.store_state import sync_stores

    adapters = ActionAdapters(make_client(30.0))
    try:
        report = sync_stores(_conductor(), adapters)
    finally:
        adapters.close()
    out.print(Text(f"read {report.read} release(s) at their stores; {report.drifted} drifted, {report.failed} could not be read"))


@store_app.command("accept")
def store_accept(release: str, reason: Annotated[str, typer.Option("--reason")], as_: AsOpt = None) -> None:
    """The store's state of RELEASE is right (someone changed it in the console on purpose): adopt it."""
    from conductor.service.store_state import accept_drift

    accept_drift(_conductor(), release, _actor(as_), reason)
    out.print(Text(f"{release}: the store's state is accepted; the robot acts on the release again"))


@store_app.command("reapply")
def store_reapply(release: str, reason: Annotated[str, typer.Option("--reason")], as_: AsOpt = None) -> None:
    """Conductor's state of RELEASE is right: set it at the store again."""
    from conductor.service.store_state import reapply

    action = reapply(_conductor(), release, _actor(as_), reason)
    out.print(Text(f"{release}: {action} queued to restore Conductor's state at the store"))


sources_app = typer.Typer(help="Pulled signals: what the track's sources answer.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(sources_app, name="sources")


@sources_app.command("check")
def sources_check(track: str, release: Annotated[str | None, typer.Argument(help="A version or id (default: the newest).")] = None) -> None:
    """Run each of TRACK's sources once for RELEASE and print what it would record; writes nothing."""
    from conductor.actions.http import make_client
    from conductor.service.sources import check_sources

    client = make_client(15.0)
    try:
        results = check_sources(_conductor(), client, track, release)
    finally:
        client.close()
    table = Table(title=f"Sources of {track}")
    for col in ("source", "signal", "value", "samples", "observed", "error", "latency"):
        table.add_column(col)
    failed = False
    for name, result in results:
        latency = f"{result.latency_s * 1000:.0f} ms" if result.latency_s is not None else ""
        for r in result.readings:
            failed |= r.error is not None
            value = "" if r.value is None else f"{r.value:g}"
            table.add_row(
                plain(name), plain(r.signal), value, plain(r.samples or ""), fmt_time(r.observed_at), plain(r.error or ""), latency
            )
        for note in result.notes:
            table.add_row(plain(name), "", "", "", "", plain(f"asked: {note}"), "")
    out.print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def digest(track: Annotated[str | None, typer.Argument(help="One track (default: every track).")] = None,
           hours: Annotated[float, typer.Option(help="How far back.")] = 24.0) -> None:  # fmt: skip
    """The digest of the last HOURS: what moved, what waits and for whom, what halted and why, riskiest first."""
    from datetime import timedelta

    from conductor.read.tracks import list_tracks
    from conductor.service.digest import digest as compute

    c = _conductor()
    now = c.now()
    for t in list_tracks(c):
        if track is None or t.id == track:
            out.print(Text(compute(c, t.id, now - timedelta(hours=hours), now).text()))


ScopeTrack = Annotated[str | None, typer.Option("--track", help="One track.")]
ScopeAll = Annotated[bool, typer.Option("--all", help="Every track.")]


def _scope(track: str | None, every: bool) -> str | None:
    if (track is None) == (not every):
        raise typer.BadParameter("give exactly one of --track TRACK or --all", param_hint="--track")
    return track


@app.command()
def freeze(
    reason: Annotated[str, typer.Option("--reason")],
    track: ScopeTrack = None,
    every: ScopeAll = False,
    until: Annotated[
        str | None, typer.Option(help="When it ends: an ISO time, or a duration such as 3d (default: until unfreeze).")
    ] = None,
    as_: AsOpt = None,
) -> None:
    """Stop the line: no move that raises user exposure until unfrozen (halts and cancels still happen)."""
    from datetime import datetime

    from conductor.domain.definition import parse_duration
    from conductor.service.freezes import freeze as do

    c = _conductor()
    ends = None
    if until is not None:
        try:
            ends = c.now() + parse_duration(until)
        except ValueError:
            try:
                ends = datetime.fromisoformat(until)
            except ValueError:
                raise typer.BadParameter(
                    f"{until!r}: an ISO time (2026-12-24T18:00+01:00) or a duration (3d)", param_hint="--until"
                ) from None
    fid = do(c, _actor(as_), reason, track=_scope(track, every), until=ends)
    out.print(Text(f"freeze {fid}: {track or 'every track'} frozen{' until ' + fmt_time(ends) if ends else ' until unfrozen'}: {reason}"))


@app.command()
def unfreeze(
    reason: Annotated[str, typer.Option("--reason")], track: ScopeTrack = None, every: ScopeAll = False, as_: AsOpt = None
) -> None:
    """Lift the manual freezes of a track (or of every track); what they held moves on its own."""
    from conductor.service.freezes import unfreeze as do

    n = do(_conductor(), _actor(as_), reason, track=_scope(track, every))
    out.print(Text(f"{n} freeze(s) lifted" if n else "nothing to lift: no manual freeze in force there"))


@app.command()
def freezes(track: ScopeTrack = None) -> None:
    """The freezes in force or coming (manual and calendar), newest first."""
    from conductor.service.freezes import list_freezes

    table = Table(title="Freezes")
    for col in ("id", "scope", "source", "from", "until", "reason", "by"):
        table.add_column(col)
    for f in list_freezes(_conductor(), track):
        table.add_row(str(f["id"]), plain(f["track_id"] or "every track"), f["source"], fmt_time(f["starts_at"]),
                      fmt_time(f["ends_at"]) if f["ends_at"] else "unfreeze", plain(f["reason"]), plain(f["actor"]))  # fmt: skip
    out.print(table)


@app.command("skip-cut")
def skip_cut(
    track: Annotated[str, typer.Option("--track", help="The track whose next branch cut is skipped.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")],
    undo: Annotated[bool, typer.Option("--undo", help="Bring the skipped cuts back.")] = False,
    as_: AsOpt = None,
) -> None:
    """Skip TRACK's next scheduled branch cut (a holiday, a hack week): releases waiting for it wait
    for the one after. Nothing is frozen. --undo brings skipped cuts back."""
    from conductor.service.freezes import restore_cuts, skip_next_cut

    c, who = _conductor(), _actor(as_)
    if undo:
        n = restore_cuts(c, who, reason, track=track)
        out.print(Text(f"{track}: {n} skipped branch cut(s) restored" if n else f"{track}: no branch cut is skipped"))
        return
    cut = skip_next_cut(c, who, reason, track=track)
    out.print(Text(f"{track}: the branch cut of {fmt_time(cut)} is skipped"))


@app.command()
def calendar(file: Annotated[Path, typer.Option("--file", help="YAML: timezone, freezes, holidays, blackouts.")], track: ScopeTrack = None,
             every: ScopeAll = False, as_: AsOpt = None) -> None:  # fmt: skip
    """Set the freeze calendar of a track (or of every track): code freezes, holidays (no branch cut), blackout hours."""
    from conductor.service.freezes import set_calendar

    counts = set_calendar(_conductor(), _actor(as_, "admin"), _read_mapping(file), track=_scope(track, every))
    out.print(Text(f"{track or 'every track'}: calendar set ({counts['freezes']} freezes, {counts['holidays']} holidays, "
                   f"{counts['blackouts']} blackout hours)"))  # fmt: skip


@app.command("build")
def build_cmd(
    release: str, build: str, reason: Annotated[str, typer.Option(help="Why (default: set by hand).")] = "", as_: AsOpt = None
) -> None:
    """Say which store build RELEASE is (Play versionCode, App Store build number)."""
    from conductor.service.releases import record_build

    before = record_build(_conductor(), release, build, _actor(as_), reason)
    out.print(Text(f"{release}: store build {build}" + (f" (was {before})" if before and before != build else "")))


@app.command("configure-actions")
def configure_actions_cmd(
    track: str,
    slack_url: Annotated[str | None, typer.Option(help="Slack-compatible incoming webhook URL ('' removes it).")] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Generic outgoing webhook URL, signed per Standard Webhooks.")] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="whsec_... secret the outgoing webhook is signed with.")] = None,
    events: Annotated[str | None, typer.Option(help="Comma-separated notifications to send (default: all).")] = None,
    actions_url: Annotated[str | None, typer.Option(help="Endpoint that performs cut_branch, distribute, set_rollout, ...")] = None,
    actions_secret: Annotated[str | None, typer.Option(help="whsec_... secret action calls are signed with.")] = None,
    as_: AsOpt = None,
) -> None:
    """Where TRACK's notifications and actions go (unset actions are skipped, with the reason on the release)."""
    from conductor.service.tracks import configure_actions

    changes: dict[str, str | list[str]] = {
        k: v
        for k, v in (
            ("slack_url", slack_url),
            ("webhook_url", webhook_url),
            ("webhook_secret", webhook_secret),
            ("actions_url", actions_url),
            ("actions_secret", actions_secret),
        )
        if v is not None
    }
    if events is not None:
        changes["events"] = [e.strip() for e in events.split(",") if e.strip()]
    shown = configure_actions(_conductor(), track, _actor(as_, "admin"), changes)
    typer.echo(json.dumps(shown, indent=2))


audit_app = typer.Typer(help="The audit trail: hash-chained after each commit, verified, exported.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Seal the audit rows committed since the last seal, then check the whole hash chain: exit 0
    with the number of rows and the chain's head, or 1 naming the first row that breaks it."""
    from conductor.service.audit import verify

    result = verify(_conductor())
    if result.broken is not None:
        err.print(Text(f"audit chain broken: {result.broken.describe()}"), soft_wrap=True)
        err.print(Text(f"the {result.checked} sealed row(s) before it check out"))
        raise typer.Exit(1)
    late = f"; {result.unsealed} row(s) committed since, sealed next time" if result.unsealed else ""
    out.print(Text(f"audit chain ok: {result.checked} sealed row(s); head seq {result.head_seq} {result.head_hash}{late}"), soft_wrap=True)


@audit_app.command("export")
def audit_export(
    release: Annotated[str, typer.Option("--release", help="The release: id or TRACK/VERSION.", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", help="Write to this file (default: standard output).")] = None,
) -> None:
    """Every audit row of a release as JSON lines, in order, with its hashes; approvals and
    rejections with the decision's evidence (verdict, fingerprint, summary, gates). Seals first."""
    from conductor.service.audit import export_release

    exported = export_release(_conductor(), release)
    text = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in exported.lines)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    err.print(Text(f"{len(exported.lines)} audit row(s) of {exported.release} written to {output}"))


@app.command()
def demo(
    speed: Annotated[float, typer.Option(help="Simulated hours per real second.")] = 60.0,
    seed: int = 7,
    serve_after: Annotated[bool, typer.Option("--serve", help="Then open the demo's database in the dashboard (conductor serve).")] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port.")] = 8000,
) -> None:
    """Walk two weekly releases through the pipeline on a compressed clock (embedded SQLite)."""
    from conductor.demo import demo_dir, run_demo

    # Piped output (make demo in CI) would wrap the tables at 80 columns; give them room.
    console = out if out.is_terminal else Console(width=150)
    code = run_demo(console, speed=speed, seed=seed)
    if not serve_after or code != 0:
        raise typer.Exit(code)
    import os

    from conductor.config import get_settings
    from conductor.service.tokens import create_token

    os.environ["CONDUCTOR_DATABASE_URL"] = f"sqlite:///{demo_dir() / 'demo.db'}"
    get_settings.cache_clear()
    token = create_token(_conductor(), f"demo-{os.getpid()}", "admin")
    out.print(Text(f"\nthe demo's dashboard: sign in at http://127.0.0.1:{port} with this token: {token}"))
    serve(host="127.0.0.1", port=port)


def main() -> None:
    """Console entry point. Usage errors (an unknown command, a missing argument, a bad value) are
    click's: a usage line, the error, exit code 2. A ConductorError is one red line and exit code
    1. Never a traceback for either."""
    try:
        # Standalone mode: click shows usage errors and --help itself and exits with their codes;
        # anything else (our errors) comes out of app() to be shown here.
        app(prog_name="conductor")
    except DefinitionError as exc:
        for p in exc.problems:
            err.print(f"[red]error[/] {p}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except ConductorError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
