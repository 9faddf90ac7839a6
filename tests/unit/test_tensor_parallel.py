"""Tensor parallelism on CPU: gloo, one process per rank. A TP engine computes what the TP=1
engine computes (logits within 1e-4 in float32, the same greedy tokens) through chunked
prefill, prefix-cache hits, n > 1 forks (copy-on-write copies) and preemption; for Llama's
layer, Qwen2's (q/k/v bias, one KV head replicated over the ranks, a padded vocabulary),
Qwen3's (q/k norms) and the default SmolLM2-135M GGUF (9 heads: TP=3). A model that does not
split is refused naming `tensor_parallel_size`, and a rank that dies takes its engine process
down (so the worker fails over) instead of hanging it."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from inference.engine import tp_launch
from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from inference.engine_client import EngineClient

from .engine_driver import greedy, run

TOL = 1e-4


def _engine(spec: str, tp: int, **overrides) -> LLMEngine:
    cfg = {"block_size": 4, "num_kv_blocks": 17, "max_num_batched_tokens": 7, "device": "cpu",
           "dtype": "float32", "seed": 11, "tensor_parallel_size": tp, **overrides}
    return LLMEngine.from_model(spec, EngineConfig(**cfg))


def _workload(vocab: int = 500) -> list[tuple[int, list[int], object]]:
    """Arrivals over ten steps, half of them sharing a 20-token prefix, and a request with
    n=3 whose prompt ends in a partial block: its choices copy that block on write."""
    rng = random.Random(1)
    shared = [rng.randrange(3, vocab) for _ in range(20)]
    reqs = []
    for i in range(8):
        head = shared if i % 2 else []
        prompt = head + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 30))]
        reqs.append((rng.randrange(0, 10), prompt, greedy(rng.randrange(4, 16))))
    return [*reqs, (1, list(range(3, 13)), greedy(6, n=3))]


class Recorder:
    """Every step's logits, and every non-empty batch of block copies, of one engine."""

    def __init__(self, engine: LLMEngine) -> None:
        self.logits: list[torch.Tensor] = []
        self.copies = 0
        runner = engine.runner
        execute, copy_blocks = runner.execute, runner.copy_blocks

        def recording_execute(batch, rows, in_flight=None):
            out = execute(batch, rows, in_flight)
            self.logits.append(out.clone())
            return out

        def recording_copies(copies):
            self.copies += bool(copies)
            copy_blocks(copies)

        runner.execute, runner.copy_blocks = recording_execute, recording_copies


def assert_same_steps(want: Recorder, got: Recorder) -> None:
    assert len(got.logits) == len(want.logits)
    for i, (g, w) in enumerate(zip(got.logits, want.logits, strict=True)):
        assert g.shape == w.shape, f"step {i}"
        if g.numel():  # a step of prefill chunks only samples nothing
            assert (g - w).abs().max().item() <= TOL, f"step {i}"


@pytest.fixture(autouse=True)
def _stop_ranks():
    yield
    tp_launch.shutdown()  # this test process was rank 0: its followers go with the test


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen2", "tiny-qwen3"])
def test_tp2_equals_tp1_through_chunked_prefill_prefix_hits_forks_and_preemption(preset):
    ref, tp = _engine(f"dummy:{preset}", 1), _engine(f"dummy:{preset}", 2)
    reqs = _workload()
    want, got = Recorder(ref), Recorder(tp)
    want_tokens = run(ref, reqs)
    assert run(tp, reqs, check=lambda e: e.kv.check_invariants()) == want_tokens
    assert_same_steps(want, got)
    stats = tp.stats()
    assert stats.preemptions > 0 and stats.prefix_hit_tokens > 0 and got.copies > 0
    assert stats.free_blocks == stats.num_blocks


def test_a_rank_holds_its_slice_of_every_layer_and_of_the_kv_pool():
    tp = _engine("dummy:tiny-qwen2", 2)  # 4 heads, 1 KV head, vocabulary 509
    attn = tp.runner.model.layers[0].self_attn
    assert (attn.heads, attn.kv_heads) == (2, 1)  # the KV head is replicated
    assert tp.runner.kv_cache.shape[-2] == 1
    assert tp.runner.model.embed_tokens.weight.shape[0] == 255  # 509 padded to 510, halved
    assert tp.runner.model.layers[0].mlp.down_proj.weight.shape == (64, 64)


def test_a_model_that_does_not_split_is_refused_naming_tensor_parallel_size():
    with pytest.raises(ValueError, match="tensor_parallel_size: 3 does not divide"):
        _engine("dummy:tiny", 3)
    with pytest.raises(ValueError, match="quantization"):
        _engine("dummy:tiny", 2, quantization="int4")
    assert tp_launch._followers is None  # refused before any rank started


@pytest.mark.slow
def test_default_model_at_tp3_equals_tp1(smollm_gguf: Path):
    """SmolLM2-135M: 9 heads and 3 KV heads split three ways (TP=2 is refused)."""
    opts = {"block_size": 16, "num_kv_blocks": 5, "max_num_batched_tokens": 24}
    with pytest.raises(ValueError, match="tensor_parallel_size: 2 does not divide"):
        _engine(str(smollm_gguf), 2, **opts)
    ref, tp = _engine(str(smollm_gguf), 1, **opts), _engine(str(smollm_gguf), 3, **opts)
    tok = ref.tokenizer
    sea = "You are a concise assistant who answers questions about the sea and ships. "
    sky = "You are a patient teacher who explains the weather and the sky to children. "
    prompts = [tok.encode(tok.apply_chat_template([
        {"role": "system", "content": system}, {"role": "user", "content": q}]))
        for system, q in ((sea, "What is a tide?"), (sky, "Why is the sky blue?"),
                          (sea, "Name a sailing knot."))]
    # Two ~35-token prompts need 3 blocks each of the 5: one is preempted; the third comes
    # after both and finds the first one's system prompt cached.
    reqs = [(0, prompts[0], greedy(8)), (2, prompts[1], greedy(8)), (24, prompts[2], greedy(8))]
    want, got = Recorder(ref), Recorder(tp)
    assert run(tp, reqs) == run(ref, reqs)
    assert_same_steps(want, got)
    stats = tp.stats()
    assert stats.prefix_hit_tokens > 0 and stats.preemptions > 0


# -- a rank that dies -------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _tp_client(on_exit) -> EngineClient:
    cfg = EngineConfig(device="cpu", dtype="float32", block_size=4, num_kv_blocks=64,
                       tensor_parallel_size=2)
    return await EngineClient.start("dummy:tiny", cfg, 1, lambda step: None, on_exit)


async def test_a_dying_rank_ends_the_engine_process_so_the_worker_fails_over():
    gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    client = await _tp_client(lambda why: gone.done() or gone.set_result(why))
    (follower,) = _children(client.proc.pid)
    client.add("long", list(range(3, 40)), greedy(100_000))  # a step is in flight
    os.kill(follower, signal.SIGKILL)
    why = await asyncio.wait_for(gone, 60)
    assert f"code {tp_launch.RANK_DIED}" in why
    assert client.proc.exitcode == tp_launch.RANK_DIED


async def test_the_ranks_exit_when_the_engine_process_dies():
    client = await _tp_client(lambda why: None)
    (follower,) = _children(client.proc.pid)
    client.proc.kill()
    deadline = time.monotonic() + 60
    while _alive(follower) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not _alive(follower), "the follower rank outlived its engine process"
