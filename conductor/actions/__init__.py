"""Outbound actions: notifications and the track's own automation, behind one adapter interface."""

from conductor.actions.base import ActionAdapter, ActionFailed, ActionOutcome, ActionRequest, ReleaseRef
from conductor.actions.registry import ActionAdapters

__all__ = ["ActionAdapter", "ActionAdapters", "ActionFailed", "ActionOutcome", "ActionRequest", "ReleaseRef"]
