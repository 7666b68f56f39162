"""Use cases for a release's life: start it, pause and resume it, cancel it."""

from __future__ import annotations

import re

from sqlalchemy import select

from conductor.context import Context
from conductor.domain.errors import AlreadyExists, ConductorError, IllegalTransition, InvalidSignal, NotFound, NotPaused
from conductor.domain.kinds import AnswerVerdict, AuditKind
from conductor.service.evaluation import judge
from conductor.service.step import ROBOT_ACTOR, Actor, ReleaseStep, lock_one, open_step
from conductor.store.statements import DEFINITIONS, LATEST_DIGEST, RELEASES, TRACKS, insert_new_id


def start_release(ctx: Context, track_id: str, version: str, actor: Actor = ROBOT_ACTOR) -> int:
    """Start a release on the track's current definition, pinned by content hash; returns its id.

    NotFound for an unknown track or definition, AlreadyExists if the version was started before."""
    with ctx.db.begin() as conn:
        track = conn.execute(select(TRACKS.c.definition_name, TRACKS.c.branch_pattern).where(TRACKS.c.id == track_id)).first()
        if track is None:
            raise NotFound(f"unknown track {track_id!r}; create it with --definition")
        pipeline = ctx.catalog.get(track.definition_name)
        pinned = pipeline.content_hash()
        now = ctx.now()
        insert_new_id(
            conn,
            DEFINITIONS,
            "hash",
            {
                "hash": pinned,
                "name": pipeline.name,
                "body": pipeline.model_dump(mode="json", by_alias=True),
                "created_at": now,
            },
        )
        release_id = insert_new_id(
            conn,
            RELEASES,
            ("track_id", "version"),
            {
                "track_id": track_id,
                "version": version,
                "stage": pipeline.initial_stage,
                "definition_hash": pinned,
                "entered_stage_at": now,
                "branch": track.branch_pattern.format(version=version),
                "created_at": now,
                "updated_at": now,
            },
        )
        if release_id is None:
            raise AlreadyExists(f"release {track_id}/{version} already exists")
        step = ReleaseStep(conn, lock_one(conn, release_id), pipeline, ctx.clock)
        step.audit(
            AuditKind.RELEASE_STARTED, actor.name, f"on {pipeline.name}", to_stage=pipeline.initial_stage, data={"definition_hash": pinned}
        )
        judge(step, trigger="start")
        step.save()
        step.buffer.commit()
        return release_id


def pause(ctx: Context, ref: int | str, actor: Actor, reason: str, *, expected_version: int | None = None) -> bool:
    """Stop the robot from advancing this release; False if it was already paused."""
    with open_step(ctx, ref, expected_version=expected_version) as step:
        r = step.release
        if step.pipeline.is_terminal(r.stage):
            raise IllegalTransition(f"release {r.key} is {r.stage}; nothing to pause")
        if r.paused:
            return False
        r.paused, r.pause_reason = True, reason
        step.touch()
        step.audit(AuditKind.PAUSED, actor.name, reason, from_stage=r.stage)
        return True


def resume(
    ctx: Context, ref: int | str, actor: Actor, reason: str, *, expected_version: int | None = None, restore_flags: bool = False
) -> str:
    """Lift a manual pause, or bring a halted release back to the rollout stage it halted in.

    The kill-switch flags the halt turned off stay off unless `restore_flags` says to turn them on
    again: a release manager decides that explicitly, never the robot."""
    if not reason.strip():
        raise ConductorError("resuming needs a reason")
    with open_step(ctx, ref, expected_version=expected_version) as step:
        r = step.release
        if step.pipeline.stages[r.stage].kind == "halted":
            step.add_answer(AnswerVerdict.RESUME, actor, reason, None)
            before, after = step.move("resume")
            r.halted_from = None
            # The human has ruled on the evidence that halted it: do not halt again on exactly that
            # evidence (its digest); new data that still fails is new evidence and halts again.
            r.rejected_fingerprint = step.conn.execute(LATEST_DIGEST, {"release_id": r.id}).scalar()
            step.audit(AuditKind.RESUMED, actor.name, reason, from_stage=before, to_stage=after)
            step.queue_action(f"resume:{r.updated_at.isoformat()}", "resume_rollout", {"stage": after})
            if restore_flags:
                step.queue_action(f"resume:{r.updated_at.isoformat()}", "kill_switch", {"stage": after, "enabled": True})
        elif r.paused:
            r.paused, r.pause_reason = False, None
            step.touch()
            step.audit(AuditKind.RESUMED, actor.name, reason, from_stage=r.stage)
        else:
            raise NotPaused(f"release {r.key} is neither paused nor halted (stage {r.stage})")
        judge(step, trigger="resume")
        return r.stage


def cancel(ctx: Context, ref: int | str, actor: Actor, reason: str, *, expected_version: int | None = None) -> str:
    """Abandon the release from any live stage (cancelling a cancelled release changes nothing)."""
    if not reason.strip():
        raise ConductorError("cancelling needs a reason")
    with open_step(ctx, ref, expected_version=expected_version) as step:
        r = step.release
        if r.stage == step.pipeline.cancel_stage:
            return r.stage
        before, after = step.move("cancel")
        r.pending_evaluation_id = None
        step.audit(AuditKind.CANCELLED, actor.name, reason, from_stage=before, to_stage=after)
        step.queue_action("cancelled", "notify", {"event": "cancelled", "summary": reason})
        return r.stage


BUILD_PATTERN = re.compile(r"[0-9A-Za-z._-]{1,50}")


def set_build(step: ReleaseStep, build: str, actor: Actor, why: str) -> None:
    """The release's store build is `build` from now on (store actions promote exactly that build)."""
    r = step.release
    if not BUILD_PATTERN.fullmatch(build):
        raise InvalidSignal(f"{build!r} is not a store build (a versionCode or build number: letters, digits, . _ -, up to 50)")
    before = r.build
    r.build = build
    step.audit(AuditKind.BUILD_SET, actor.name, f"store build {build}" + (f" (was {before})" if before else "") + f": {why}",
               data={"build": build, "before": before})  # fmt: skip


def record_build(ctx: Context, ref: int | str, build: str, actor: Actor, reason: str = "") -> str | None:
    """Say which store build a release is (`conductor build`, PUT /releases/{id}/build); the build
    it had before, or None. Setting the same build again writes nothing."""
    with open_step(ctx, ref) as step:
        before = step.release.build
        if before != build:
            set_build(step, build, actor, reason or "set by hand")
        return before
