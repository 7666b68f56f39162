"""What the robot may do unattended: quiet hours with an exposure budget, and freezes.

A transition *raises user exposure* when its target reaches more users than its source: a rollout
stage reaches its `percent`, the final stage everyone, the stages before the store nobody the
store counts. Halts, holds and cancels never raise it; they are never held back.

- **Night policy.** A track's quiet hours (in the pipeline's time zone, e.g. 22:00-07:00) come
  with an exposure budget: "up to rollout_1" (a stage) or "up to 5 %" (a share). At night a
  transition whose target goes beyond the budget waits for the morning window (a timer at the end
  of the quiet hours), and says so.
- **Freezes.** While a freeze covers the track (a manual one, or a calendar's holiday, blackout or
  code freeze), no transition that raises exposure happens; it waits until the freeze ends (or
  for an unfreeze).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conductor.domain.definition import Pipeline, Transition
from conductor.domain.schedules import next_schedule_time

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def exposure(pipeline: Pipeline, stage: str) -> float:
    """The share of users a stage reaches, in percent (0 before the store, 100 at the end)."""
    st = pipeline.stages[stage]
    if st.kind == "final":
        return 100.0
    if st.kind == "rollout":
        return st.percent if st.percent is not None else 100.0
    return 0.0


def raises_exposure(pipeline: Pipeline, transition: Transition) -> bool:
    return exposure(pipeline, transition.target) > exposure(pipeline, transition.source)


class NightPolicy(BaseModel):
    """A track's quiet hours and what may happen in them (Track.settings["night"])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quiet_hours: str = Field(description="HH:MM-HH:MM in the pipeline's time zone, e.g. 22:00-07:00")
    up_to_stage: str | None = Field(default=None, description="the last stage the robot may enter at night")
    up_to_percent: float | None = Field(default=None, ge=0, le=100, description="the most users it may reach at night")

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, v: str) -> str:
        parts = v.replace(" ", "").split("-")
        if len(parts) != 2 or not all(_HHMM.match(p) for p in parts):
            raise ValueError("quiet hours are HH:MM-HH:MM, e.g. 22:00-07:00")
        return "-".join(parts)

    def window(self) -> tuple[time, time]:
        start, end = (time(int(h), int(m)) for h, m in (p.split(":") for p in self.quiet_hours.split("-")))
        return start, end

    def quiet_until(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """When the quiet hours that cover `now` end; None when it is not quiet now."""
        start, end = self.window()
        local = now.astimezone(tz)
        today_start = datetime.combine(local.date(), start, tz)
        today_end = datetime.combine(local.date(), end, tz)
        if start <= end:  # a window inside one day
            return today_end if today_start <= local < today_end else None
        if local >= today_start:  # the evening part: ends tomorrow morning
            return datetime.combine(local.date() + timedelta(days=1), end, tz)
        return today_end if local < today_end else None

    def allows(self, pipeline: Pipeline, target: str) -> bool:
        """Whether entering `target` stays within the night's budget."""
        if self.up_to_stage is not None:
            order = pipeline.stage_order()
            if target in order and self.up_to_stage in order:
                return order.index(target) <= order.index(self.up_to_stage)
        if self.up_to_percent is not None:
            return exposure(pipeline, target) <= self.up_to_percent
        return self.up_to_stage is None and self.up_to_percent is None and exposure(pipeline, target) == 0

    def describe(self) -> str:
        budget = self.up_to_stage or (f"{self.up_to_percent:g}% of users" if self.up_to_percent is not None else "no new exposure")
        return f"quiet hours {self.quiet_hours}, up to {budget}"


@dataclass(frozen=True)
class Freeze:
    """A freeze covering a track: until `ends_at` (None: until someone unfreezes). A holiday also
    skips the scheduled moves (the branch cut) that fall in it."""

    reason: str
    starts_at: datetime
    ends_at: datetime | None = None
    scope: str = "track"  # track, all, calendar
    skip_branch_cut: bool = False
    holds: bool = True  # False: it only skips a branch cut (conductor skip-cut), exposure may rise

    def covers(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    def holds_at(self, now: datetime) -> bool:
        """It holds exposure back at `now` (a skipped branch cut never does)."""
        return self.holds and self.covers(now)


@dataclass(frozen=True)
class Policy:
    """What holds a transition back besides its gates: the night policy and the freezes in force."""

    night: NightPolicy | None = None
    freezes: tuple[Freeze, ...] = ()

    def skip_cuts(self, pipeline: Pipeline, schedule: str, earliest: datetime) -> datetime:
        """The scheduled time, moved past every holiday it falls in (a skipped branch cut)."""
        skipping = [f for f in self.freezes if f.skip_branch_cut]
        for _ in range(60):  # a schedule's next occurrences; a holiday list never spans more
            hit = next((f for f in skipping if f.covers(earliest)), None)
            if hit is None:
                return earliest
            earliest = next_schedule_time(pipeline, schedule, earliest)
        return earliest

    def holds(self, pipeline: Pipeline, transition: Transition, now: datetime) -> tuple[str, datetime | None, str] | None:
        """(why, until, kind) when the transition must wait; None when it may go. kind: freeze, night."""
        if not raises_exposure(pipeline, transition):
            return None
        active = [f for f in self.freezes if f.holds_at(now)]
        if active:
            ends = [f.ends_at for f in active]
            until = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
            return f"frozen: {'; '.join(f.reason for f in active)}", until, "freeze"
        if self.night is not None and not self.night.allows(pipeline, transition.target):
            morning = self.night.quiet_until(now, ZoneInfo(pipeline.timezone))
            if morning is not None:
                return f"waiting for the morning window ({self.night.describe()}, {pipeline.timezone})", morning, "night"
        return None


def parse_night(raw: Any) -> NightPolicy | None:
    return None if not raw else NightPolicy.model_validate(raw)
