"""The use cases: the only code that changes a release, each a short function over one ReleaseStep.

Grouped by concern: releases (start, pause, resume, cancel), approvals (approve, reject,
four-eyes), signals (record, sign off, test reports), evaluation (judge and act), timers (tick),
inbox (store and apply inbound events), outbox (send actions), tracks and tokens (administration),
jobs (the background work by task name). conductor.step holds the unit of work they share.
"""

from conductor.service.step import ROBOT_ACTOR, Actor

__all__ = ["ROBOT_ACTOR", "Actor"]
