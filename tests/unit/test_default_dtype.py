"""`dtype="auto"` on the CPU: bfloat16 where the CPU has native bf16 dot products (read from
/proc/cpuinfo), float32 elsewhere; and the default engine on this CPU stays as close to the
model's float32 numbers as transformers' own bfloat16 run does."""

from __future__ import annotations

import copy
import platform

import pytest
import torch

from inference import LLM, SamplingParams
from inference.engine.config import EngineConfig
from inference.engine.cpu_features import native_bf16_flag, this_cpu_bf16_flag
from inference.engine.placement import pick_dtype
from inference.engine.sequence import Sequence

from .hf_reference import hf_greedy, hf_logits, hf_twin, run_tokens

CPU = torch.device("cpu")


def _x86(*flag_lines: str) -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\n"
                   for i, flags in enumerate(flag_lines))


ZEN4 = "fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512vl"
SKYLAKE = "fpu sse2 avx2 avx512f avx512bw avx512vl"
SAPPHIRE_RAPIDS = "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
NEOVERSE_V1 = "Features\t: fp asimd evtstrm aes crc32 atomics sve asimdbf16 bf16 i8mm\n"
NEOVERSE_N1 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_x86_with_bf16_dot_products_is_native():
    assert native_bf16_flag(_x86(ZEN4, ZEN4), "x86_64") == "avx512_bf16"
    assert native_bf16_flag(_x86(SAPPHIRE_RAPIDS), "AMD64") == "amx_bf16"  # the best one named


def test_x86_without_them_is_not():
    assert native_bf16_flag(_x86(SKYLAKE, SKYLAKE), "x86_64") is None
    assert native_bf16_flag(_x86(ZEN4, SKYLAKE), "x86_64") is None  # every core must have it


def test_arm_reads_its_features_line():
    assert native_bf16_flag(NEOVERSE_V1, "aarch64") == "bf16"
    assert native_bf16_flag(NEOVERSE_N1, "aarch64") is None  # asimdbf16 alone is not "bf16"


def test_other_machines_and_empty_text_are_not():
    assert native_bf16_flag(_x86(ZEN4), "riscv64") is None
    assert native_bf16_flag(NEOVERSE_V1, "x86_64") is None  # "bf16" is not an x86 flag
    assert native_bf16_flag("", "x86_64") is None


def test_auto_on_this_cpu_follows_its_flags():
    flag = this_cpu_bf16_flag()
    dtype, why = pick_dtype(EngineConfig(), CPU)
    if flag is None:
        assert (dtype, why) == (torch.float32, "the CPU has no native bfloat16 dot products")
    else:
        assert (dtype, why) == (torch.bfloat16, f"the CPU has {flag}")


def test_this_cpu_answer_agrees_with_torch_own_cpu_check():
    """torch reads CPUID, not /proc/cpuinfo: an independent answer (x86 only)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("torch's CPUID check is x86 only")
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if check is None:
        pytest.skip("this torch has no torch.cpu._is_avx512_bf16_supported")
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    assert (this_cpu_bf16_flag() is not None) == (check() or has_amx)


def test_explicit_dtype_wins_and_cuda_stays_bfloat16():
    assert pick_dtype(EngineConfig(dtype="float32"), CPU) == (torch.float32, "set by dtype")
    cuda = torch.device("cuda")  # a device object only: no GPU needed
    assert pick_dtype(EngineConfig(), cuda) == (torch.bfloat16, "the default on CUDA")
    with pytest.raises(ValueError, match="dtype: unknown 'fp64'"):
        pick_dtype(EngineConfig(dtype="fp64"), CPU)


# The real model. bfloat16 keeps 8 significant bits (unit roundoff 2^-8 = 0.4 %); through 30
# layers a logit row drifts a few percent from the float32 answer for the same weights, for us
# and for transformers alike (measured on this model, four prompts: our rows 1.7-3.8 % mean
# relative L2 error, transformers' bf16 1.8-3.0 %). A real fault (a wrong cast, a KV row read
# in the wrong dtype) moves rows by tens of percent. So: our mean error at most 6 % and at
# most twice transformers' own bf16 error on the same rows.
MAX_REL = 0.06
PROMPTS = ["The capital of France is", "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"]


@pytest.mark.slow
def test_default_engine_on_a_bf16_cpu_is_bfloat16_and_matches_transformers(smollm_gguf):
    if this_cpu_bf16_flag() is None:
        pytest.skip("this CPU has no native bf16 dot products: the default is float32, "
                    "checked against transformers in test_smollm_reference.py")
    llm = LLM(str(smollm_gguf))
    engine = llm.engine
    assert engine.dtype == torch.bfloat16
    hf16 = hf_twin(engine.runner.model)  # transformers' Llama, our weights, in bfloat16
    hf32 = copy.deepcopy(hf16).float()  # the same weights computed in float32: the truth
    for i, text in enumerate(PROMPTS):
        ids = llm.tokenizer.encode(text)
        seq = Sequence(i, f"r{i}", 0, list(ids), len(ids), SamplingParams(), 0.0)
        ours = run_tokens(engine, seq, len(ids)).float()
        engine.kv.free(seq)
        truth = hf_logits(hf32, ids)
        our_err, their_err = _rel(ours, truth), _rel(hf_logits(hf16, ids), truth)
        assert our_err <= MAX_REL and our_err <= 2 * their_err, (text, our_err, their_err)
        greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        assert llm.generate([ids], greedy)[0].outputs[0].token_ids == hf_greedy(hf16, ids, 8)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    """Mean over rows of |got - want| / |want| (L2 norms of each row)."""
    return ((got - want).norm(dim=-1) / want.norm(dim=-1)).mean().item()
