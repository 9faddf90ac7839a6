"""`procs.free_port`: ports a listener can bind, outside the kernel's ephemeral range (where an
outgoing connection could take one before its listener binds it), never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

from kvmesh.cli import procs


def test_ports_are_bindable_distinct_and_outside_the_ephemeral_range() -> None:
    lo, hi = map(int, Path(procs.EPHEMERAL_RANGE).read_text().split())
    ports = [procs.free_port() for _ in range(50)]
    first = procs.free_port(run=8)
    given = [*ports, *range(first, first + 8)]
    assert len(set(given)) == len(given)
    assert not [p for p in given if lo <= p <= hi or p < 10000]
    assert all(procs.bindable(p) for p in given)


def test_a_listened_port_is_skipped(monkeypatch) -> None:
    """The draw lands on a port another socket listens on (not one this process gave out):
    free_port draws again."""
    span = procs._outside_ephemeral()
    taken = next(p for p in span if p not in procs._handed_out and procs.bindable(p))
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        assert not procs.bindable(taken)
        draws = iter([taken, taken, taken])
        real = procs.random.randrange
        monkeypatch.setattr(procs.random, "randrange", lambda a, b: next(draws, None) or real(a, b))
        assert procs.free_port() != taken


def test_a_range_low_in_the_ports_puts_them_above_it(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "ip_local_port_range"
    fake.write_text("1024\t40000\n")
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE", str(fake))
    assert all(40000 < procs.free_port() < 65536 for _ in range(20))
