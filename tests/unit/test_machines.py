from pathlib import Path

import pytest
from statemachine.contrib.diagram import formatter
from statemachine.exceptions import TransitionNotAllowed

from conductor.domain.loader import load_pipeline
from conductor.machines import machine_class, machine_for

DEFS = Path(__file__).resolve().parents[2] / "state_definitions"
MOBILE = load_pipeline(DEFS / "mobile_weekly.yaml")


class Model:
    def __init__(self, stage=None, halted_from=None):
        self.stage, self.halted_from = stage, halted_from


def test_new_release_starts_on_trunk_and_walks_the_main_line():
    m = Model()
    sm = machine_for(MOBILE, m)
    assert m.stage == "trunk"
    for expected in MOBILE.stage_order()[1:]:
        sm.send("advance")
        assert m.stage == expected


@pytest.mark.parametrize(
    "stage,event",
    [("beta", "halt"), ("released", "advance"), ("released", "cancel"), ("trunk", "resume"), ("cancelled", "cancel"), ("beta", "jump")],
)
def test_illegal_edges_raise(stage, event):
    with pytest.raises(TransitionNotAllowed):
        machine_for(MOBILE, Model(stage)).send(event)


def test_halt_and_resume_to_the_stage_it_halted_in():
    for stage in ("rollout_1", "rollout_100"):
        m = Model(stage)
        machine_for(MOBILE, m).send("halt")
        assert m.stage == "halted"
        m.halted_from = stage
        machine_for(MOBILE, m).send("resume")
        assert m.stage == stage


def test_resume_without_origin_is_refused():
    with pytest.raises(TransitionNotAllowed):
        machine_for(MOBILE, Model("halted", None)).send("resume")


def test_classes_are_cached_per_definition_hash():
    assert machine_class(MOBILE) is machine_class(load_pipeline(DEFS / "mobile_weekly.yaml"))
    assert machine_class(MOBILE) is not machine_class(load_pipeline(DEFS / "desktop.yaml"))


def test_mermaid_diagram_from_the_library():
    text = formatter.render(machine_for(MOBILE, Model()), "mermaid")
    assert text.startswith("stateDiagram-v2")
    assert "rollout_1 --> halted : Halt" in text
    assert "halted --> rollout_100 : Resume [halted_from_rollout_100]" in text
