"""Celery entry point: `celery -A workers worker` and `celery -A workers beat`.

Tasks are thin (ids in, one conductor.service.jobs call); configuration comes from the
CONDUCTOR_* settings when Celery first needs it, never at import.
"""

from workers import signals, tasks  # noqa: E402,F401  (registers the signal handlers and the tasks on the app)
from workers.celery import app

__all__ = ["app"]
