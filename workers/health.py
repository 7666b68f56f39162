"""Container health checks: `python -m workers.health worker|beat` exits 0 when healthy, 1 otherwise.

worker: this host's worker answers a ping over the broker (celery@<hostname>, the default node name).
beat: beat wrote its schedule file recently (beat_sync_every=1: after every task it sends, and it
sends tick every CONDUCTOR_TICK_INTERVAL_S).
"""

from __future__ import annotations

import socket
import sys
import time


def worker_ok(timeout: float = 5.0) -> bool:
    from workers import app

    replies = app.control.ping(destination=[f"celery@{socket.gethostname()}"], timeout=timeout)
    return bool(replies)


def beat_ok() -> bool:
    from conductor.config import get_settings
    from workers.celery import beat_schedule_path

    path = beat_schedule_path()
    files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
    if not files:
        return False
    age = time.time() - max(p.stat().st_mtime for p in files)
    return age <= max(60.0, 3 * get_settings().tick_interval_s)


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else ""
    checks = {"worker": worker_ok, "beat": beat_ok}
    if what not in checks:
        print("usage: python -m workers.health worker|beat", file=sys.stderr)
        return 2
    try:
        ok = checks[what]()
    except Exception as exc:  # unreachable broker and the like
        print(f"{what} unhealthy: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{what} {'healthy' if ok else 'unhealthy'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
