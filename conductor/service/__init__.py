"""Use cases over the store: the only place that changes a release."""

from conductor.service.engine import ROBOT_ACTOR, Actor, Conductor, ReleaseSnapshot

__all__ = ["Actor", "Conductor", "ROBOT_ACTOR", "ReleaseSnapshot"]
