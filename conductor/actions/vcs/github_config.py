"""GitHub connection settings (kept apart from the client: importing githubkit takes ~0.35 s, and
every process that reads a track's settings needs these models, not the client)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conductor.connect.credentials import CredentialRef


class GitHubAppAuth(BaseModel):
    """A GitHub App installation: the app's id, its private key (PEM) by reference, the installation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: int = Field(gt=0)
    private_key: CredentialRef
    installation_id: int = Field(gt=0)


class GitHubVcsConfig(BaseModel):
    """One repository on github.com or a GitHub Enterprise Server; exactly one of `token` or `app`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["github"] = "github"
    owner: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$")
    repo: str = Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")
    base_url: str = Field(default="https://api.github.com", pattern=r"^https?://[^\s/]+(/\S*)?$")
    token: CredentialRef | None = None
    app: GitHubAppAuth | None = None
    # 2022-11-28 is served by github.com and every supported GHES; the endpoints used here are the same in later versions.
    api_version: str = Field(default="2022-11-28", pattern=r"^\d{4}-\d{2}-\d{2}$")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    key_input: str | None = Field(default="conductor_key", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    return_run_details: bool = True
    dedupe_window_s: int = Field(default=3600, ge=0, le=86400)

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        if (self.token is None) == (self.app is None):
            raise ValueError("give exactly one of token (a credential reference) or app (app_id, private_key, installation_id)")
        return self
