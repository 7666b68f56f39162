"""Per-process state of a worker: the wired Conductor (conductor.bootstrap) with the Celery dispatcher.

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


def forget() -> None:
    """Drop this process's state (a forked child builds its own engine and clients)."""
    _state.clear()


def _build() -> Runtime:
    from conductor.bootstrap import build
    from conductor.config import get_settings
    from workers.celery import app

    # The app that runs the tasks publishes their follow-up work: no second broker connection.
    return build(get_settings(), mode="celery", celery_app=app).runtime
