"""The top floor: the `kvmesh` command and what starts and watches the mesh's processes.

`commands.py` is the `kvmesh` console script (`python -m kvmesh.cli` runs it too); `launcher.py`
is `kvmesh up`, `serve.py` is `kvmesh serve SERVICE`, `healthcheck.py` the containers' health
check; `procs.py`, `supervisor.py`, `parent_death.py` start, restart and reap child processes;
`local_nats.py` and `nats_permissions.py` write the NATS users and permissions; `telemetry_env.py`
says where `kvmesh up`'s children send traces. This is the one package that may import every
service (the layer rules: kvmesh/layers.py); nothing below it imports it.
"""
