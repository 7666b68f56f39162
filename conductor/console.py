"""How the command line and the demo print the read model: decision cards, timelines, gate lights.

User and stored text (reasons, names, details) always goes into a rich `Text`, never into a
markup string: a pause reason such as "closing tag [/bold] here" is printed as written and cannot
break the output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Symbols that differ without colour too (piped output, colour-blind readers): ✓ pass, ✗ fail,
# ? inconclusive, – no data.
LIGHTS = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "inconclusive": "[yellow]?[/]", "no_data": "[bright_black]–[/]"}


def fmt_time(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if dt else "-"


def plain(value: Any) -> Text:
    """A table cell of user or stored text: shown as it is, never read as rich markup."""
    return Text("" if value is None else str(value))


def print_decision(console: Console, evaluation) -> None:
    """The decision card: each gate's value, thresholds, samples, source, age and the fingerprint."""
    ev = evaluation.evidence
    table = Table(
        title=f"Decision {evaluation.id}: {ev['transition']} -> {ev['verdict']}",
        caption=f"fingerprint {evaluation.fingerprint}",
        title_justify="left",
    )
    for col in ("gate", "outcome", "value", "thresholds", "samples", "source", "age", "why"):
        table.add_column(col)
    for g in ev["gates"]:
        inp = g["inputs"]
        keys = ("better", "pass", "fail", "tolerance", "floor", "baseline", "min_samples", "max", "min")
        thr = ", ".join(f"{k}={inp[k]}" for k in keys if inp.get(k) is not None)
        age = next(iter(g.get("ages_s", {}).values()), None)
        value = inp.get("value", "")
        if "teams" in inp:
            value = ", ".join(f"{t}:{'✓' if s and s['approved'] else ('✗' if s else '…')}" for t, s in inp["teams"].items())
        table.add_row(
            plain(g["gate"]),
            Text.from_markup(LIGHTS.get(g["outcome"], "")) + plain(f" {g['outcome']}"),
            plain(value),
            plain(thr),
            plain(inp.get("samples") or ""),
            plain(inp.get("source") or ""),
            f"{age / 3600:.1f}h" if age is not None else "",
            plain(g["detail"]),
        )
    console.print(table)
    console.print(Text(f"summary: {ev['summary']}"))


# Rows that crowd a timeline: counted under it, shown by `conductor show --json` and the dashboard.
FOLDED = ("signals_recorded", "action_skipped")


def print_timeline(console: Console, snap) -> None:
    t = Table(title=Text(f"Timeline of {snap.release.key}"))
    for col in ("at", "what", "from", "to", "actor", "reason"):
        t.add_column(col)
    folded = {k: 0 for k in FOLDED}
    for a in snap.audit:
        if a.kind in folded:
            folded[a.kind] += 1
            continue
        t.add_row(fmt_time(a.at), a.kind, a.from_stage or "", a.to_stage or "", plain(a.actor), plain(a.reason))
    if any(folded.values()):
        t.caption = f"and {folded['signals_recorded']} signal reports, {folded['action_skipped']} skipped actions (conductor show --json)"
    console.print(t)


def print_replay(console: Console, report) -> None:
    """A replay (conductor.read.replay): one row per release, where the decisions would differ,
    then the totals as recorded and as replayed."""
    console.print(
        Text(f"Replaying {len(report.releases)} release(s) of {', '.join(report.tracks)} since {fmt_time(report.since)} "
             f"through {report.definition} (nothing is written)")
    )  # fmt: skip
    table = Table(title=f"{report.differing} of {len(report.releases)} would have gone differently")
    for col in ("release", "started", "first difference", "hours to release (recorded → replayed)"):
        table.add_column(col)
    for r in report.releases:
        hours = f"{_hours(r.recorded_hours)} → {_hours(r.replayed_hours)}"
        table.add_row(plain(r.release), fmt_time(r.started_at), plain(r.difference or r.note or "same decisions"), hours)
    console.print(table)
    totals = Table(title="Totals")
    for col in ("", "releases", "pauses (asked)", "holds", "halts", "released", "median hours to release"):
        totals.add_column(col)
    for label, t in (("recorded", report.recorded), ("replayed", report.replayed)):
        totals.add_row(label, str(t.releases), str(t.asks), str(t.holds), str(t.halts), str(t.released), _hours(t.median_hours_to_release))
    console.print(totals)


def _hours(h: float | None) -> str:
    return "–" if h is None else f"{h:.1f}"
