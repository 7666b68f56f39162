"""Checking a track's connections: one read-only call each, with the credentials they reference."""

from __future__ import annotations

from sqlalchemy import select

from conductor.actions.connections import CONNECTION_KEYS, flag_client, parse_connections, store_client, vcs_client
from conductor.actions.registry import ActionAdapters
from conductor.context import Context
from conductor.domain.errors import ConductorError, NotFound
from conductor.store.statements import TRACKS


def check_connection(ctx: Context, adapters: ActionAdapters, track_id: str, key: str) -> str:
    """One read-only call to the track's `key` system (store, vcs, flags) with its credentials: a
    sentence saying what they can see. ActionFailed (naming the credential or permission problem)
    when they do not work; ConductorError when nothing is connected."""
    if key not in CONNECTION_KEYS:
        raise ConductorError(f"unknown connection {key!r}; use {', '.join(CONNECTION_KEYS)}")
    with ctx.db.reading() as conn:
        row = conn.execute(select(TRACKS.c.settings).where(TRACKS.c.id == track_id)).first()
    if row is None:
        raise NotFound(f"unknown track {track_id!r}")
    conns = parse_connections(track_id, dict(row.settings or {}))
    if key == "store" and conns.store is not None:
        return store_client(conns.store, adapters.client, clock=ctx.clock).check()
    if key == "vcs" and conns.vcs is not None:
        return vcs_client(conns.vcs, adapters.client).check()
    if key == "flags" and conns.flags is not None:
        return flag_client(conns.flags, adapters.client).check()
    raise ConductorError(f"track {track_id} has no {key} connected: conductor track {key} {track_id} ...")
