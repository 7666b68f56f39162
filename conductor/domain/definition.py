"""Pipeline definitions: the pydantic schema of state_definitions/*.yaml and its cross-checks.

Pure: parsing text into a `Pipeline` does no I/O; `conductor.domain.loader` reads files and maps
every problem to its line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# Matched against the stripped text. Whitespace is allowed only after a number or a unit, never
# as a run two patterns could share: `^\s*(..)?\s*(..)?\s*...$` backtracked through every split
# of a long blank run, and 200 spaces in a definition took half a minute.
_DURATION = re.compile(r"^(?:(\d+)\s*d\s*)?(?:(\d+)\s*h\s*)?(?:(\d+)\s*m\s*)?(?:(\d+)\s*s)?$")


def _short(value: Any, limit: int = 40) -> str:
    """repr() of a value from a definition, cut short so a huge one cannot flood an error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_duration(value: Any) -> timedelta:
    """'90m', '12h', '2d', '1d12h' or a number of seconds -> timedelta; ValueError otherwise.

    Hand-written because pydantic's timedelta accepts ISO 8601 ('PT12H') but not the short form
    release engineers write in YAML; both are accepted here. A duration beyond what timedelta
    holds (about 2.7 million years) is a ValueError too, not an OverflowError.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration such as 30m, 12h or 2d")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError("a duration such as 30m, 12h or 2d, not NaN")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        try:
            return timedelta(seconds=value)
        except OverflowError:  # also float infinity
            raise ValueError(f"{value!r} seconds is too long for a duration") from None
    if isinstance(value, str):
        if value.strip().upper().startswith("P"):
            from pydantic import TypeAdapter

            return TypeAdapter(timedelta).validate_python(value.strip())
        m = _DURATION.match(value.strip())
        if m and any(m.groups()):
            try:
                d, h, mi, s = (int(x or 0) for x in m.groups())
                return timedelta(days=d, hours=h, minutes=mi, seconds=s)
            except (OverflowError, ValueError):  # ValueError: more digits than int() converts
                raise ValueError(f"{_short(value)} is too long for a duration") from None
    raise ValueError(f"{_short(value)} is not a duration; write e.g. 30m, 12h, 2d or 1d12h")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


SignalType = Literal["number", "count", "ratio", "percent", "boolean"]


class SignalSpec(_Strict):
    type: SignalType
    description: str = ""


# Names the runtime stores and builds state machines from: identifiers, as long as their columns
# allow (releases.stage is 50 characters, signals.name 100).
def _name_check(what: str, pattern: str, allowed: str, longest: int) -> AfterValidator:
    rx = re.compile(pattern)

    def check(name: str) -> str:
        if not rx.fullmatch(name) or len(name) > longest:
            raise ValueError(f"{what} name {_short(name)}: use a letter, then letters, digits{allowed} (at most {longest} characters)")
        return name

    return AfterValidator(check)


StageName = Annotated[str, _name_check("stage", r"[A-Za-z][A-Za-z0-9_]*", " or _", 50)]
SignalName = Annotated[str, _name_check("signal", r"[A-Za-z][A-Za-z0-9_.-]*", ", _, . or -", 100)]
GateName = Annotated[str, _name_check("gate", r"[A-Za-z][A-Za-z0-9_.-]*", ", _, . or -", 100)]

GateMode = Literal["live", "shadow"]


class _GateBase(_Strict):
    # shadow: judged and stored with its evidence ("would have ..."), never acted on; for trying a
    # new gate beside the live ones before it decides anything.
    mode: GateMode = "live"


class _SignalGate(_GateBase):
    signal: str
    max_age: Duration | None = None
    fresh_in_stage: bool = False
    head_sha: bool = False
    # A value outside the pass band measured on a commit waits for up to this many more reports on
    # the same commit (CI's automatic reruns) before it is judged: a failure that passes on a rerun
    # is flaky, not failing.
    reruns: int = Field(default=0, ge=0, le=10)


class ThresholdGate(_SignalGate):
    """Pass band, fail band and the grey zone between them over one numeric signal."""

    kind: Literal["threshold"]
    better: Literal["higher", "lower"]
    pass_at: float = Field(alias="pass")
    fail_at: float = Field(alias="fail")
    min_samples: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _bands_do_not_overlap(self) -> ThresholdGate:
        if self.better == "higher" and not self.fail_at < self.pass_at:
            raise ValueError(f"bad threshold band: with better=higher, fail ({self.fail_at}) must be below pass ({self.pass_at})")
        if self.better == "lower" and not self.pass_at < self.fail_at:
            raise ValueError(f"bad threshold band: with better=lower, pass ({self.pass_at}) must be below fail ({self.fail_at})")
        return self


class CountGate(_SignalGate):
    """A count with an upper bound (fail above it) and/or a lower bound (wait below it)."""

    kind: Literal["count"]
    max: int | None = Field(default=None, ge=0)
    min: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _has_a_bound(self) -> CountGate:
        if self.max is None and self.min is None:
            raise ValueError("bad threshold band: a count gate needs max, min or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"bad threshold band: min ({self.min}) is above max ({self.max})")
        return self


class SignoffGate(_GateBase):
    """Every listed team has signed off its regression testing."""

    kind: Literal["signoff"]
    teams: list[str] = Field(min_length=1)


class CompareGate(_SignalGate):
    """This release's rate against a baseline release's in the same ring, from counts, with a
    sequential test (conductor.domain.stats): pass when the regression is shown to be below the
    tolerance, fail when it is shown to be above, wait (saying how much more data it needs) in
    between. `floor` is the fixed backstop: a value worse than it fails whatever the baseline."""

    kind: Literal["compare"]
    better: Literal["higher", "lower"]
    # The smallest regression that matters, in the signal's unit (percentage points for a percent).
    tolerance: float = Field(gt=0)
    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="chance of failing a release within the tolerance")
    beta: float = Field(default=0.05, gt=0, lt=0.5, description="chance of passing a release beyond it")
    baseline: Literal["previous", "production"] = "previous"
    floor: float | None = None
    min_samples: int = Field(default=0, ge=0)
    # The rate to compare with while no release has one yet (a track's first release in a ring, or
    # its first with Conductor): the app's known rate, in the signal's unit (99.6 for 99.6 %
    # crash-free). Without it such a comparison is inconclusive, and the release is asked about.
    reference: float | None = Field(default=None, ge=0)


Gate = Annotated[ThresholdGate | CountGate | SignoffGate | CompareGate, Field(discriminator="kind")]

StageKind = Literal["stage", "rollout", "final", "halted", "cancelled"]


class Stage(_Strict):
    description: str = ""
    kind: StageKind = "stage"
    # A rollout stage's share of users (0 < percent <= 100): set_rollout and submit_to_store use it
    # unless their action says otherwise. Along the stage path the percentages must increase.
    percent: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _percent_is_for_rollouts(self) -> Stage:
        if self.percent is not None and self.kind != "rollout":
            raise ValueError(f"percent is for rollout stages; this one is {self.kind}")
        return self


class Action(BaseModel):
    """An action run after entering the target stage; extra keys are the action's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    action: str = Field(pattern=r"^[a-z][a-z0-9_]*$")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_with_good_params(self) -> Action:
        from conductor.domain.actions import check_action

        problem = check_action(self.action, self.params)
        if problem:
            raise ValueError(problem)
        return self


class Transition(_Strict):
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    gates: list[str] = []
    min_soak: Duration = timedelta(0)
    # After the soak, how long to keep waiting for signals that are not in yet before asking a human.
    max_wait: Duration | None = None
    schedule: str | None = None
    on_fail: Literal["hold", "halt"] = "hold"
    actions: list[Action] = []

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


class ApprovalPolicy(_Strict):
    deadline: Duration = timedelta(hours=12)
    on_timeout: Literal["hold", "cancel"] = "hold"


def _valid_cron(expr: str) -> str:
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise ValueError(f"{_short(expr)} is not a valid cron expression (e.g. '0 10 * * FRI')")
    return expr


CronExpr = Annotated[str, BeforeValidator(_valid_cron)]


class Pipeline(_Strict):
    """A release pipeline: stages, the gated transitions between them, signals and schedules."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    timezone: str = "UTC"
    schedules: dict[str, CronExpr] = {}
    approval: ApprovalPolicy = ApprovalPolicy()
    signals: dict[SignalName, SignalSpec] = {}
    gates: dict[GateName, Gate] = {}
    stages: dict[StageName, Stage] = Field(min_length=2)
    transitions: list[Transition] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'Europe' is a directory
            raise ValueError(f"unknown time zone {_short(v)} (use an IANA name such as Europe/Stockholm)") from None
        return v

    # --- derived views, used by the machine builder, the engine and the CLI ---

    @property
    def initial_stage(self) -> str:
        return next(iter(self.stages))

    @property
    def halt_stage(self) -> str | None:
        return next((s for s, st in self.stages.items() if st.kind == "halted"), None)

    @property
    def cancel_stage(self) -> str | None:
        return next((s for s, st in self.stages.items() if st.kind == "cancelled"), None)

    def scale_of(self, gate: Gate) -> float:
        """What the value of the gate's signal counts in: 100 for a percent, 1 otherwise."""
        spec = self.signals.get(getattr(gate, "signal", ""))
        return 100.0 if spec is not None and spec.type == "percent" else 1.0

    def advance_from(self, stage: str) -> Transition | None:
        return next((t for t in self.transitions if t.source == stage), None)

    def is_terminal(self, stage: str) -> bool:
        return self.stages[stage].kind in ("final", "cancelled")

    def stage_order(self) -> list[str]:
        """The main line from the initial stage following advance transitions."""
        order: list[str] = []
        cur: str | None = self.initial_stage
        while cur is not None and cur not in order:
            order.append(cur)
            t = self.advance_from(cur)
            cur = t.target if t else None
        return order

    def content_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# Gate signal requirements: which signal types a gate kind may read.
_NUMERIC = {"number", "count", "ratio", "percent", "boolean"}


Problem = tuple[tuple[Any, ...], str]


@dataclass(frozen=True)
class _Sections:
    """The raw mapping's sections as cross_check reads them; a section of the wrong type is empty.

    Keys are whatever YAML scalars the file holds (a `~` key is None), so stage names here are
    Hashable, not yet str; pydantic reports the ones that are not text."""

    stages: dict[Any, Any]
    gates: dict[Any, Any]
    signals: dict[Any, Any]
    schedules: dict[Any, Any]
    transitions: list[Any]

    def kind_of(self, stage: Hashable) -> str:
        body = self.stages.get(stage)
        return body.get("kind", "stage") if isinstance(body, dict) else "stage"


def cross_check(raw: Any) -> list[Problem]:
    """Checks across sections (references, reachability), run on the raw mapping.

    Runs even when pydantic found field errors, so one `validate` run reports every problem.
    Returns (path, message) pairs; an empty list means the references hold together.
    A reference that is not a string (a list, a mapping, a number) is left to pydantic's type
    error: it cannot name a stage, gate, signal or schedule, and a list is not even hashable.
    """
    if not isinstance(raw, dict):
        return []

    def section(name: str, kind: type) -> Any:
        return raw[name] if isinstance(raw.get(name), kind) else kind()

    raw_sections = _Sections(section("stages", dict), section("gates", dict), section("signals", dict),
                             section("schedules", dict), section("transitions", list))  # fmt: skip
    problems: list[Problem] = []
    for name, gate in raw_sections.gates.items():
        if not isinstance(gate, dict) or not isinstance(gate.get("signal"), str):
            continue
        spec = raw_sections.signals.get(gate["signal"])
        if spec is None:
            problems.append((("gates", name, "signal"), f"unknown signal {gate['signal']!r}; declare it under signals"))
        elif gate.get("kind") == "compare" and isinstance(spec, dict) and spec.get("type") not in ("percent", "ratio"):
            problems.append((("gates", name, "signal"), f"a compare gate compares rates: {gate['signal']!r} must be a percent or a ratio"))
        elif gate.get("kind") == "compare" and isinstance(spec, dict):
            top = 100 if spec.get("type") == "percent" else 1
            for key in ("reference", "floor"):
                value = gate.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value <= top:
                    problems.append(
                        (("gates", name, key), f"{value:g} is not a rate of {gate['signal']!r}: a {spec.get('type')} is 0 to {top}")
                    )
    sources_seen: set[Hashable] = set()
    edges: dict[Hashable, list[Hashable]] = {}
    for i, t in enumerate(raw_sections.transitions):
        if isinstance(t, dict):
            problems += _check_transition(raw_sections, i, t, sources_seen, edges)
    return problems + _check_reachability(raw_sections, sources_seen, edges) + _check_percents(raw_sections)


def _check_percents(raw: _Sections) -> list[Problem]:
    """Rollout percentages increase along the stage path, and a set_rollout or submit_to_store
    knows its percent (its own, or its target stage's)."""
    from conductor.domain.actions import PERCENT_ACTIONS

    def percent_of(stage: Any) -> Any:
        body = raw.stages.get(stage)
        return body.get("percent") if isinstance(body, dict) else None

    problems: list[Problem] = []
    last: tuple[Any, float] | None = None
    for i, t in enumerate(raw.transitions):
        if not isinstance(t, dict) or not isinstance(t.get("to"), str):
            continue
        pct = percent_of(t["to"])
        if isinstance(pct, int | float) and not isinstance(pct, bool):
            if last is not None and pct <= last[1]:
                why = f"{pct:g}% after {last[0]}'s {last[1]:g}%: rollout percentages must increase"
                problems.append((("stages", t["to"], "percent"), why))
            last = (t["to"], float(pct))
        for j, a in enumerate(t["actions"] if isinstance(t.get("actions"), list) else []):
            if isinstance(a, dict) and a.get("action") in PERCENT_ACTIONS and a.get("percent") is None and pct is None:
                problems.append((("transitions", i, "actions", j), f"{a['action']} needs a percent: give it here or on stage {t['to']!r}"))
    return problems


def _check_transition(
    raw: _Sections, i: int, t: dict[Any, Any], sources_seen: set[Hashable], edges: dict[Hashable, list[Hashable]]
) -> list[Problem]:
    """The references of transition `i`; records its edge and that its source has one."""
    problems: list[Problem] = []
    for end in ("from", "to"):
        if isinstance(t.get(end), str) and t[end] not in raw.stages:
            problems.append((("transitions", i, end), f"unknown stage {t[end]!r} in transition"))
    src, dst = (t.get(end) if isinstance(t.get(end), str) else None for end in ("from", "to"))
    if src in raw.stages:
        if src in sources_seen:
            problems.append((("transitions", i, "from"), f"stage {src!r} already has an outgoing transition"))
        sources_seen.add(src)
        if raw.kind_of(src) in ("final", "cancelled", "halted"):
            problems.append((("transitions", i, "from"), f"stage {src!r} is {raw.kind_of(src)} and cannot advance"))
    if src in raw.stages and dst in raw.stages:
        edges.setdefault(src, []).append(dst)
    for j, g in enumerate(t["gates"] if isinstance(t.get("gates"), list) else []):
        if isinstance(g, str) and g not in raw.gates:
            problems.append((("transitions", i, "gates", j), f"unknown gate {g!r}; declare it under gates"))
    sched = t.get("schedule")
    if isinstance(sched, str) and sched not in raw.schedules:
        problems.append((("transitions", i, "schedule"), f"unknown schedule {sched!r}; declare it under schedules"))
    if t.get("on_fail") == "halt":
        if src in raw.stages and raw.kind_of(src) != "rollout":
            problems.append((("transitions", i, "on_fail"), f"halt is only for rollout stages; {src!r} is not one"))
        if not any(raw.kind_of(s) == "halted" for s in raw.stages):
            problems.append((("transitions", i, "on_fail"), "on_fail: halt needs a stage of kind halted"))
    return problems


def _check_reachability(raw: _Sections, sources_seen: set[Hashable], edges: dict[Hashable, list[Hashable]]) -> list[Problem]:
    """Every stage is reachable from the first one (cancelled and halted are entered implicitly),
    and every stage that is not an end has an outgoing transition."""
    if not raw.stages:
        return []
    problems: list[Problem] = []
    initial = next(iter(raw.stages))
    reachable, todo = {initial}, [initial]
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    has_rollout = any(raw.kind_of(s) == "rollout" for s in raw.stages)
    for stage in raw.stages:
        k = raw.kind_of(stage)
        implicit = k == "cancelled" or (k == "halted" and has_rollout)
        if stage not in reachable and not implicit:
            problems.append((("stages", stage), f"stage {stage!r} is unreachable from {initial!r}"))
        if k in ("stage", "rollout") and stage not in sources_seen:
            problems.append((("stages", stage), f"stage {stage!r} has no outgoing transition and is not final"))
    return problems
