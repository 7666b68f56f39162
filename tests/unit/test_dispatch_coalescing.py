"""CeleryDispatcher.event_stored: an event stored while nothing is being published goes out at once
from the caller's thread; under a burst, ids go through a publisher thread, coalesced into
process_events messages, each id exactly once and in order, never raising for a broker outage.

The app is a fake that records send_task calls (no broker), which is all the dispatcher uses."""

from __future__ import annotations

import threading

from conductor.dispatch.celery import CeleryDispatcher
from conductor.service.ports import TASK_PROCESS_EVENTS


class FakeApp:
    """Records every send_task call and the thread making it; optionally blocks the first one
    until `release` is set, or raises."""

    def __init__(self, block_first=False, fail_first=0):
        self.calls: list[tuple[str, list]] = []
        self.block_first = block_first
        self.fail_first = fail_first
        self.entered = threading.Event()
        self.release = threading.Event()
        self.attempts = 0
        self.threads: list[threading.Thread] = []  # which thread made each attempt
        self._lock = threading.Lock()

    def send_task(self, name, args=None, **kwargs):
        with self._lock:
            self.attempts += 1
            attempt = self.attempts
            self.threads.append(threading.current_thread())
        if attempt == 1:
            self.entered.set()
            if self.block_first:
                assert self.release.wait(5), "the test never released the first publish"
        if attempt <= self.fail_first:
            raise ConnectionError("redis: connection refused")
        with self._lock:
            self.calls.append((name, [list(a) if isinstance(a, list) else a for a in (args or [])]))


def published_ids(app):
    return [i for _, args in app.calls for i in args[0]]


def in_background(d, event_id):
    """event_stored in a thread of its own: with an idle dispatcher it publishes in the caller's thread."""
    t = threading.Thread(target=d.event_stored, args=(event_id,), daemon=True)
    t.start()
    return t


def test_a_single_event_goes_out_alone_at_once_from_the_callers_thread():
    app = FakeApp()
    d = CeleryDispatcher(app=app)
    d.event_stored(42)
    # Published before event_stored returned, by the caller: no hand-over to another thread.
    assert app.calls == [(TASK_PROCESS_EVENTS, [[42]])]
    assert app.threads == [threading.current_thread()]
    assert d._out.publisher is None
    assert d.flush(2.0) is True
    # Nothing else is sent afterwards, and a second event is its own message again.
    d.event_stored(43)
    assert d.flush(2.0) is True
    assert app.calls == [(TASK_PROCESS_EVENTS, [[42]]), (TASK_PROCESS_EVENTS, [[43]])]


def test_a_burst_is_coalesced_into_bounded_messages_each_id_once_in_order():
    app = FakeApp(block_first=True)
    d = CeleryDispatcher(app=app, max_batch=100)
    ids = list(range(1000, 1250))
    first = in_background(d, ids[0])
    assert app.entered.wait(2.0), "the first id was never published"
    for i in ids[1:]:  # the broker is slow: these pile up while the first message is being published
        d.event_stored(i)
    assert d.flush(0.05) is False  # not all published yet: flush says so instead of lying
    app.release.set()
    assert d.flush(2.0) is True
    first.join(2)
    assert {name for name, _ in app.calls} == {TASK_PROCESS_EVENTS}
    assert all(len(args) == 1 for _, args in app.calls)  # args=[ids]: one positional argument, the list
    assert published_ids(app) == ids  # every id exactly once, in the order handed over
    sizes = [len(args[0]) for _, args in app.calls]
    assert max(sizes) <= d.max_batch
    assert len(app.calls) < len(ids)
    # Everything that waited was taken at once, up to max_batch per message.
    assert sizes == [1, 100, 100, 49]


def test_a_small_max_batch_is_respected():
    app = FakeApp(block_first=True)
    d = CeleryDispatcher(app=app, max_batch=7)
    in_background(d, 0)
    assert app.entered.wait(2.0)
    for i in range(1, 30):
        d.event_stored(i)
    app.release.set()
    assert d.flush(2.0) is True
    assert published_ids(app) == list(range(30))
    assert [len(args[0]) for _, args in app.calls] == [1, 7, 7, 7, 7, 1]


def test_a_broker_outage_never_raises_and_flush_still_completes():
    app = FakeApp(fail_first=1)
    d = CeleryDispatcher(app=app)
    d.event_stored(7)  # its publish fails: logged, the sweeper re-sends it later; nothing raised here
    assert app.entered.is_set()
    assert d.flush(2.0) is True
    assert app.attempts == 1 and app.calls == []  # tried once, not published, not retried in a loop
    # The publisher survived the failure: the next id goes out.
    d.event_stored(8)
    assert d.flush(2.0) is True
    assert app.calls == [(TASK_PROCESS_EVENTS, [[8]])]


def test_submit_uses_the_same_app_and_swallows_its_errors():
    app = FakeApp(fail_first=1)
    d = CeleryDispatcher(app=app)
    d.submit("workers.tasks.run_action", 5)  # raises inside send_task: must not escape
    d.submit("workers.tasks.run_action", 6)
    assert app.calls == [("workers.tasks.run_action", [6])]


def test_a_forked_child_starts_afresh_and_does_not_republish_the_parents_ids():
    """After a fork the child gets its own queue, lock and thread: ids waiting in the parent are
    the parent's to publish, and a lock the parent held at the fork cannot hang the child."""
    app = FakeApp(block_first=True)
    d = CeleryDispatcher(app=app)
    in_background(d, 1)
    assert app.entered.wait(2)
    d.event_stored(2)  # waits in the parent's queue behind the blocked publish
    parent = d._out
    parent_cond, parent_thread = parent.cond, parent.publisher
    parent_cond.acquire()  # as if the fork happened while the parent held the lock
    try:
        parent.pid = -1  # what a forked child sees: another pid than the one that built the state
        child = threading.Thread(target=d.event_stored, args=(3,), daemon=True)
        child.start()
        child.join(2)
        assert not child.is_alive(), "the child hung on the lock the parent held at the fork"
        assert d.flush(2.0) is True
        assert d._out is not parent and d._out.publisher is not parent_thread
        assert app.calls == [(TASK_PROCESS_EVENTS, [[3]])]  # the child sends its own id only
    finally:
        parent_cond.release()
        app.release.set()


class GatedLock:
    """The dispatcher's publishing lock, with a gate that holds the publisher thread (which takes
    it with `with`) before it even tries to take it; callers' non-blocking attempts pass through."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def acquire(self, blocking=True, timeout=-1):
        return self.lock.acquire(blocking, timeout)

    def release(self):
        self.lock.release()

    def __enter__(self):
        self.waiting.set()
        assert self.gate.wait(5), "the test never opened the gate"
        self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def test_an_idle_looking_dispatcher_does_not_let_a_new_id_overtake_one_the_publisher_holds():
    """The publisher thread has taken an id from its queue but not yet the publishing lock: the
    lock is free, yet a caller must not publish its own id ahead of that one."""
    app = FakeApp()
    d = CeleryDispatcher(app=app)
    out = d._current()
    out.publishing = gate = GatedLock()
    with out.cond:  # id 1 waits in the publisher thread's queue, as under a burst
        d._queue(out, [1])
    assert gate.waiting.wait(2.0), "the publisher thread never took id 1"
    d.event_stored(2)  # the lock is free at this moment; id 1 is not published yet
    assert app.calls == []
    gate.gate.set()
    assert d.flush(2.0) is True
    assert published_ids(app) == [1, 2]


def test_after_a_failed_publish_callers_hand_over_instead_of_waiting_for_the_broker(monkeypatch):
    app = FakeApp(fail_first=1)
    threads = app.threads
    d = CeleryDispatcher(app=app)
    caller = threading.current_thread()
    d.event_stored(7)  # published by the caller, and it fails: the broker is presumed away for a while
    assert threads == [caller] and app.calls == []
    d.event_stored(8)
    assert d.flush(2.0) is True
    assert app.calls == [(TASK_PROCESS_EVENTS, [[8]])]
    assert threads[1] is not caller  # went through the publisher thread
    # Once the pause is over, an idle dispatcher publishes from the caller's thread again.
    monkeypatch.setattr(d._current(), "inline_after", 0.0)
    d.event_stored(9)
    assert threads[2] is caller and app.calls[-1] == (TASK_PROCESS_EVENTS, [[9]])


def test_a_broker_that_accepts_and_never_answers_does_not_hold_the_caller():
    """A real Celery app against a socket that accepts connections and never replies: the
    publish gives up after its socket timeouts (3 tries), and event_stored returns."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # kept open, never answered
            except OSError:
                pass

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        d = CeleryDispatcher(f"redis://127.0.0.1:{server.getsockname()[1]}/0", publish_timeout_s=0.2)
        caller = threading.Thread(target=d.event_stored, args=(1,), daemon=True)
        caller.start()
        caller.join(5)
        assert held, "the dispatcher never connected"
        assert not caller.is_alive(), "event_stored is still waiting on a broker that never answers"
        assert d.flush(0.5) is True  # given up on (logged); the sweeper re-sends the event
    finally:
        stop.set()
        acceptor.join(2)
        for conn in held:
            conn.close()
        server.close()
