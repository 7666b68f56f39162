"""Celery entry point: `celery -A workers worker` and `celery -A workers beat`.

Tasks are thin (ids in, one conductor.service.jobs call); configuration comes from the
CONDUCTOR_* settings when Celery first needs it, never at import.
"""

from workers.celery import app
from workers import tasks  # noqa: E402,F401  (registers the tasks on the app)

__all__ = ["app"]
