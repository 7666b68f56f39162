"""A track's connections to the systems that act for it: its app store (and, in later parts,
VCS/CI host and feature flags). They live in Track.settings under their own keys, validated
here; credentials are references (conductor.connect.credentials), never secrets.

    {"store": {"kind": "play", "package": "com.spotify.music",
               "credentials": {"file": "/run/secrets/play.json"},
               "rings": {"alpha": "alpha", "beta": "beta"}}}
    {"store": {"kind": "appstore", "app_id": "324684580", "key_id": "2X9R4HXF34",
               "issuer_id": "57246542-96fe-1a63-e053-0824d011072a",
               "private_key": {"env": "ASC_KEY_P8"}, "rings": {"beta": "External Testers"}}}

`rings` maps the pipeline's `distribute` rings to the store's testing tracks (Play: internal,
alpha, beta or a closed track's name) or TestFlight groups; a ring it does not map is left to
the VCS/CI connection or the generic actions_url.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conductor.actions.cdevents import CDEventsConnection
from conductor.actions.flags.base import FlagClient
from conductor.actions.flags.flagsmith import FlagsmithFlagsConfig
from conductor.actions.flags.unleash import UnleashFlagsConfig
from conductor.actions.stores.base import StoreClient
from conductor.actions.vcs.base import VcsClient
from conductor.actions.vcs.github_config import GitHubVcsConfig
from conductor.actions.vcs.gitlab import GitLabVcsConfig
from conductor.clock import Clock, system_clock
from conductor.connect.credentials import CredentialRef
from conductor.domain.errors import InvalidSettings

STORE_KEY = "store"
VCS_KEY = "vcs"
FLAGS_KEY = "flags"
CDEVENTS_KEY = "cdevents"
CONNECTION_KEYS = (STORE_KEY, VCS_KEY, FLAGS_KEY, CDEVENTS_KEY)
KINDS = ("play", "appstore", "github", "gitlab", "unleash", "flagsmith")


class _Connection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlayConnection(_Connection):
    """Google Play: the app's package name and a service account's JSON key (by reference)."""

    kind: Literal["play"]
    package: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$", max_length=200)
    credentials: CredentialRef
    rings: dict[str, str] = Field(default_factory=dict, description="pipeline ring -> Play testing track")

    def describe(self) -> str:
        return f"Google Play {self.package} (service account from {self.credentials.describe()})"


class AppStoreConnection(_Connection):
    """App Store Connect: the app's Apple id and an API key (key id, issuer id, the .p8 by reference)."""

    kind: Literal["appstore"]
    app_id: str = Field(pattern=r"^[0-9]{1,20}$")
    key_id: str = Field(pattern=r"^[A-Z0-9]{6,20}$")
    issuer_id: str = Field(min_length=8, max_length=64)
    private_key: CredentialRef
    rings: dict[str, str] = Field(default_factory=dict, description="pipeline ring -> TestFlight group")

    def describe(self) -> str:
        return f"App Store Connect app {self.app_id} (key {self.key_id}, .p8 from {self.private_key.describe()})"


StoreConnection = Annotated[PlayConnection | AppStoreConnection, Field(discriminator="kind")]


class _CiRings(BaseModel):
    # pipeline ring -> the workflow (GitHub: file name or id; GitLab: the pipeline's CONDUCTOR_WORKFLOW)
    # that builds and distributes to it; `distribute` to such a ring starts that workflow.
    workflows: dict[str, str] = Field(default_factory=dict)
    main_branch: str = Field(default="main", min_length=1, max_length=200)  # cut_branch's default source


class GitHubConnection(GitHubVcsConfig, _CiRings):
    """GitHub (or GitHub Enterprise Server): a repository, a token or a GitHub App, CI workflows per ring."""

    kind: Literal["github"]

    def describe(self) -> str:
        auth = f"token from {self.token.describe()}" if self.token else f"GitHub App {self.app.app_id if self.app else '?'}"
        return f"GitHub {self.owner}/{self.repo} ({auth})"


class GitLabConnection(GitLabVcsConfig, _CiRings):
    """GitLab (or a self-hosted one): a project, a token, CI pipelines per ring."""

    kind: Literal["gitlab"]

    def describe(self) -> str:
        return f"GitLab {self.project} at {self.base_url} (token from {self.token.describe()})"


VcsConnection = Annotated[GitHubConnection | GitLabConnection, Field(discriminator="kind")]


class _KillSwitch(BaseModel):
    environment: str = Field(min_length=1, max_length=100)  # where set_flag switches, unless it names another
    # Flags turned off, in the same outbox batch as the store halt, when the robot halts a rollout;
    # only a release manager turns them back on (resume with restore_flags).
    kill_switch: list[str] = Field(default_factory=list, max_length=50)


class UnleashConnection(UnleashFlagsConfig, _KillSwitch):
    kind: Literal["unleash"]

    def describe(self) -> str:
        return f"Unleash project {self.project} at {self.base_url}, environment {self.environment}"


class FlagsmithConnection(FlagsmithFlagsConfig, _KillSwitch):
    kind: Literal["flagsmith"]

    def describe(self) -> str:
        return f"Flagsmith at {self.base_url}, environment {self.environment}"


FlagsConnection = Annotated[UnleashConnection | FlagsmithConnection, Field(discriminator="kind")]


class Connections(BaseModel):
    """The connection part of Track.settings (other keys belong to other features)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    store: StoreConnection | None = None
    vcs: VcsConnection | None = None
    flags: FlagsConnection | None = None
    cdevents: CDEventsConnection | None = None


def parse_connections(track_id: str, settings: dict[str, Any] | None) -> Connections:
    """The validated connections of a track; ConductorError naming the track and field if invalid."""
    try:
        return Connections.model_validate({k: v for k, v in (settings or {}).items() if k in CONNECTION_KEYS})
    except ValidationError as exc:
        err = exc.errors()[0]
        # A discriminated union puts its tag ('play') into the path; it is not a key of the settings.
        where = ".".join(str(p) for p in err["loc"] if p not in KINDS)
        raise InvalidSettings(f"track {track_id}: settings.{where}: {err['msg']}") from None


def vcs_client(conn: GitHubConnection | GitLabConnection, http: httpx.Client) -> VcsClient:
    if isinstance(conn, GitHubConnection):
        from conductor.actions.vcs.github import GitHubVcs

        return GitHubVcs(conn)
    from conductor.actions.vcs.gitlab import GitLabVcs

    return GitLabVcs(conn, http)


def flag_client(conn: UnleashConnection | FlagsmithConnection, http: httpx.Client) -> FlagClient:
    if isinstance(conn, UnleashConnection):
        from conductor.actions.flags.unleash import UnleashFlags

        return UnleashFlags(conn, http)
    from conductor.actions.flags.flagsmith import FlagsmithFlags

    return FlagsmithFlags(conn, http)


def store_client(conn: PlayConnection | AppStoreConnection, http: httpx.Client, *, clock: Clock = system_clock) -> StoreClient:
    """A client for the track's store. Built per use: Play's client is not thread-safe."""
    if isinstance(conn, PlayConnection):
        from conductor.actions.stores.play import PlayStore

        return PlayStore(conn.package, conn.credentials)
    from conductor.actions.stores.appstore import AppStoreConnect

    return AppStoreConnect(
        http, app_id=conn.app_id, key_id=conn.key_id, issuer_id=conn.issuer_id, private_key=conn.private_key, clock=clock
    )
