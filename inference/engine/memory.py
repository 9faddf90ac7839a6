"""Sizing the KV pool on CUDA from free memory after a profiling forward pass.

`profile_kv_memory` runs the model once on `max_num_batched_tokens` tokens (prefill, split into
sequences no longer than the model's context) plus the LM head on `max_num_seqs` rows and a
softmax like the sampler's, against a one-block dummy pool whose slots are all "skip" (-1),
while the penalties' counts for `max_num_seqs` sequences are held (penalties.py: 5 bytes a
vocabulary entry; they live beside every later step's activations).
The peak that forward allocates above the resident weights is the activation reserve. Then

    kv_bytes = min(total * gpu_memory_utilization - (this process's memory) - activation peak,
                   free memory now - activation peak)

`gpu_memory_utilization` is this process's share of the GPU: "this process's memory" is what
torch holds (the weights, after emptying the allocator's cache) plus its CUDA context and
libraries (`own_non_torch_bytes`: the driver's per-process figure through NVML when it can be
had, else `CONTEXT_ALLOWANCE`). Other processes on the GPU (a second worker) only limit the
pool through the free memory, so two workers with a utilization of 0.45 each share one GPU.
The pool gets `kv_bytes // bytes_per_block` blocks; the plan is logged and returned.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch

from .attention import AttentionMetadata
from .config import EngineConfig
from .penalties import BYTES_PER_ENTRY as PENALTY_BYTES

log = logging.getLogger("kvmesh.engine.memory")
CONTEXT_ALLOWANCE = 1 << 30  # a CUDA context with cuBLAS and Triton: ~0.5-1 GiB


@dataclass(frozen=True)
class KVMemoryPlan:
    num_blocks: int
    block_size: int
    bytes_per_block: int
    total_bytes: int  # the device's memory
    in_use_bytes: int  # this process's: weights, context, before the pool
    activation_peak_bytes: int
    others_bytes: int = 0  # other processes on the device, before the pool

    @property
    def kv_bytes(self) -> int:
        return self.num_blocks * self.bytes_per_block

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def describe(self) -> str:
        gib = 2**30
        return (
            f"KV pool: {self.num_blocks} blocks x {self.block_size} tokens = {self.kv_tokens} "
            f"tokens, {self.kv_bytes / gib:.2f} GiB ({self.kv_bytes / self.total_bytes:.1%} of "
            f"{self.total_bytes / gib:.1f} GiB; this process before: "
            f"{self.in_use_bytes / gib:.2f} GiB, others: {self.others_bytes / gib:.2f} GiB, "
            f"activation peak {self.activation_peak_bytes / gib:.2f} GiB)"
        )


@torch.inference_mode()
def _profile_forward(model, config: EngineConfig, max_len: int,
                     kv_dtype: torch.dtype | None) -> None:
    cfg = model.config
    device = next(model.parameters()).device
    dtype = kv_dtype or next(model.parameters()).dtype
    bs = config.block_size
    tokens = max(1, config.max_num_batched_tokens)
    seq_len = min(tokens, max_len)
    lens = [seq_len] * (tokens // seq_len) + ([tokens % seq_len] if tokens % seq_len else [])
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    kv = torch.zeros(cfg.num_layers, 2, 1, bs, model.kv_heads, cfg.head_dim, dtype=dtype,
                     device=device)
    meta = AttentionMetadata(
        slot_mapping=torch.full((tokens,), -1, dtype=torch.long, device=device),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        block_tables=torch.zeros(len(lens), math.ceil(seq_len / bs), dtype=torch.int32,
                                 device=device),
        max_query_len=seq_len,
        max_seq_len=seq_len,
    )
    ids = torch.randint(0, cfg.vocab_size, (tokens,), device=device)
    penalty_counts = torch.empty(config.max_num_seqs * cfg.vocab_size * PENALTY_BYTES,
                                 dtype=torch.uint8, device=device)
    positions = torch.cat([torch.arange(n, device=device) for n in lens])
    model.layers[0].self_attn.backend.begin_step(meta)
    hidden = model(ids, positions, kv, meta)
    rows = min(tokens, config.max_num_seqs)
    logits = model.compute_logits(hidden[:rows])
    logits.softmax(-1).argmax(-1)
    torch.cuda.synchronize(device)
    del penalty_counts  # held through the forward: the peak counts it


def profile_kv_memory(model, config: EngineConfig, bytes_per_block: int,
                      kv_dtype: torch.dtype | None = None) -> KVMemoryPlan:
    """`bytes_per_block` already reflects the pool's dtype (an fp8 pool gets twice the blocks);
    `kv_dtype` (None = the model's) is the dummy pool's: the profiled kernels are the real ones."""
    device = next(model.parameters()).device
    max_len = min(model.config.max_position, config.max_model_len or 1 << 62)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    _profile_forward(model, config, max_len, kv_dtype)
    peak = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    own = torch.cuda.memory_reserved(device) + own_non_torch_bytes(device)
    others = max(0, total - free - own)
    budget = min(int(total * config.gpu_memory_utilization) - own, free) - peak
    num_blocks = max(0, budget // bytes_per_block)
    if num_blocks == 0:
        gib = 2**30
        raise RuntimeError(
            f"no memory left for the KV cache: this process holds {own / gib:.2f} GiB, other "
            f"processes {others / gib:.2f} GiB, {free / gib:.2f} GiB are free, and "
            f"{peak / gib:.2f} GiB of activations are needed, against gpu_memory_utilization="
            f"{config.gpu_memory_utilization} of {total / gib:.1f} GiB"
        )
    return KVMemoryPlan(num_blocks, config.block_size, bytes_per_block, total, own, peak,
                        others)


def own_non_torch_bytes(device: torch.device) -> int:
    """This process's device memory outside torch's allocator (context, cuBLAS, Triton):
    the driver's per-process use (NVML) minus what torch reserved, else `CONTEXT_ALLOWANCE`.
    NVML names processes by host pid, so in a pid namespace it finds none: the allowance."""
    try:
        import pynvml  # nvidia-ml-py: optional

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return max(0, int(proc.usedGpuMemory) - torch.cuda.memory_reserved(device))
    except Exception:  # no NVML library, no permission, another driver: use the allowance
        pass
    return CONTEXT_ALLOWANCE


def plan_kv_pool(model, config: EngineConfig, bytes_per_block: int,
                 kv_dtype: torch.dtype | None = None) -> KVMemoryPlan:
    """The engine's entry point: size the pool and log the plan (the engine keeps it as
    `LLMEngine.kv_plan`, which benchmarks read)."""
    plan = profile_kv_memory(model, config, bytes_per_block, kv_dtype)
    log.info(plan.describe())
    return plan
