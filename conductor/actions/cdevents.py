"""CDEvents out: the robot tells other CD tools what it did, as CloudEvents (the cloudevents SDK)
carrying CDEvents, POSTed in structured mode to a track's sink, through the outbox (so a fact is
sent after its transition committed, once, retried until the sink takes it).

    release fact (audit kind)            CloudEvent type
    entered a rollout or final stage     dev.cdevents.service.deployed.0.2.0     (environment = the stage)
    entered any other stage              dev.conductor.release.stagechanged.0.1.0
    halted (the robot or a person)       dev.cdevents.incident.detected.0.2.0    (environment = the rollout stage)
    resumed after a halt                 dev.cdevents.incident.resolved.0.2.0
    approved / rejected a decision       dev.conductor.release.approved.0.1.0 / .rejected.0.1.0
    cancelled                            dev.conductor.release.cancelled.0.1.0

CDEvents has no types for a release train's approvals and stage changes short of a deployment,
so those are Conductor's own (dev.conductor.*), shaped like CDEvents: context (version, id,
source, type, timestamp) and subject (id, source, type, content). Types from the CDEvents 0.4
specification: https://github.com/cdevents/spec/blob/v0.4.1/continuous-deployment-pipeline-events.md
(service deployed) and https://github.com/cdevents/spec/blob/v0.4.1/continuous-operations.md
(incident detected, resolved). A sink with a secret gets Standard Webhooks signatures.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from conductor.actions.base import ActionFailed, ActionOutcome, ActionRequest
from conductor.actions.http import failure, response_summary, standard_webhook_headers
from conductor.connect.credentials import CredentialRef

SPEC_VERSION = "0.4.1"
EMITTED = frozenset({"transitioned", "halted", "resumed", "approved", "rejected", "cancelled"})


class CDEventsConnection(BaseModel):
    """Where a track's facts go: a CloudEvents HTTP sink, optionally signed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(default="cdevents", pattern="^cdevents$")
    url: str = Field(pattern=r"^https?://\S+$", max_length=2000)
    secret: CredentialRef | None = None  # a whsec_... Standard Webhooks secret, by reference

    def describe(self) -> str:
        signed = f", signed with {self.secret.describe()}" if self.secret else ""
        return f"CDEvents to {httpx.URL(self.url).host}{signed}"


def cdevent(request: ActionRequest) -> tuple[str, dict[str, Any]]:
    """(CloudEvent type, the CDEvent) for the fact in the request's params."""
    p, r = request.params, request.release
    fact, rollout = str(p.get("fact")), bool(p.get("rollout"))
    stage = str(p.get("to") or p.get("from") or r.stage)
    subject: dict[str, Any] = {"id": f"{r.key}", "source": f"conductor/{r.track}", "type": "service",
                               "content": {"environment": {"id": stage}, "artifactId": f"pkg:generic/{r.track}@{r.version}"}}  # fmt: skip
    if fact == "transitioned" and rollout:
        kind = "dev.cdevents.service.deployed.0.2.0"
    elif fact == "transitioned":
        kind = "dev.conductor.release.stagechanged.0.1.0"
        subject["content"]["from"] = p.get("from")
    elif fact in ("halted", "resumed"):
        kind = f"dev.cdevents.incident.{'detected' if fact == 'halted' else 'resolved'}.0.2.0"
        subject = {"id": f"{r.key}/halt", "source": f"conductor/{r.track}", "type": "incident",
                   "content": {"description": p.get("reason") or fact, "environment": {"id": str(p.get("from") or stage)},
                               "service": {"id": r.key}, "artifactId": f"pkg:generic/{r.track}@{r.version}"}}  # fmt: skip
    else:
        kind = f"dev.conductor.release.{fact}.0.1.0"
        subject["content"] |= {"actor": p.get("actor"), "reason": p.get("reason")}
    context = {"version": SPEC_VERSION, "id": request.idempotency_key, "source": f"conductor/{r.track}", "type": kind,
               "timestamp": p.get("at")}  # fmt: skip
    return kind, {"context": context, "subject": subject, "customData": {"release": r.key, "actor": p.get("actor")}}


class CDEventsSink:
    """Sends a release fact to the track's CDEvents sink (an ActionAdapter)."""

    def __init__(self, client: httpx.Client, connection: CDEventsConnection):
        self.client, self.connection = client, connection

    def run(self, request: ActionRequest) -> ActionOutcome:
        from cloudevents.core.bindings.http import to_structured_event
        from cloudevents.core.v1.event import CloudEvent

        kind, data = cdevent(request)
        event = CloudEvent(attributes={"type": kind, "source": f"conductor/{request.release.track}", "id": request.idempotency_key,
                                       "subject": request.release.key}, data=data)  # fmt: skip
        message = to_structured_event(event)
        headers = dict(message.headers)
        if self.connection.secret is not None:
            headers |= standard_webhook_headers(self.connection.secret.read().strip(), request.idempotency_key, message.body.decode())
        try:
            response = self.client.post(self.connection.url, content=message.body, headers=headers)
        except httpx.TimeoutException:
            raise ActionFailed(f"cdevent {kind}: the sink timed out") from None
        except httpx.HTTPError as exc:
            raise ActionFailed(f"cdevent {kind}: {exc.__class__.__name__}") from None
        if not response.is_success:
            raise failure(response, f"cdevent {kind}")
        return ActionOutcome("done", f"{kind} sent to {httpx.URL(self.connection.url).host}", response_summary(response))
