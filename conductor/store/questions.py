"""A question whose approval deadline passed unanswered, and that a release manager can still answer.

When nobody answers a question in time the robot escalates it and holds the release on it (it will
not ask about exactly that evidence again). The question still stands until something newer is
asked or ruled: a release manager who comes in after the deadline answers it late, through the same
approval as before (which checks that the evidence still puts that question). The service (the
answer) and the read model (the card that offers it) find it here, the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from conductor.domain.kinds import AuditKind
from conductor.store.statements import APPROVALS, AUDIT, EVALUATIONS


def unanswered_escalation(conn: Connection, release_id: int, stage: str, held_on: str | None) -> Any | None:
    """The evaluation row (id, release_id, stage, fingerprint, evidence) of the question whose
    deadline passed with no answer, if the release is still held on it (`held_on`: the fingerprint
    the robot will not ask about again) in the stage it was asked in, and nobody has answered
    anything since; None otherwise."""
    if held_on is None:
        return None
    escalated = conn.execute(
        select(AUDIT.c.evaluation_id, AUDIT.c.at)
        .where(AUDIT.c.release_id == release_id, AUDIT.c.kind == AuditKind.APPROVAL_ESCALATED.value)
        .order_by(AUDIT.c.id.desc())
        .limit(1)
    ).first()
    if escalated is None or escalated.evaluation_id is None:
        return None
    e = EVALUATIONS.c
    row = conn.execute(select(e.id, e.release_id, e.stage, e.fingerprint, e.evidence).where(e.id == escalated.evaluation_id)).first()
    if row is None or row.stage != stage or row.fingerprint != held_on:
        return None
    answered = conn.execute(
        select(APPROVALS.c.id).where(APPROVALS.c.release_id == release_id, APPROVALS.c.created_at >= escalated.at).limit(1)
    ).first()
    return None if answered is not None else row
