"""Prometheus metrics of one app, in a CollectorRegistry of its own (two apps in one process never mix).

Webhook intake is counted in memory as it happens (received, deduplicated, rejected by reason);
everything about releases is read from the database at scrape time, so each replica reports the
same numbers whichever process (API, worker, tick) made the change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from conductor.context import Context
from conductor.read import stats

log = structlog.get_logger("conductor.metrics")

# Seconds from "the release could move" to the move: a minute is good, 12 hours is the overnight wait.
DELAY_BUCKETS = (1, 5, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 72 * 3600)


class ApiMetrics:
    def __init__(self, conductor: Context):
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "conductor_webhook_events_received",
            "Webhook deliveries authenticated and stored (or found stored)",
            ["source"],
            registry=self.registry,
        )
        self.deduplicated = Counter(
            "conductor_webhook_events_deduplicated",
            "Webhook deliveries whose delivery id was already in the inbox",
            ["source"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "conductor_webhook_events_rejected",
            "Webhook deliveries refused, by reason",
            ["source", "reason"],
            registry=self.registry,
        )
        self.registry.register(ReleaseCollector(conductor))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ReleaseCollector(Collector):
    """Transitions, decisions, approvals and the inbox, computed from the database on each scrape."""

    def __init__(self, conductor: Context):
        self.c = conductor
        self._lock = threading.Lock()
        self._last_audit_id = 0
        # via -> [count per bucket (non-cumulative, last = +Inf)], sum
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception as exc:  # a scrape during a database outage shows the gap, it does not fail
            log.warning("metrics_unavailable", error=str(exc).splitlines()[0][:200])
            up = GaugeMetricFamily("conductor_metrics_database_up", "1 when the release metrics could be read from the database")
            up.add_metric([], 0)
            yield up

    def _collect(self) -> Iterator[Metric]:
        now = self.c.now()
        transitions = CounterMetricFamily("conductor_transitions", "Stage transitions, by the stage entered", labels=["stage"])
        for stage, n in sorted(stats.transitions_by_stage(self.c).items()):
            transitions.add_metric([stage], n)
        decisions = CounterMetricFamily(
            "conductor_decisions", "Stored decisions, by outcome (advance, wait, ask, hold, halt)", labels=["outcome"]
        )
        for outcome, n in sorted(stats.decisions_by_outcome(self.c).items()):
            decisions.add_metric([outcome], n)
        answers = CounterMetricFamily(
            "conductor_human_decisions", "Release managers' answers, by outcome (approve, reject, resume)", labels=["outcome"]
        )
        for outcome, n in sorted(stats.human_answers_by_verdict(self.c).items()):
            answers.add_metric([outcome], n)
        inbox = GaugeMetricFamily("conductor_inbox_events", "Inbound events in the inbox, by status", labels=["status"])
        for status, n in sorted(stats.inbox_by_status(self.c).items()):
            inbox.add_metric([status], n)

        pending = stats.pending_approvals(self.c)
        count = GaugeMetricFamily("conductor_pending_approvals", "Releases waiting for a release manager's decision", labels=["track"])
        age = GaugeMetricFamily("conductor_pending_approval_age_seconds", "Age of the oldest pending approval", labels=["track"])
        by_track: dict[str, list[float]] = {}
        for track, asked_at in pending:
            by_track.setdefault(track, []).append(max(0.0, (now - asked_at).total_seconds()))
        for track, ages in sorted(by_track.items()):
            count.add_metric([track], len(ages))
            age.add_metric([track], max(ages))

        delay = HistogramMetricFamily(
            "conductor_gates_to_transition_seconds",
            "Seconds from the moment a release could move (gates passing and soak over, or a question asked) to its stage transition",
            labels=["via"],
        )
        with self._lock:
            self._update_delays()
            for via in sorted(self._buckets):
                counts, cumulative, buckets = self._buckets[via], 0, []
                for le, n in zip((*map(str, map(float, DELAY_BUCKETS)), "+Inf"), counts, strict=True):
                    cumulative += n
                    buckets.append((le, cumulative))
                delay.add_metric([via], buckets, self._sums[via])
        yield from (transitions, decisions, answers, inbox, count, age, delay, *self._sources(now))

    def _sources(self, now: datetime) -> tuple[Metric, ...]:
        """Per pulled source: how long since it last answered, its polls and errors, its latency."""
        labels = ["track", "source", "kind"]
        since = GaugeMetricFamily("conductor_source_last_success_age_seconds", "Seconds since the source last answered well", labels=labels)
        polls = CounterMetricFamily("conductor_source_polls", "Polls of the source", labels=labels)
        errors = CounterMetricFamily("conductor_source_errors", "Polls that ended in a source error", labels=labels)
        latency = GaugeMetricFamily("conductor_source_latency_seconds", "The latest poll's latency", labels=labels)
        for h in stats.source_health(self.c):
            key = [h.track, h.source, h.kind]
            if h.last_success_at is not None:
                since.add_metric(key, max(0.0, (now - h.last_success_at).total_seconds()))
            polls.add_metric(key, h.polls)
            errors.add_metric(key, h.errors)
            if h.latency_ms is not None:
                latency.add_metric(key, h.latency_ms / 1000)
        return since, polls, errors, latency

    def _update_delays(self) -> None:
        delays, self._last_audit_id = stats.transition_delays(self.c, self._last_audit_id)
        for d in delays:
            counts = self._buckets.setdefault(d.via, [0] * (len(DELAY_BUCKETS) + 1))
            index = next((i for i, le in enumerate(DELAY_BUCKETS) if d.seconds <= le), len(DELAY_BUCKETS))
            counts[index] += 1
            self._sums[d.via] = self._sums.get(d.via, 0.0) + d.seconds
