"""CDEvents out: each stage change, halt, resume and answer of a release reaches the track's sink as
a signed CloudEvent carrying a CDEvent, through the outbox (after the commit, once)."""

from __future__ import annotations

import json
from datetime import timedelta

from standardwebhooks.webhooks import Webhook

from conductor.service import Actor
from tests.fakes.server import FakeServer, Reply
from tests.integration.test_service import beta_ready, feed_ring, to_beta

RM = Actor("rita", "release_manager")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_sink_hears_every_fact_as_a_cdevent(conductor, clock, monkeypatch):
    from conductor.service.jobs import relay_outbox
    from conductor.service.tracks import connect
    from tests.conftest import inline

    monkeypatch.setenv("CDE_SECRET", SECRET)
    with FakeServer() as sink:
        sink.route("POST", r"/events", lambda req: Reply(202, {"ok": True}))
        shown = connect(
            conductor, "music-android", Actor("ada", "admin"), "cdevents", {"url": f"{sink.url}/events", "secret": {"env": "CDE_SECRET"}}
        )
        assert shown == "CDEvents to 127.0.0.1, signed with env CDE_SECRET"
        app = inline(conductor)
        rid = conductor.start_release("music-android", "9.0.0", RM)
        to_beta(conductor, clock, rid)
        beta_ready(conductor, clock, rid, crash=99.8)
        clock.advance(timedelta(hours=3))
        feed_ring(conductor, rid, crash=97.0)
        conductor.resume(rid, RM, "config rolled back")
        relay_outbox(app.runtime)
        relay_outbox(app.runtime)  # a second pass sends nothing again
        events = [json.loads(r.body) for r in sink.calls("POST", r"/events")]
        for r in sink.calls("POST", r"/events"):
            assert r.headers["content-type"] == "application/cloudevents+json"
            Webhook(SECRET).verify(r.body, {k: r.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
        types = [e["type"] for e in events]
        assert types == [
            "dev.conductor.release.stagechanged.0.1.0",  # branch
            "dev.conductor.release.stagechanged.0.1.0",  # nightly
            "dev.conductor.release.stagechanged.0.1.0",  # alpha
            "dev.conductor.release.stagechanged.0.1.0",  # beta
            "dev.cdevents.service.deployed.0.2.0",  # rollout_1: the store
            "dev.cdevents.incident.detected.0.2.0",  # the halt
            "dev.cdevents.incident.resolved.0.2.0",  # the resume
        ]
        deployed = events[4]
        assert (
            deployed["specversion"] == "1.0"
            and deployed["source"] == "conductor/music-android"
            and deployed["subject"] == "music-android/9.0.0"
        )
        assert deployed["data"]["context"]["type"] == deployed["type"] and deployed["data"]["context"]["version"] == "0.4.1"
        assert deployed["data"]["subject"]["content"]["environment"] == {"id": "rollout_1"}
        halt = events[5]["data"]["subject"]["content"]
        assert halt["environment"] == {"id": "rollout_1"} and "crash_free" in halt["description"]
        assert len({e["id"] for e in events}) == len(events)  # one event per fact
