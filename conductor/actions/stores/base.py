"""What Conductor needs from an app store, as one interface over Google Play and App Store Connect.

The release robot moves one build of a release: to the store's testing rings (Play testing
tracks, TestFlight groups), into production at a first percentage, up the percentages, and halts
or resumes it. Every call is idempotent by state: the client reads what the store has first and
does nothing when it already matches what is wanted, so a retry after a timeout never applies a
change twice. Failures are ActionFailed: retryable (409, 429 with its Retry-After, 5xx, timeouts)
or not (401/403 naming the credential or permission problem, a request the store refuses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

StoreKind = Literal["play", "appstore"]
# The store's state of a build in production, normalised over both stores:
#   none         the build is not in production (not submitted, or only on testing tracks)
#   draft        Play: a draft release; App Store: a phased release created but INACTIVE
#   in_progress  rolling out (Play inProgress with a fraction; App Store phased release ACTIVE)
#   paused       App Store phased release PAUSED
#   halted       Play halted
#   completed    everyone gets it (Play completed; App Store COMPLETE or released without phasing)
RolloutStatus = Literal["none", "draft", "in_progress", "paused", "halted", "completed"]

# Apple's phased release: the share of users on each day, fixed by Apple (1..7); pauses may total
# at most 30 days. https://developer.apple.com/help/app-store-connect/update-your-app/release-a-version-update-in-phases
APPLE_PHASES = (1, 2, 5, 10, 20, 50, 100)
APPLE_MAX_PAUSE_DAYS = 30


@dataclass(frozen=True)
class StoreRollout:
    """What the store says about one build in production (or in a testing ring)."""

    status: RolloutStatus
    percent: float | None = None  # Play: userFraction x 100 (100 when completed); App Store: that day's share
    build: str | None = None  # Play versionCode, App Store build number
    day: int | None = None  # App Store: currentDayNumber of the phased release (1..7)
    paused_total_s: float | None = None  # App Store: totalPauseDuration, in seconds
    review_state: str | None = None  # App Store: appVersionState (WAITING_FOR_REVIEW, IN_REVIEW, ...)
    detail: dict[str, Any] = field(default_factory=dict)  # the store's own words, for the audit

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "percent": self.percent, "build": self.build, "day": self.day,
            "paused_total_s": self.paused_total_s, "review_state": self.review_state, "detail": self.detail,
        }  # fmt: skip


class StoreClient(Protocol):
    """One app on one store. `version` is the release's version (8.9.0), `build` its store build."""

    kind: StoreKind

    def check(self) -> str:
        """One read-only call: a sentence saying what the credentials can see; ActionFailed when
        they do not work (not retryable), naming the credential or the missing permission."""

    def find_build(self, version: str) -> str | None:
        """The build of `version` the store already has: Play, the release named `version` on a
        testing track; App Store, the build of the app store version `version`. None if none."""

    def distribute(self, build: str, version: str, ring: str) -> StoreRollout:
        """Put `build` on a testing ring: Play, the testing track `ring` (internal, alpha, beta,
        or a closed-testing track's name) as a completed release; App Store, the TestFlight beta
        group named `ring`."""

    def rollout(self, build: str, version: str, percent: float, *, notes: dict[str, str] | None = None,
                priority: int | None = None) -> StoreRollout:  # fmt: skip
        """`build` in production at `percent` (0 < percent <= 100; 100 completes the rollout).
        Play: inProgress with userFraction percent/100, or completed. App Store: the phased
        release is created and started (the first call) or completed (100); Apple's fixed schedule
        takes it through the days in between. `notes` (language -> text) and `priority`
        (Play inAppUpdatePriority 0..5) are set with the first rollout."""

    def halt(self, build: str, version: str) -> StoreRollout:
        """Stop the rollout of `build`: Play halted (also for a completed release: Play then serves
        the previous version again); App Store, the phased release PAUSED."""

    def resume(self, build: str, version: str) -> StoreRollout:
        """Undo a halt: Play inProgress at the fraction it had; App Store, the phased release ACTIVE."""

    def read(self, build: str, version: str) -> StoreRollout:
        """The store's current state of `build` in production (review state included on the App Store)."""
