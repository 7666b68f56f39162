"""What the use cases and the read model need from their surroundings: the database, the
definitions and the clock.

A `Context` holds no release state; everything is read from and written to `db`. It is built
once per process by conductor.bootstrap and passed to the use cases (conductor.service) and the
read model (conductor.read) as their first argument. The `Conductor` façade is one.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from cachetools import LRUCache
from sqlalchemy import Connection, select

from conductor.clock import Clock, system_clock
from conductor.domain.definition import Pipeline
from conductor.domain.errors import NotFound
from conductor.domain.loader import DefinitionCatalog, pipeline_from_json
from conductor.store.db import Database
from conductor.store.statements import DEFINITIONS

PINNED_DEFINITIONS_CACHED = 256
EVALUATIONS_CACHED = 2_000  # the board needs the latest (and pending) one per live release
EVIDENCE_TIMES_CACHED = 200_000  # insights need one timestamp per robot transition


class Context:
    """The database, the definition catalog and the clock, with the pinned definitions cached."""

    def __init__(self, db: Database, catalog: DefinitionCatalog, clock: Clock = system_clock):
        self.db = db
        self.catalog = catalog
        self.clock = clock
        # A pinned definition never changes under its content hash, so it is parsed once.
        self._pinned: LRUCache[str, Pipeline] = LRUCache(PINNED_DEFINITIONS_CACHED)
        self._lock = threading.Lock()
        # Stored evaluations never change, so the read model keeps the ones it decoded
        # (conductor.read.board and .insights); guarded by cache_lock (requests run in threads).
        self.evaluation_cache: LRUCache[int, Any] = LRUCache(EVALUATIONS_CACHED)
        self.evidence_times: LRUCache[int, Any] = LRUCache(EVIDENCE_TIMES_CACHED)
        self.cache_lock = threading.Lock()

    def now(self) -> datetime:
        return self.clock()

    def pinned(self, conn: Connection, definition_hash: str) -> Pipeline:
        """The definition a release pinned when it started (not the file as it is today)."""
        with self._lock:
            pipeline = self._pinned.get(definition_hash)
        if pipeline is None:
            body = conn.execute(select(DEFINITIONS.c.body).where(DEFINITIONS.c.hash == definition_hash)).scalar()
            if body is None:
                raise NotFound(f"definition {definition_hash[:12]} pinned by a release is missing")
            pipeline = pipeline_from_json(body)
            with self._lock:
                self._pinned[definition_hash] = pipeline
        return pipeline
