"""structlog, configured once: JSON when stdout is not a terminal, console output otherwise."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure_logging(fmt: str = "auto", level: str = "INFO", stream=None) -> None:
    """Configure structlog for the process; later calls are no-ops so entry points can all call it."""
    global _configured
    if _configured:
        return
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _configured = True
