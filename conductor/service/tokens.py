"""API tokens with roles (viewer < release_manager < admin). Only a hash is stored.

Creating and revoking a token, changing its identities and signing in to the dashboard with it are
audited as global rows (no release, no track): the token's name and role, never the token."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from conductor.context import Context
from conductor.domain.errors import AlreadyExists, ConductorError, Forbidden, NotFound
from conductor.domain.kinds import AuditKind
from conductor.service.audit import add_audit
from conductor.service.step import ROBOT_ACTOR, Actor
from conductor.store.statements import TOKENS, insert_new_id

ROLES = ("viewer", "release_manager", "admin")
PREFIX = "cdt_"


def _hash(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: no dictionary to slow down, unlike passwords.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    identities: tuple[str, ...] = ()

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: str) -> None:
        if not self.allows(role):
            raise Forbidden(f"{self.name} is a {self.role}; this needs {role}")

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.role, frozenset(self.identities))


_IDENTITY = re.compile(r"[^\s\x00]{1,200}")


def check_identities(identities: list[str] | tuple[str, ...]) -> list[str]:
    """The VCS identities a token stands for (logins and emails), trimmed and de-duplicated
    case-insensitively; ConductorError for one that is empty, too long or contains spaces."""
    out: list[str] = []
    for identity in identities:
        value = identity.strip()
        if not _IDENTITY.fullmatch(value):
            raise ConductorError(f"identity {identity!r} must be a login or an email: 1 to 200 characters, no spaces")
        if value.casefold() not in {o.casefold() for o in out}:
            out.append(value)
    return out


def create_token(ctx: Context, name: str, role: str, identities: list[str] | tuple[str, ...] = (), *, actor: Actor = ROBOT_ACTOR) -> str:
    """Create a token and return it; it is not stored and cannot be shown again. `identities` are
    the VCS logins and emails its holder commits as (besides its name): four-eyes refuses them an
    approval behind their own commits. Audited under `actor`."""
    if role not in ROLES:
        raise ConductorError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not name.strip():
        raise ConductorError("a token needs a name")
    known = check_identities(identities)
    token = PREFIX + secrets.token_urlsafe(32)
    with ctx.db.begin() as conn:
        created = insert_new_id(conn, TOKENS, "name", {
            "name": name, "role": role, "token_hash": _hash(token), "identities": known, "created_at": ctx.now(),
        })  # fmt: skip
        if created is None:
            raise AlreadyExists(f"a token named {name!r} exists; revoke it first")
        audited = {"token": name, "role": role, "identities": known}
        add_audit(conn, ctx, AuditKind.TOKEN_CREATED, actor.name, f"{name} ({role})", data=audited)
    return token


def set_identities(ctx: Context, name: str, identities: list[str] | tuple[str, ...], *, actor: Actor = ROBOT_ACTOR) -> list[str]:
    """Replace the VCS identities of the token NAME; returns them. NotFound for no such token.
    Audited (before and after) when they change."""
    known = check_identities(identities)
    with ctx.db.begin() as conn:
        before = conn.execute(select(TOKENS.c.identities).where(TOKENS.c.name == name).with_for_update()).first()
        if before is None:
            raise NotFound(f"no token named {name!r}")
        if list(before.identities or []) != known:
            conn.execute(TOKENS.update().where(TOKENS.c.name == name).values(identities=known))
            add_audit(conn, ctx, AuditKind.TOKEN_IDENTITIES_SET, actor.name, name,
                      data={"token": name, "identities": {"from": list(before.identities or []), "to": known}})  # fmt: skip
    return known


@dataclass(frozen=True)
class TokenSession:
    """What a dashboard session stands for: the token's row id and its principal."""

    token_id: int
    principal: Principal


def authenticate(ctx: Context, token: str | None) -> Principal | None:
    """The principal a bearer token stands for, or None (unknown, revoked, or missing)."""
    found = session_for(ctx, token)
    return found.principal if found else None


_PRINCIPAL = select(TOKENS.c.id, TOKENS.c.name, TOKENS.c.role, TOKENS.c.identities).where(TOKENS.c.revoked_at.is_(None))


def _principal(row: Any) -> Principal:
    return Principal(row.name, row.role, tuple(row.identities or ()))


def session_for(ctx: Context, token: str | None) -> TokenSession | None:
    """The token's row id and principal (a dashboard session keeps the id), or None."""
    if not token or not token.startswith(PREFIX):
        return None
    with ctx.db.reading() as conn:
        row = conn.execute(_PRINCIPAL.where(TOKENS.c.token_hash == _hash(token))).first()
    return TokenSession(row.id, _principal(row)) if row else None


def active_token(ctx: Context, token_id: int) -> Principal | None:
    """The principal of a token that is still valid, or None when it was revoked or deleted."""
    with ctx.db.reading() as conn:
        row = conn.execute(_PRINCIPAL.where(TOKENS.c.id == token_id)).first()
    return _principal(row) if row else None


def revoke_token(ctx: Context, name: str, *, actor: Actor = ROBOT_ACTOR) -> None:
    """Revoke the token NAME (audited; revoking a revoked token changes and audits nothing)."""
    with ctx.db.begin() as conn:
        row = conn.execute(select(TOKENS.c.id, TOKENS.c.role, TOKENS.c.revoked_at).where(TOKENS.c.name == name).with_for_update()).first()
        if row is None:
            raise NotFound(f"no token named {name!r}")
        if row.revoked_at is None:
            conn.execute(TOKENS.update().where(TOKENS.c.id == row.id).values(revoked_at=ctx.now()))
            add_audit(conn, ctx, AuditKind.TOKEN_REVOKED, actor.name, f"{name} ({row.role})", data={"token": name, "role": row.role})


def record_sign_in(ctx: Context, session: TokenSession, *, via: str, client: str | None = None) -> None:
    """Audit a sign-in (the dashboard's): who, in which role, with which token, from where."""
    p = session.principal
    with ctx.db.begin() as conn:
        add_audit(conn, ctx, AuditKind.SIGNED_IN, p.name, f"{via} sign-in as {p.role}",
                  data={"token": p.name, "token_id": session.token_id, "role": p.role, "via": via, "client": client})  # fmt: skip


def list_tokens(ctx: Context) -> list[dict[str, Any]]:
    with ctx.db.reading() as conn:
        return [
            {"name": t.name, "role": t.role, "created_at": t.created_at, "revoked": t.revoked_at is not None,
             "identities": list(t.identities or [])}
            for t in conn.execute(select(TOKENS).order_by(TOKENS.c.id))
        ]  # fmt: skip
