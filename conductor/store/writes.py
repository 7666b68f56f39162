"""The writes of one transaction, held until its end and then sent with the COMMIT in one round trip.

A step's appends (signals, audit rows, outbox actions, timers, answers) and its updates (the
release row, retired timers, finished inbox rows) do not need each other's results, so they are
buffered here instead of being sent one by one. `commit()` sends them all: on PostgreSQL inside
psycopg's pipeline mode (https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html), where
the statements and the COMMIT leave together and the server answers once; on SQLite (in-process,
no round trips to save) one after the other. Either way in the order they were added, and an
error in any of them rolls back the whole transaction when the commit raises.

Only statements without results belong here: pipeline mode cannot hand a RETURNING row back to
SQLAlchemy before the end, so inserts are built with `.inline()` (no implicit RETURNING of the
new id) and nothing here checks a rowcount. What needs a result (a new evaluation's id, the
optimistic-lock check of an unlocked row) is executed at once instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Executable


class Writes:
    """Buffered writes of one open transaction (see the module docstring)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._pending: list[tuple[Executable, Any]] = []

    def add(self, statement: Executable, params: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._pending.append((statement, params))

    def __len__(self) -> int:
        return len(self._pending)

    def commit(self) -> None:
        """Send every buffered write, then COMMIT (one round trip on PostgreSQL)."""
        pending, self._pending = self._pending, []
        if pending and self.conn.dialect.name == "postgresql":
            with self.conn.connection.driver_connection.pipeline():  # type: ignore[union-attr]
                for statement, params in pending:
                    self.conn.execute(statement, params)
                self.conn.commit()
            return
        for statement, params in pending:
            self.conn.execute(statement, params)
        self.conn.commit()
