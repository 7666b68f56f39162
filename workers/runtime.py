"""Per-process state of a worker: the service, the dispatcher, the adapters' HTTP client.

Built on first use in each process (after the prefork pool forked), never at import, so no
database connection or socket is shared between processes.
"""

from __future__ import annotations

import os
import threading

from conductor.service.jobs import Runtime

_lock = threading.Lock()
_state: dict[str, object] = {}


def runtime() -> Runtime:
    """This process's Runtime, built from CONDUCTOR_* settings the first time it is asked for."""
    rt = _state.get("rt")
    if rt is not None and _state.get("pid") == os.getpid():
        return rt  # type: ignore[return-value]
    with _lock:
        if _state.get("rt") is None or _state.get("pid") != os.getpid():
            _state["rt"] = _build()
            _state["pid"] = os.getpid()
        return _state["rt"]  # type: ignore[return-value]


def _build() -> Runtime:
    from conductor.config import get_settings
    from conductor.domain.loader import DefinitionCatalog
    from conductor.logging import configure_logging
    from conductor.service import Conductor
    from conductor.service.dispatch import CeleryDispatcher
    from conductor.store.db import Database, make_engine
    from workers.celery import app

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    url = settings.database_url
    # No pre-ping: it costs a round trip per transaction; a connection that died fails its task
    # with OperationalError, the pool is invalidated, and the task's retry gets a fresh connection.
    engine = make_engine(url) if url.startswith("sqlite") else make_engine(url, pool_pre_ping=False)
    conductor = Conductor(Database(url, engine=engine), DefinitionCatalog(settings.definitions_dir))
    return Runtime.build(conductor, CeleryDispatcher(app=app), settings=settings)
