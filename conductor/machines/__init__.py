"""python-statemachine classes built from pipeline definitions."""

from conductor.machines.factory import machine_class, machine_for

__all__ = ["machine_class", "machine_for"]
