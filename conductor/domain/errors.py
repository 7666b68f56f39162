"""One root error for everything Conductor refuses, each subclass says what went wrong.

Entry points map these to exit code 1 (CLI) or 4xx (HTTP); anything else is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefinitionProblem:
    """One problem of a definition file: where it is (file, line, field) and what is wrong."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class ConductorError(Exception):
    """Something Conductor refused to do; the message names the thing and the fix."""

    http_status = 400


class DefinitionError(ConductorError):
    """A pipeline definition is invalid; carries every problem found, each with file, line and field."""

    http_status = 422

    def __init__(self, problems: list[DefinitionProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InvalidSettings(ConductorError):
    """A track's settings (a connection, notification channels) that do not validate; names the field."""

    http_status = 422


class NotFound(ConductorError):
    """A release, track, decision or definition that was asked for does not exist."""

    http_status = 404


class InvalidSignal(ConductorError):
    """A signal has an unknown name or a value of the wrong type for its declaration."""

    http_status = 422


class IllegalTransition(ConductorError):
    """The release's current stage has no such transition (for example cancel after released)."""

    http_status = 409


class NotPaused(ConductorError):
    """An approval or rejection was sent for a release that is not waiting for one."""

    http_status = 409


class StaleApproval(ConductorError):
    """The evidence changed since the decision was shown; look at the new decision and approve that."""

    http_status = 409


class ConcurrentUpdate(ConductorError):
    """Someone else changed the release first; reload it and try again."""

    http_status = 409


class AlreadyExists(ConductorError):
    """A release or track with that name already exists."""

    http_status = 409


class Forbidden(ConductorError):
    """The actor's role does not allow this, or four-eyes forbids approving one's own change."""

    http_status = 403
