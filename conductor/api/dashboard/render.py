"""Jinja2 environment and the small formatters the dashboard templates use (times, durations,
signal sparklines as inline SVG, the state diagram as mermaid text, the status ping)."""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cachetools import LRUCache
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from conductor.domain.definition import Pipeline
from conductor.domain.kinds import MOVES, AuditKind
from conductor.read.page import ReleaseView, SignalSeries

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

OUTCOME_LABEL = {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive", "no_data": "no data"}
OUTCOME_SYMBOL = {"pass": "✓", "fail": "✕", "inconclusive": "?", "no_data": "–"}
STATUS_LABEL = {
    "awaiting_approval": "awaiting approval",
    "waiting": "waiting",
    "held": "held",
    "halted": "halted",
    "paused": "paused",
    "released": "released",
    "cancelled": "cancelled",
    "advancing": "advancing",
}
AUDIT_LABEL = {
    AuditKind.RELEASE_STARTED: "Release started",
    AuditKind.TRANSITIONED: "Moved",
    AuditKind.APPROVAL_REQUESTED: "Approval requested",
    AuditKind.APPROVED: "Approved",
    AuditKind.REJECTED: "Rejected",
    AuditKind.DECISION_WITHDRAWN: "Question withdrawn",
    AuditKind.APPROVAL_ESCALATED: "Approval escalated",
    AuditKind.HELD: "Held",
    AuditKind.HALTED: "Halted",
    AuditKind.RESUMED: "Resumed",
    AuditKind.PAUSED: "Paused",
    AuditKind.CANCELLED: "Cancelled",
    AuditKind.SIGNED_OFF: "Signed off",
    AuditKind.SIGNOFF_REFUSED: "Sign-off refused",
    AuditKind.SIGNALS_RECORDED: "Signal report",
    AuditKind.UNREVIEWED_CHANGE: "Unreviewed change",
    AuditKind.ACTION_SKIPPED: "Action skipped",
    AuditKind.ACTION_FAILED: "Action failed",
}
# A folded run of timeline rows (conductor.read.page.FOLDED), as its one line says it.
FOLDED_LABEL = {AuditKind.SIGNALS_RECORDED: "Signal reports", AuditKind.ACTION_SKIPPED: "Actions skipped"}
# What a shadow gate would have done, as the release page says it ("would have halted").
WOULD_LABEL = {"advance": "advanced", "wait": "waited", "ask": "asked a release manager", "hold": "held", "halt": "halted the rollout"}
# A stored verdict, as a heading says it.
VERDICT_LABEL = {"advance": "advance", "wait": "wait", "ask": "ask a release manager", "hold": "hold", "halt": "halt the rollout"}
# Timeline rows whose target stage is worth showing: the moves, and the question and its answer.
SHOWS_TARGET = MOVES | {AuditKind.APPROVED, AuditKind.APPROVAL_REQUESTED}


def duration(td: timedelta | None, parts: int = 2) -> str:
    """'2d 3h', '3h 5m', '45m', '12s'; never negative: a span that ends before it starts (a
    reading clock behind the stored rows) is '0s'."""
    if td is None:
        return "–"
    secs = max(int(td.total_seconds()), 0)
    out: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size and len(out) < parts:
            out.append(f"{secs // size}{unit}")
            secs %= size
        elif out:
            break
    return " ".join(out) or "0s"


def hours(td: timedelta | None) -> str:
    return "–" if td is None else f"{td.total_seconds() / 3600:,.1f} h"


def local_time(dt: datetime | None, tz: str = "UTC") -> str:
    """'Fri 27 Nov 10:00 CET' in the track's time zone: the one way the dashboard shows a time."""
    if dt is None:
        return "–"
    return dt.astimezone(ZoneInfo(tz)).strftime("%a %d %b %H:%M %Z")


# An ISO 8601 time inside a text, as the domain writes them into summaries ("soak until 2026-11-30T06:39:28.376136+00:00").
ISO_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?")


def human_text(text: str | None, tz: str = "UTC") -> str:
    """A stored text (a decision's summary, an audit reason) with its machine times in local_time's
    format; the stored evidence keeps its ISO times."""

    def one(m: re.Match[str]) -> str:
        try:
            at = datetime.fromisoformat(m.group(0))
        except ValueError:
            return m.group(0)
        return local_time(at if at.tzinfo else at.replace(tzinfo=UTC), tz)

    return ISO_TIME.sub(one, text or "")


def iso(dt: datetime | None) -> str:
    return dt.isoformat() if dt else ""


def number(v: Any) -> str:
    """'52,063', '99.22', '0.0123', '1,234.5': whole numbers with thousands separators, never in exponent form."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if v.is_integer():
            return f"{int(v):,}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _reported(v: Any) -> str:
    if v is None:
        return "error"
    if isinstance(v, bool):
        return "true" if v else "false"
    return number(v)


def audit_reason(a: Any, tz: str = "UTC") -> str:
    """An audit row's reason as the timeline shows it (times in local_time's format); a signal
    intake lists its values ('signals from github: build_green 1, tests_pass_rate 1')."""
    values = a.data.get("values") if a.kind == AuditKind.SIGNALS_RECORDED else None
    if isinstance(values, dict) and values and ": " in a.reason:
        head = a.reason.split(": ", 1)[0]
        return f"{head}: " + ", ".join(f"{name} {_reported(v)}" for name, v in values.items())
    return human_text(a.reason, tz)


# ------------------------------------------------------------------------------ stage bar and gate lights
# Built in Python rather than as Jinja macros: the overview draws hundreds of them, and a stage bar
# depends only on the pipeline's stages and where the release is, so each distinct one is cached.


@lru_cache(maxsize=4096)
def _stagebar(order: tuple[str, ...], index: int, status: str, stage: str, halted_from: str | None, labels: bool) -> Markup:
    classes = (
        "stagebar"
        + (" labelled" if labels else "")
        + (" is-halted" if status == "halted" else "")
        + (" is-cancelled" if status == "cancelled" else "")
    )
    items = []
    for i, name in enumerate(order):
        state = "done" if i < index or status == "released" else ("now" if i == index else "todo")
        current = ' aria-current="step"' if i == index else ""
        label = f'<span class="seg-label">{escape(name)}</span>' if labels else ""
        items.append(f'<li class="{state}"{current}>{label}</li>')
    # The labelled bar is read as a list of stages; the small one is drawn only, its text follows it.
    hidden = "" if labels else ' aria-hidden="true"'
    out = f'<div class="stagebar-wrap"><ol class="{classes}"{hidden} aria-label="Stages">{"".join(items)}</ol>'
    if not labels:
        where = f' <span class="muted">(from {escape(halted_from)})</span>' if halted_from and status == "halted" else ""
        pos = f' <span class="muted">· {index + 1}/{len(order)}</span>' if index >= 0 else ""
        out += f'<p class="stage-name"><span class="sr-only">Stage: </span>{escape(stage)}{where}{pos}</p>'
    return Markup(out + "</div>")


def stagebar(card: Any, labels: bool = False) -> Markup:
    """The release's place on its pipeline's main line; halted shows red where it stopped."""
    return _stagebar(tuple(card.stage_order), card.stage_index, card.status, card.stage, card.halted_from, labels)


def lights(items: list[Any], names: bool = False) -> Markup:
    """One coloured, shaped light per gate (colour is never the only cue: ✓ ✕ ? –)."""
    if not items:
        return Markup('<p class="muted lights-none">No gates to judge.</p>')
    out = [f'<ul class="lights{" named" if names else ""}" aria-label="Gates">']
    for g in items:
        label = OUTCOME_LABEL[g.outcome]
        title = f"{g.gate}: {label}" + (f" ({g.detail})" if g.detail else "")
        text = (
            f'<span class="gname">{escape(g.gate)}</span><span class="sr-only">: {label}</span>'
            if names
            else f'<span class="sr-only">{escape(g.gate)}: {label}</span>'
        )
        out.append(
            f'<li class="light {g.outcome}" title="{escape(title)}"><span class="dot" aria-hidden="true">{OUTCOME_SYMBOL[g.outcome]}</span>{text}</li>'
        )
    out.append("</ul>")
    return Markup("".join(out))


@lru_cache(maxsize=64)
def badge(status: str) -> Markup:
    return Markup(f'<span class="badge st-{escape(status)}">{escape(STATUS_LABEL.get(status, status))}</span>')


def waiting_text(card: Any, now: datetime) -> str:
    """What the release waits for, in words: 'the soak to end at Mon 30 Nov 07:39 CET (for 2h)'."""
    w = card.waiting
    text = human_text(w.text, card.timezone)
    if w.until:
        text += f" at {local_time(w.until, card.timezone)}"
    if w.since:
        text += f" (for {duration(now - w.since)})"
    return text


def waiting(card: Any, now: datetime) -> Markup:
    """What the release waits for, with the soak end / scheduled time and how long it has waited (waiting_text, marked up)."""
    w = card.waiting
    out = f'<span class="wait wait-{w.kind}">{escape(human_text(w.text, card.timezone))}'
    if w.until:
        out += f' <time datetime="{w.until.isoformat()}">at {escape(local_time(w.until, card.timezone))}</time>'
    if w.since:
        out += f' <span class="muted">(for {duration(now - w.since)})</span>'
    return Markup(out + "</span>")


def release_card(card: Any, now: datetime, href: str) -> Markup:
    """One release on the overview. Python rather than a Jinja macro: the board draws hundreds."""
    key = escape(card.key)
    why = f'<div class="why"><dt>Why</dt><dd>{escape(human_text(card.reason, card.timezone))}</dd></div>' if card.reason else ""
    return Markup(
        f'<article class="card st-{card.status}" aria-labelledby="rc-{card.id}">'
        f'<div class="card-head"><h4 id="rc-{card.id}"><a href="{escape(href)}">{key}</a></h4>{badge(card.status)}</div>'
        f"{stagebar(card)}{lights(card.lights) if card.lights or card.status not in ('released', 'cancelled') else ''}"
        f'<dl class="facts">{why}<div><dt>Waiting for</dt><dd>{waiting(card, now)}</dd></div>'
        f'<div><dt>In stage</dt><dd><time datetime="{card.entered_stage_at.isoformat()}">{duration(card.time_in_stage)}</time></dd></div></dl>'
        "</article>"
    )


def finished_item(card: Any, href: str) -> Markup:
    return Markup(
        f'<li><a href="{escape(href)}">{escape(card.key)}</a> {badge(card.status)} '
        f'<time datetime="{card.entered_stage_at.isoformat()}">{escape(local_time(card.entered_stage_at, card.timezone))}</time></li>'
    )


# ------------------------------------------------------------------------------ sparkline


def sparkline(series: SignalSeries, marks: list[tuple[datetime, str]], now: datetime, width: int = 320, height: int = 72) -> Markup:
    """A signal's history as inline SVG: values, pass/fail lines, stage changes; no JavaScript."""
    pts = [(p.at, p.value) for p in series.points if p.value is not None]
    errors = [p for p in series.points if p.value is None]
    pad_l, pad_r, pad_t, pad_b = 4, 4, 6, 6
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    t0 = series.points[0].at
    t1 = max(now, series.points[-1].at)
    span = (t1 - t0).total_seconds() or 1.0
    values = [v for _, v in pts] + [v for _, v, _ in series.thresholds]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    margin = (hi - lo) * 0.08
    lo, hi = lo - margin, hi + margin

    def x(at: datetime) -> float:
        return round(pad_l + w * (at - t0).total_seconds() / span, 1)

    def y(v: float) -> float:
        return round(pad_t + h * (1 - (v - lo) / (hi - lo)), 1)

    last = series.points[-1]
    label = (
        f"{series.name}: {len(series.points)} reports, latest "
        + (f"{number(last.value)}" if last.value is not None else f"error ({last.error})")
        + (f" from {last.samples:,} samples" if last.samples else "")
    )
    out = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{escape(label)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" class="spark-bg"/>',
    ]
    for at, stage in marks:
        if t0 <= at <= t1:
            out.append(
                f'<line x1="{x(at)}" x2="{x(at)}" y1="0" y2="{height}" class="spark-stage"><title>entered {escape(stage)}</title></line>'
            )
    for name, v, kind in series.thresholds:
        out.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y(v)}" y2="{y(v)}" class="spark-{kind}"><title>{escape(name)} {number(v)}</title></line>'
        )
    if len(pts) > 1:
        coords = " ".join(f"{x(at)},{y(v)}" for at, v in pts)
        out.append(f'<polyline points="{coords}" class="spark-line"/>')
    if pts and len(pts) <= 60:
        for at, v in pts:
            out.append(f'<circle cx="{x(at)}" cy="{y(v)}" r="2" class="spark-dot"/>')
    if pts:
        at, v = pts[-1]
        out.append(f'<circle cx="{x(at)}" cy="{y(v)}" r="3.5" class="spark-last"/>')
    for p in errors:
        cx, cy = x(p.at), height - pad_b
        out.append(
            f'<path d="M{cx - 3},{cy - 3}L{cx + 3},{cy + 3}M{cx + 3},{cy - 3}L{cx - 3},{cy + 3}" class="spark-error"><title>{escape(p.source)} error: {escape(p.error or "")}</title></path>'
        )
    out.append("</svg>")
    return Markup("".join(out))


# ------------------------------------------------------------------------------ state diagram


# One diagram per (definition, stage) ever drawn; pipelines are pinned by content hash.
_diagrams: LRUCache[tuple[str, str], str] = LRUCache(maxsize=512)
_diagrams_lock = threading.Lock()  # requests render in threads; cachetools' caches are not thread-safe


# The state diagram: pipeline stages as written, advances unlabelled, halt and resume labelled by
# their event only (no guards), and the cancel edge every live stage has drawn once, from a note-like
# "any stage" box, so the diagram stays small enough to read at the page's width.
_ANY_STAGE = "any_live_stage"
_DIAGRAM_STYLE = (
    "    classDef active fill:#ffd166,stroke:#7a5200,stroke-width:3px,color:#1d1d1d,font-weight:bold",
    "    classDef group fill:#ffffff,stroke:#8c95a3,stroke-dasharray:4 3,color:#3d4451",
    "    classDef ended fill:#eef0f3,stroke:#8c95a3,color:#1d1d1d",
)


def _mermaid(pipeline: Pipeline, stage: str) -> str:
    from conductor.machines import machine_class

    cls = machine_class(pipeline)
    cancel = pipeline.cancel_stage
    lines = [
        "stateDiagram-v2",
        f"    accTitle: {pipeline.name} pipeline",
        f"    accDescr: the current stage is {stage}",
        "    direction LR",
    ]
    cancellable: list[str] = []
    for state in cls.states:
        if state.initial:
            lines.append(f"    [*] --> {state.id}")
        for t in state.transitions:
            events = sorted(set(t.events))
            if cancel and t.target.id == cancel and events == ["cancel"] and state.id != cancel:
                cancellable.append(state.id)
                continue
            label = "" if events == ["advance"] else f" : {' / '.join(events)}"
            lines.append(f"    {state.id} --> {t.target.id}{label}")
    for state in cls.states:
        if state.final and state.id != cancel:
            lines.append(f"    {state.id} --> [*]")
    if cancellable:
        everywhere = len(cancellable) == sum(1 for st in cls.states if not st.final)
        what = "any stage before the end" if everywhere else ", ".join(cancellable)
        lines += [f'    state "{what}" as {_ANY_STAGE}', f"    {_ANY_STAGE} --> {cancel} : cancel"]
    lines += _DIAGRAM_STYLE
    if cancellable:
        lines.append(f"    class {_ANY_STAGE} group")
    ended = [st.id for st in cls.states if (st.final or st.id == pipeline.halt_stage) and st.id != stage]
    if ended:
        lines.append(f"    class {','.join(ended)} ended")
    # mermaid 11 ignores a standalone `stage:::active`: the current stage gets its class by statement
    lines.append(f"    class {stage} active")
    return "\n".join(lines)


def mermaid_source(pipeline: Pipeline, stage: str) -> str:
    """python-statemachine's mermaid diagram of the pipeline, the current stage highlighted."""
    key = (pipeline.content_hash(), stage)
    with _diagrams_lock:
        text = _diagrams.get(key)
    if text is None:
        text = _mermaid(pipeline, stage)
        with _diagrams_lock:
            _diagrams[key] = text
    return text


# ------------------------------------------------------------------------------ status ping


def status_ping(view: ReleaseView, url: str) -> str:
    """A plain-text summary of a release to paste into chat."""
    card = view.card
    tz = card.timezone
    lines = [f"{card.key}: {card.stage} ({STATUS_LABEL.get(card.status, card.status)}), {duration(card.time_in_stage)} in stage"]
    if card.lights:
        lights = ", ".join(
            f"{g.gate} {OUTCOME_LABEL[g.outcome]}" + (f" ({human_text(g.detail, tz)})" if g.outcome not in ("pass",) and g.detail else "")
            for g in card.lights
        )
        lines.append(f"Gates: {lights}")
    if card.reason:
        lines.append(f"Why: {human_text(card.reason, tz)}")
    lines.append(f"Waiting for: {waiting_text(card, view.now)}")
    t = view.snapshot.pipeline.advance_from(card.stage)
    if t is not None:
        lines.append(f"Next: {t.target}")
    if view.decision is not None and view.decision.pending:
        lines.append(f"Decision {view.decision.evaluation.id}, evidence {view.decision.evaluation.fingerprint}")
    lines.append(url)
    return "\n".join(lines)


# ------------------------------------------------------------------------------ environment


def _file_version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@lru_cache(maxsize=1)
def static_versions() -> dict[str, str]:
    """Content hashes of the static files, so their URLs change when they do (long cache lifetimes)."""
    return {str(p.relative_to(STATIC)): _file_version(p) for p in STATIC.rglob("*") if p.is_file()}


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        duration=duration,
        hours=hours,
        local_time=local_time,
        human=human_text,
        iso=iso,
        number=number,
    )
    env.globals.update(
        OUTCOME_LABEL=OUTCOME_LABEL,
        OUTCOME_SYMBOL=OUTCOME_SYMBOL,
        STATUS_LABEL=STATUS_LABEL,
        AUDIT_LABEL=AUDIT_LABEL,
        FOLDED_LABEL=FOLDED_LABEL,
        WOULD_LABEL=WOULD_LABEL,
        VERDICT_LABEL=VERDICT_LABEL,
        audit_reason=audit_reason,
        SHOWS_TARGET=SHOWS_TARGET,
        sparkline=sparkline,
        mermaid_source=mermaid_source,
        stagebar=stagebar,
        lights=lights,
        badge=badge,
        waiting=waiting,
        release_card=release_card,
        finished_item=finished_item,
    )
    return env
