"""`kvmesh up`'s NATS starts with every set of fresh passwords: nats-server reads a value that
starts with a digit as a number and stops (a CI run met one), so passwords never do."""

from __future__ import annotations

from pathlib import Path

from kvmesh.cli import local_nats, procs


def test_fresh_passwords_never_start_with_a_digit_or_a_dash() -> None:
    for _ in range(200):
        assert local_nats._password()[0].isalpha()


def test_nats_server_starts_with_generated_credentials(tmp_path: Path) -> None:
    for i in range(3):
        port = procs.free_port()
        state = tmp_path / str(i)
        state.mkdir()
        nats = local_nats.prepare(state, port)
        child = procs.start("nats", [procs.nats_server_binary(), "-c", str(nats.config)],
                            env=nats.server_env(), log=open(state / "nats.log", "ab"))  # noqa: SIM115
        try:
            procs.wait_port(port, 10, child.proc)
        finally:
            child.stop()
