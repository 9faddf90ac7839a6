"""`kvmesh up`'s supervisor with real child processes: a dead child is restarted, a crash
loop is given up on (and said), and losing every copy of an essential service is noticed."""

from __future__ import annotations

import signal
import sys
import time

from kvmesh.cli import procs
from kvmesh.cli.supervisor import Event, Supervisor


def _python(name: str, code: str):  # type: ignore[no-untyped-def]
    return lambda: procs.start(name, [sys.executable, "-c", code])


def _poll_until(sup: Supervisor, done, timeout: float = 20) -> list[Event]:  # type: ignore[no-untyped-def]
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        assert time.monotonic() < deadline, [str(e) for e in events]
        events += sup.poll()
        time.sleep(0.02)
    return events


def test_a_crash_looping_child_is_given_up_after_three_quick_deaths() -> None:
    sup = Supervisor(quick_s=30, give_up_after=3, backoff_s=0.05)
    sup.add("w0", _python("w0", "import sys; sys.exit(3)"))
    events = _poll_until(sup, lambda ev: any(e.what == "gave_up" for e in ev))
    assert [e.what for e in events] == ["exited", "restarted", "exited", "restarted", "gave_up"]
    assert "exited (3) 3 times in a row" in str(events[-1])
    assert sup.essential_lost() == "w0"
    assert sup.poll() == []  # given up: never started again


def test_a_killed_child_is_restarted_and_a_long_life_resets_the_count() -> None:
    sup = Supervisor(quick_s=0.5, give_up_after=2, backoff_s=0.05)
    sup.add("router", _python("router", "import time; time.sleep(60)"))
    for _ in range(3):  # each life outlasts quick_s, so it is never given up
        first = sup.children[0]
        deadline = time.monotonic() + 5
        while time.monotonic() - sup.services[0].started_at < 0.6:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)
        events = _poll_until(sup, lambda ev: any(e.what == "restarted" for e in ev))
        assert "exited (-9)" in str(events[0])
        assert sup.children[0].alive and sup.children[0] is not first
    assert sup.essential_lost() is None
    for c in sup.children:
        c.stop(timeout=1)


def test_a_long_life_is_no_quick_death_of_the_next_count() -> None:
    """A child that lived long, then died quickly once: one quick death in a row, not two
    (an audit saw a worker given up after a drain and one crash)."""
    sup = Supervisor(quick_s=0.5, give_up_after=2, backoff_s=0.05)
    sup.add("w0", _python("w0", "import time; time.sleep(60)"))
    while time.monotonic() - sup.services[0].started_at < 0.6:  # a long life
        time.sleep(0.05)
    sup.children[0].proc.send_signal(signal.SIGKILL)
    _poll_until(sup, lambda ev: any(e.what == "restarted" for e in ev))
    sup.children[0].proc.send_signal(signal.SIGKILL)  # at once: a quick death
    events = _poll_until(sup, lambda ev: any(e.what in ("restarted", "gave_up") for e in ev))
    assert [e.what for e in events] == ["exited", "restarted"], [str(e) for e in events]
    for c in sup.children:
        c.stop(timeout=1)


def test_losing_every_worker_is_essential_but_losing_one_is_not() -> None:
    sup = Supervisor(give_up_after=1, backoff_s=0.05)
    sup.add("w0", _python("w0", "import sys; sys.exit(1)"))
    sup.add("w1", _python("w1", "import time; time.sleep(60)"))
    sup.add("cache", _python("cache", "import sys; sys.exit(1)"))
    _poll_until(sup, lambda ev: sum(e.what == "gave_up" for e in ev) == 2)
    assert sup.essential_lost() is None  # w1 still serves; the cache is not essential
    sup.children[1].stop(timeout=1, sig=signal.SIGKILL)
    _poll_until(sup, lambda ev: any(e.what == "gave_up" for e in ev))
    assert sup.essential_lost() == "every w*"
