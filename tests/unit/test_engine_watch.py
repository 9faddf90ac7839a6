"""The stall watch's rules (inference/engine_watch.py), on a clock the test moves."""

from __future__ import annotations

from inference.engine_watch import StallWatch


def test_holding_requests_without_a_step_stalls_after_the_timeout() -> None:
    watch = StallWatch(10.0)
    watch.stepped(100.0)
    watch.busy(105.0)
    assert not watch.check(True, 114.0)  # counted from going busy, not the last step
    assert watch.check(True, 115.5)
    assert watch.check(False, 116.0)  # stays stalled once its requests are gone
    watch.stepped(117.0)
    assert not watch.check(False, 117.0)


def test_an_idle_engine_is_probed_and_stalls_when_the_probe_goes_unanswered() -> None:
    watch = StallWatch(10.0)
    watch.stepped(100.0)
    assert not watch.wants_probe(False, 104.0)
    assert not watch.wants_probe(True, 106.0)  # a busy engine steps by itself
    assert watch.wants_probe(False, 106.0)
    watch.probed(106.0)
    assert not watch.wants_probe(False, 107.0)  # one probe in the pipe at a time
    assert not watch.check(False, 115.0)
    assert watch.check(False, 116.5)  # idle, and the probe went unanswered for the timeout
    assert not watch.wants_probe(False, 117.0)  # the unanswered probe is still in the pipe
    watch.stepped(118.0)  # it answered: the engine runs again
    assert not watch.check(False, 118.0)
    assert not watch.wants_probe(False, 120.0)


def test_an_answered_probe_keeps_an_idle_engine_live() -> None:
    watch = StallWatch(10.0)
    watch.stepped(100.0)
    for t in range(106, 200, 6):
        if watch.wants_probe(False, float(t)):
            watch.probed(float(t))
            watch.stepped(float(t) + 0.01)
        assert not watch.check(False, float(t) + 1)


def test_timeout_zero_never_stalls_and_never_probes() -> None:
    watch = StallWatch(0.0)
    watch.busy(0.0)
    assert not watch.wants_probe(False, 1e6)
    assert not watch.check(True, 1e6)
