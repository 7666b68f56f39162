"""The composition root: the one place that turns settings into a running Conductor.

Every entry point builds what it needs here and nowhere else: the CLI and the demo (`conductor`),
the API (`build` with the Celery or the embedded transport), `conductor serve` (embedded), the
Celery workers (`build(..., mode="celery")` in workers/runtime.py) and the tests (`inline`).

    app = build(settings)             # Celery when CONDUCTOR_BROKER_URL is set, else embedded
    app.conductor.start_release(...)  # the use cases (conductor.facade.Conductor)
    app.dispatcher.event_stored(id)   # hand work to whatever runs the jobs
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from conductor.actions.http import make_client
from conductor.actions.registry import ActionAdapters
from conductor.clock import Clock, system_clock
from conductor.config import Settings, load_settings
from conductor.domain.loader import DefinitionCatalog
from conductor.facade import Conductor
from conductor.service.jobs import Runtime
from conductor.service.ports import Dispatcher
from conductor.store.db import Database, Timeouts, ensure_head

Mode = Literal["celery", "embedded", "inline"]


@dataclass
class App:
    """A wired Conductor: the use cases, where background work goes, and what runs it."""

    settings: Settings
    conductor: Conductor
    dispatcher: Dispatcher
    runtime: Runtime
    mode: Mode
    runner: Any = None  # the EmbeddedRunner in embedded mode (started and stopped by its host)

    def close(self) -> None:
        self.runtime.adapters.close()
        self.conductor.db.dispose()


def conductor(settings: Settings, *, clock: Clock = system_clock) -> Conductor:
    """The use cases on the configured database (an embedded SQLite file is migrated to head first)."""
    from conductor.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    url = settings.database_url
    if url.startswith("sqlite"):
        ensure_head(url)  # embedded mode: the file is ours, keep it at head
    timeouts = Timeouts(settings.db_connect_timeout_s, settings.db_statement_timeout_s, settings.db_lock_timeout_s)
    return Conductor(Database(url, timeouts=timeouts), DefinitionCatalog(settings.definitions_dir), clock)


def build(
    settings: Settings | None = None,
    *,
    mode: Mode | None = None,
    context: Conductor | None = None,
    adapters: ActionAdapters | None = None,
    celery_app: Any = None,
) -> App:
    """Wire a Conductor with a transport for its jobs.

    mode: "celery" (publish to CONDUCTOR_BROKER_URL, or through `celery_app` in a worker),
    "embedded" (an in-process runner; the caller starts and stops `app.runner`) or "inline" (jobs
    run at once; tests and scripts). Default: celery when a broker URL is set, else embedded.
    `context` reuses an existing Conductor (tests), `adapters` replaces the action adapters."""
    settings = settings or load_settings()
    mode = mode or ("celery" if settings.broker_url else "embedded")
    ctx = context or conductor(settings)
    adapters = adapters or ActionAdapters(make_client(settings.action_timeout_s))
    runner = None
    dispatcher: Any
    if mode == "celery":
        from conductor.dispatch.celery import CeleryDispatcher

        dispatcher = CeleryDispatcher(settings.broker_url, app=celery_app, visibility_timeout_s=settings.broker_visibility_timeout_s)
    elif mode == "embedded":
        from conductor.dispatch.embedded import EmbeddedRunner

        runner = EmbeddedRunner(
            tick_interval_s=settings.tick_interval_s,
            sweep_interval_s=settings.sweep_interval_s,
            store_sync_interval_s=settings.store_sync_interval_s,
            source_poll_tick_s=settings.source_poll_tick_s,
            audit_seal_interval_s=settings.audit_seal_interval_s,
        )
        dispatcher = runner.dispatcher
    else:
        from conductor.dispatch.inline import InlineDispatcher

        dispatcher = InlineDispatcher()
    runtime = Runtime(
        ctx,
        dispatcher,
        adapters,
        sweep_grace=timedelta(seconds=settings.sweep_grace_s),
        action_max_attempts=settings.action_max_attempts,
        # A running action holds its row well past the HTTP timeout before anyone assumes it died.
        action_run_lease=timedelta(seconds=max(60.0, 6 * settings.action_timeout_s)),
        poll_workers=settings.source_poll_workers,
    )
    if runner is not None:
        runner.runtime = runtime
    elif mode == "inline":
        dispatcher.runtime = runtime
    return App(settings, ctx, dispatcher, runtime, mode, runner)
