"""The vocabulary every layer shares: audit kinds, statuses and wait kinds, each spelled once.

They are StrEnums, so a value compares equal to the string stored in the database and shown in the
API (``AuditKind.HALTED == "halted"``); nothing else in the code base spells these strings.
"""

from __future__ import annotations

from enum import StrEnum

# The actor name the robot's own moves are audited under.
ROBOT = "conductor"
# A team's sign-off is stored as a signal named "signoff.<team>" (1 approved, 0 refused).
SIGNOFF_PREFIX = "signoff."


class AuditKind(StrEnum):
    """What an audit row records. Release rows name a release; track rows (created, updated) a track;
    token and sign-in rows neither."""

    RELEASE_STARTED = "release_started"
    TRANSITIONED = "transitioned"
    HALTED = "halted"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    HELD = "held"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    DECISION_WITHDRAWN = "decision_withdrawn"
    APPROVAL_ESCALATED = "approval_escalated"
    SIGNED_OFF = "signed_off"
    SIGNOFF_REFUSED = "signoff_refused"
    SIGNALS_RECORDED = "signals_recorded"
    UNREVIEWED_CHANGE = "unreviewed_change"
    ACTION_SKIPPED = "action_skipped"
    ACTION_FAILED = "action_failed"
    TRACK_CREATED = "track_created"
    TRACK_UPDATED = "track_updated"
    BUILD_SET = "build_set"
    STORE_DRIFT = "store_drift"
    DRIFT_ACCEPTED = "drift_accepted"
    DRIFT_REAPPLIED = "drift_reapplied"
    PAUSE_BUDGET_LOW = "pause_budget_low"
    DIGEST = "digest"  # a track's morning digest (track row)
    FROZEN = "frozen"
    UNFROZEN = "unfrozen"
    CALENDAR_SET = "calendar_set"
    BRANCH_CUT_SKIPPED = "branch_cut_skipped"  # the next scheduled branch cut will not happen (track row)
    BRANCH_CUT_RESTORED = "branch_cut_restored"
    # Global rows (no release, no track): who holds which token, and who signed in to the dashboard.
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    TOKEN_IDENTITIES_SET = "token_identities_set"
    SIGNED_IN = "signed_in"


# The audit kinds that put a release into the stage their row names in to_stage. (A "resumed" row
# of a lifted manual pause has no to_stage: the release stayed where it was.)
MOVES = frozenset({AuditKind.RELEASE_STARTED, AuditKind.TRANSITIONED, AuditKind.HALTED, AuditKind.RESUMED, AuditKind.CANCELLED})
# What ends a wait for a human: an answer, or the question going away.
ANSWERS = frozenset(
    {
        AuditKind.APPROVED,
        AuditKind.REJECTED,
        AuditKind.DECISION_WITHDRAWN,
        AuditKind.APPROVAL_ESCALATED,
        AuditKind.CANCELLED,
        AuditKind.HALTED,
        AuditKind.TRANSITIONED,
    }
)


class ReleaseStatus(StrEnum):
    """Where a release is, in one word (the API's `status`)."""

    WAITING = "waiting"
    HELD = "held"
    ADVANCING = "advancing"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    HALTED = "halted"
    HALTING = "halting"  # halted here, the store has not confirmed its halt yet
    RELEASED = "released"
    CANCELLED = "cancelled"


class WaitKind(StrEnum):
    """What a release waits for before it can move (the read model's Waiting.kind)."""

    SOAK = "soak"
    SCHEDULE = "schedule"
    DATA = "signal"  # signals not in yet
    SIGNOFF = "signoff"
    APPROVAL = "approval"
    FIX = "fix"  # a gate failed
    RESUME = "resume"  # paused by a human
    HUMAN = "human"  # halted: a release manager resumes or cancels
    EVALUATION = "evaluation"  # not judged in this stage yet
    ADVANCING = "advancing"
    FREEZE = "freeze"  # a freeze holds exposure-raising moves
    NIGHT = "night"  # quiet hours: the move waits for the morning window
    DONE = "done"


class InboxStatus(StrEnum):
    """An inbound event: pending -> processed | ignored | unmatched | failed."""

    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    UNMATCHED = "unmatched"
    FAILED = "failed"


# Not stored: a batch left the event pending because another worker holds its release.
DEFERRED = "deferred"


class ActionStatus(StrEnum):
    """An outbox action: pending -> sending -> done | skipped | failed."""

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


FINISHED_ACTIONS = frozenset({ActionStatus.DONE, ActionStatus.SKIPPED, ActionStatus.FAILED})


class TimerKind(StrEnum):
    """A durable wait fired by tick."""

    WAIT = "wait"  # look again when the soak, schedule or max_wait is over
    APPROVAL_DEADLINE = "approval_deadline"


class AnswerVerdict(StrEnum):
    """A release manager's answer, as stored in the approvals table."""

    APPROVE = "approve"
    REJECT = "reject"
    RESUME = "resume"
