"""Build a python-statemachine class per pipeline with the library's class factory.

Events: `advance` (each declared transition), `halt` (rollout stages to the halted stage),
`resume` (halted back to the rollout stage it halted from, guarded on the release's
`halted_from`), and `cancel` (any live stage to the cancelled stage). The machine is rebuilt
around the release row for every step; it holds no state of its own and does no I/O.

Side effects of a transition (the audit row, the actions the definition declares, retiring the
stage's timers) are written by the service's ReleaseStep right after `send()` returns, not by
python-statemachine listeners (`after_transition`): what they write depends on why the release
moved (the robot's verdict, a human's approval with its reason, CI's branch cut), which the
machine does not know, and passing all of that through event arguments into listeners would
hide the writes of a step behind the library's dispatch. The machine decides whether an edge
exists; the step records what crossing it means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statemachine import StateChart
from statemachine.io.class_factory import StateDefinition, TransitionDict, create_machine_class_from_definition

from conductor.domain.definition import Pipeline


def _halted_from(stage: str) -> Callable[[Any], bool]:
    def guard(model: Any) -> bool:
        return getattr(model, "halted_from", None) == stage

    guard.__name__ = f"halted_from_{stage}"
    return guard


def _states(pipeline: Pipeline) -> dict[str, StateDefinition]:
    states: dict[str, StateDefinition] = {}
    halt, cancel = pipeline.halt_stage, pipeline.cancel_stage
    for i, (name, stage) in enumerate(pipeline.stages.items()):
        on: dict[str | None, list[TransitionDict]] = {}
        t = pipeline.advance_from(name)
        if t is not None:
            on["advance"] = [{"target": t.target}]
        if stage.kind == "rollout" and halt:
            on["halt"] = [{"target": halt}]
        if stage.kind == "halted":
            on["resume"] = [{"target": s, "cond": _halted_from(s)} for s, st in pipeline.stages.items() if st.kind == "rollout"]
        if cancel and stage.kind not in ("final", "cancelled"):
            on["cancel"] = [{"target": cancel}]
        body: StateDefinition = {"name": name.replace("_", " ")}
        if i == 0:
            body["initial"] = True
        if stage.kind in ("final", "cancelled"):
            body["final"] = True
        if on:
            body["on"] = on
        states[name] = body
    return states


_classes: dict[str, type[StateChart[Any]]] = {}


def machine_class(pipeline: Pipeline, content_hash: str | None = None) -> type[StateChart[Any]]:
    """The machine class for a pipeline, built once per content hash (pass it when known: a
    release pins its definition by that hash, and hashing the definition costs more than the step)."""
    key = content_hash or pipeline.content_hash()
    cls = _classes.get(key)
    if cls is None:
        cls_name = "".join(part.capitalize() for part in pipeline.name.replace("-", "_").split("_")) + "Release"
        cls = create_machine_class_from_definition(
            cls_name,
            states=_states(pipeline),
            # The class factory builds a StateChart, which ignores unknown events and swallows
            # callback errors; a release engine must refuse an illegal edge loudly instead.
            allow_event_without_transition=False,
            catch_errors_as_events=False,
            atomic_configuration_update=True,
            # halted is entered only by `halt`; our own validator checks reachability with
            # that in mind, the library's would reject valid pipelines.
            validate_final_reachability=False,
        )
        _classes[key] = cls
    return cls


def machine_for(pipeline: Pipeline, model: Any, state_field: str = "stage", content_hash: str | None = None) -> StateChart[Any]:
    """A machine bound to `model`, starting from the stage the model already holds."""
    return machine_class(pipeline, content_hash)(model=model, state_field=state_field)
