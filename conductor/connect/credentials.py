"""Credentials by reference: a track names where a secret lives, never the secret itself.

    {"env": "CONDUCTOR_PLAY_SERVICE_ACCOUNT"}      the value of an environment variable
    {"file": "/run/secrets/play-service-account.json"}   the contents of a file

The reference is what is stored (in Track.settings), shown and logged; the secret is read when an
adapter needs it and is never stored, logged or shown. A missing variable or unreadable file is a
clear, non-retryable error naming the reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conductor.domain.errors import ConductorError

MAX_SECRET_BYTES = 64 * 1024  # a service-account JSON is about 2 KB, a .p8 key 250 bytes


class CredentialError(ConductorError):
    """A credential reference that does not resolve (unset variable, missing or unreadable file)."""

    http_status = 422


class CredentialRef(BaseModel):
    """Where a secret lives: exactly one of `env` (a variable name) or `file` (a path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("a credential reference names exactly one of env (a variable name) or file (a path)")
        return self

    def describe(self) -> str:
        """How the reference is shown: never the secret."""
        return f"env {self.env}" if self.env else f"file {self.file}"

    def read(self) -> str:
        """The secret's text; CredentialError naming the reference when it cannot be read."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise CredentialError(f"credential {self.describe()}: the variable is not set")
            return value
        assert self.file is not None
        path = Path(self.file)
        try:
            if path.stat().st_size > MAX_SECRET_BYTES:
                raise CredentialError(f"credential {self.describe()}: larger than {MAX_SECRET_BYTES} bytes; not a key file")
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialError(f"credential {self.describe()}: {exc.strerror or exc.__class__.__name__}") from None
        except UnicodeDecodeError:
            raise CredentialError(f"credential {self.describe()}: not UTF-8 text") from None
