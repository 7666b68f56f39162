"""When a pipeline's schedules fire (cron, in the pipeline's time zone)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from conductor.domain.definition import Pipeline


def next_schedule_time(pipeline: Pipeline, schedule: str, after: datetime) -> datetime:
    """The first cron occurrence strictly after `after`, in the pipeline's time zone, as UTC."""
    tz = ZoneInfo(pipeline.timezone)
    it = croniter(pipeline.schedules[schedule], after.astimezone(tz))
    nxt: datetime = it.get_next(datetime)
    return nxt.astimezone(UTC)
