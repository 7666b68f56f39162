"""bench/latency.py --breakdown: time stamps from inside the API and the worker processes.

Python imports this module at start-up when bench/probe is on PYTHONPATH. With
CONDUCTOR_BENCH_PROBE set to a directory, it wraps the functions an event passes through and
appends one line per passage to <dir>/<pid>.txt: wall-clock time, step, and the delivery or
event ids. Benchmark-only; nothing in the product imports it. The wrapping is by name, so a
renamed function shows up as a missing step in the breakdown, not as a wrong figure.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

PROBE_DIR = os.environ.get("CONDUCTOR_BENCH_PROBE")
_lines: list[str] = []


def mark(step: str, ident: object) -> None:
    _lines.append(f"{time.time():.6f} {step} {ident}\n")


def _write() -> None:
    n = len(_lines)  # what other threads append meanwhile stays for the next write
    lines = _lines[:n]
    del _lines[:n]
    if lines:
        with open(os.path.join(PROBE_DIR, f"{os.getpid()}.txt"), "a") as f:
            f.writelines(lines)


def _writer() -> None:  # Celery's pool children leave through os._exit, past atexit
    while True:
        time.sleep(0.5)
        _write()


def _ids(ids) -> str:
    return ",".join(str(int(i)) for i in ids)


def _install() -> None:
    import sys

    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository
    import conductor.api.webhooks as webhooks
    import conductor.service.jobs as jobs
    from conductor.dispatch.celery import CeleryDispatcher
    from conductor.service.ports import TASK_PROCESS_EVENTS

    receive = webhooks.receive

    async def probed_receive(request, *args, **kwargs):
        mark("received", request.headers.get("webhook-id", "-"))
        return await receive(request, *args, **kwargs)

    store_event = webhooks.store_event

    def probed_store_event(c, event, *args, **kwargs):
        stored = store_event(c, event, *args, **kwargs)
        mark("stored", f"{event.delivery_id}={stored.event_id}")
        return stored

    submit = CeleryDispatcher.submit

    def probed_submit(self, task, *args):
        ok = submit(self, task, *args)
        if task == TASK_PROCESS_EVENTS:
            mark("published", _ids(args[0]))
        return ok

    handle_events = jobs.handle_events

    def probed_handle_events(rt, event_ids, wait=False):
        mark("started", _ids(event_ids))
        return handle_events(rt, event_ids, wait)

    process_events = jobs.process_events

    def probed_process_events(c, ids, **kwargs):
        batch = process_events(c, ids, **kwargs)  # returns once its transaction committed
        mark("committed", _ids(ids))
        return batch

    webhooks.receive, webhooks.store_event = probed_receive, probed_store_event
    CeleryDispatcher.submit = probed_submit
    jobs.handle_events, jobs.process_events = probed_handle_events, probed_process_events


if PROBE_DIR:
    try:
        _install()
    except Exception as exc:  # reported in the breakdown as missing steps
        mark("probe_failed", repr(exc).replace(" ", "_"))
    atexit.register(_write)
    threading.Thread(target=_writer, daemon=True).start()
    os.register_at_fork(after_in_child=lambda: (_lines.clear(), threading.Thread(target=_writer, daemon=True).start()))
