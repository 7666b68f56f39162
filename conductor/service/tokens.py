"""API tokens with roles (viewer < release_manager < admin). Only a hash is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from conductor.errors import AlreadyExists, ConductorError, Forbidden, NotFound
from conductor.service.engine import Actor, Conductor
from conductor.store.models import ApiToken

ROLES = ("viewer", "release_manager", "admin")
PREFIX = "cdt_"


def _hash(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: no dictionary to slow down, unlike passwords.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: str) -> None:
        if not self.allows(role):
            raise Forbidden(f"{self.name} is a {self.role}; this needs {role}")

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.role)


def create_token(c: Conductor, name: str, role: str) -> str:
    """Create a token and return it; it is not stored and cannot be shown again."""
    if role not in ROLES:
        raise ConductorError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not name.strip():
        raise ConductorError("a token needs a name")
    token = PREFIX + secrets.token_urlsafe(32)
    with c.db.transaction() as s:
        if s.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
            raise AlreadyExists(f"a token named {name!r} exists; revoke it first")
        s.add(ApiToken(name=name, role=role, token_hash=_hash(token), created_at=c.now()))
    return token


def authenticate(c: Conductor, token: str | None) -> Principal | None:
    """The principal a bearer token stands for, or None (unknown, revoked, or missing)."""
    if not token or not token.startswith(PREFIX):
        return None
    with c.db.read() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.token_hash == _hash(token))).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.name, row.role)


def revoke_token(c: Conductor, name: str) -> None:
    with c.db.transaction() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
        if row is None:
            raise NotFound(f"no token named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = c.now()


def list_tokens(c: Conductor) -> list[dict]:
    with c.db.read() as s:
        return [
            {"name": t.name, "role": t.role, "created_at": t.created_at, "revoked": t.revoked_at is not None}
            for t in s.scalars(select(ApiToken).order_by(ApiToken.id))
        ]
