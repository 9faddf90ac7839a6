"""`logit_bias` on CUDA: the same in-place batched add as on the CPU, and through an engine
with CUDA graphs on, a +100 bias forces its token in a batch beside an unbiased request."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from inference.engine.logit_bias import apply_logit_bias
from inference.engine.presets import preset_config
from inference.engine.sampling_params import SamplingParams


def test_bias_on_cuda_equals_bias_on_cpu():
    logits = torch.randn(5, 1000, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(logit_bias={1: 3.0, 999: -100.0}), SamplingParams(),
              SamplingParams(logit_bias={7: 100.0}), SamplingParams(),
              SamplingParams(logit_bias={1: -2.5})]
    on_gpu = logits.cuda()
    apply_logit_bias(logits, params)
    apply_logit_bias(on_gpu, params)
    assert torch.equal(on_gpu.cpu(), logits)


def test_forced_token_with_cuda_graphs_beside_a_free_request():
    cfg = EngineConfig(device="cuda", num_kv_blocks=128, max_num_seqs=8)
    engine = LLMEngine(preset_config("tiny"), cfg, None, lambda m: m.init_dummy(seed=3))
    assert engine.graph_decoder is not None
    greedy = dict(max_tokens=6, temperature=0.0, ignore_eos=True)
    engine.add_request("biased", [1, 2, 3, 4], SamplingParams(logit_bias={5: 100.0}, **greedy))
    engine.add_request("free", [1, 2, 3, 4], SamplingParams(**greedy))
    got: dict[str, list[int]] = {"biased": [], "free": []}
    while engine.has_unfinished():
        for out in engine.step():
            got[out.request_id].extend(out.token_ids)
    assert got["biased"] == [5] * 6 and got["free"] != [5] * 6
