"""The inference worker's configuration: the actor's settings and, inside, the engine's.

`kvmesh.config.load(WorkerConfig, argv)` reads every field of both from flags and `KVMESH_*`
variables (`--max-num-batched-tokens`, `KVMESH_WORKER_BLOCK_SIZE`, ...), so every engine
setting can be set on a served worker, and the one object flows from the flag to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from inference.engine.config import EngineConfig
from kvmesh.config import Ranged
from kvmesh.cpu_sets import check_exist, parse_cpus


@dataclass(frozen=True)
class WorkerConfig(Ranged):
    SERVICE: ClassVar[str] = "worker"
    nats_url: str = "nats://127.0.0.1:4222"
    worker_id: str = ""  # "" = a fresh random id
    model: str | None = None  # engine spec; None = the default SmolLM2 GGUF
    served_name: str = ""  # name clients use; "" = the model config's name
    heartbeat_interval: float = 0.5
    max_waiting: int = 128  # requests queued past max_num_seqs before refusing (503); 0 = no cap
    torch_threads: int = 0  # 0 = torch's default (set in the engine process)
    # CPUs the engine process runs on ("3,11": both hyperthreads of one core); "" = any.
    # Whoever places the other processes keeps them off these (`kvmesh up --engine-cpus`).
    engine_cpus: str = ""
    # Tokens a request's chunks gather before they are sent (its first text and its end at once;
    # inference/stream_interval.py); 1 = every token, as it is sampled.
    stream_interval: int = 1
    metrics_port: int = 9102  # Prometheus /metrics; 0 = off; one port per worker on a host
    metrics_host: str = "127.0.0.1"  # address /metrics listens on (compose: 0.0.0.0)
    vllm_metrics: bool = True  # also export vLLM's metric names (inference/vllm_names.py)
    grace_period: float = 30.0  # seconds to finish in-flight requests on SIGTERM
    log_level: str = "INFO"
    # Seconds the worker's loop, and its engine process's wait for commands, poll without
    # sleeping after each message or step (kvmesh/busy_poll.py): a core each while it lasts.
    busy_poll: float = 0.0
    # Seconds the engine process may hold requests without making a step (or, idle, leave a
    # probe unanswered: it is probed after half of this without a step) before the worker
    # counts it stalled (inference/engine_watch.py): no heartbeats, new requests refused,
    # until it steps again. Above the longest step this model can take here; 0 = off.
    engine_stall_timeout: float = 20.0
    # Seconds without a gateway's beat (`GatewayBeat`) after which the requests whose deltas go
    # to it are stopped: it crashed, nobody reads them. 0 = never.
    gateway_dead_after: float = 10.0
    engine: EngineConfig = field(default_factory=EngineConfig)

    POSITIVE: ClassVar[frozenset[str]] = frozenset({"heartbeat_interval", "stream_interval"})

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            cpus = parse_cpus(self.engine_cpus)
            check_exist(cpus)
        except ValueError as exc:  # a ConfigError naming the setting
            raise ValueError(f"engine_cpus: {exc}") from None
        if cpus and self.engine.tensor_parallel_size > 1:  # its ranks would inherit the set
            raise ValueError("engine_cpus: not with tensor_parallel_size > 1 (every rank "
                             "would share those CPUs)")
