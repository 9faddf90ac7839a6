"""Checkpoint loading: GGUF and HF folders give HF names and HF layout; broken files say why."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from inference.engine.loader import Checkpoint, load_checkpoint
from inference.engine.model_store import ModelNotFoundError


@pytest.fixture(scope="module")
def gguf_checkpoint(smollm_gguf: Path) -> Checkpoint:
    return load_checkpoint(smollm_gguf)


@pytest.fixture(scope="module")
def gguf_weights(gguf_checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    return dict(gguf_checkpoint.weights())


@pytest.mark.slow
def test_gguf_config_is_smollm2(gguf_checkpoint: Checkpoint) -> None:
    cfg = gguf_checkpoint.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (9, 3, 64)
    assert (cfg.vocab_size, cfg.max_position, cfg.rope_theta) == (49152, 8192, 100000.0)
    assert cfg.rms_norm_eps == pytest.approx(1e-5)
    assert cfg.tie_word_embeddings
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == (2,)
    assert gguf_checkpoint.tokenizer is not None


@pytest.mark.slow
def test_gguf_weights_have_hf_names_and_shapes(
    gguf_checkpoint: Checkpoint, gguf_weights: dict[str, torch.Tensor]
) -> None:
    cfg = gguf_checkpoint.config
    assert "lm_head.weight" not in gguf_weights  # tied
    assert gguf_weights["model.embed_tokens.weight"].shape == (cfg.vocab_size, cfg.hidden_size)
    layer = "model.layers.29."
    kv = cfg.num_kv_heads * cfg.head_dim
    assert gguf_weights[layer + "self_attn.k_proj.weight"].shape == (kv, cfg.hidden_size)
    assert gguf_weights[layer + "mlp.down_proj.weight"].shape == (
        cfg.hidden_size,
        cfg.intermediate_size,
    )
    assert len(gguf_weights) == 2 + 9 * cfg.num_layers
    assert all(w.dtype == torch.float32 for w in gguf_weights.values())


@pytest.mark.slow
def test_gguf_weights_equal_transformers(
    smollm_gguf: Path, gguf_weights: dict[str, torch.Tensor]
) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers loads GGUF models only with accelerate")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        smollm_gguf.parent, gguf_file=smollm_gguf.name, dtype=torch.float32
    ).state_dict()
    assert set(ref) - {"lm_head.weight"} == set(gguf_weights)
    for name, ours in gguf_weights.items():
        theirs = ref[name]
        assert ours.shape == theirs.shape, name
        assert (ours - theirs).abs().max().item() <= 1e-6, name


@pytest.mark.slow
def test_hf_folder_round_trip(
    gguf_checkpoint: Checkpoint, gguf_weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    cfg = gguf_checkpoint.config
    hf = {"model_type": "llama", **cfg.to_hf(), "bos_token_id": 1, "eos_token_id": 2}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    names = sorted(gguf_weights)
    half = len(names) // 2  # two shards: every shard must be read
    save_file({n: gguf_weights[n] for n in names[:half]}, str(tmp_path / "a.safetensors"))
    save_file({n: gguf_weights[n] for n in names[half:]}, str(tmp_path / "b.safetensors"))
    assert gguf_checkpoint.tokenizer is not None
    gguf_checkpoint.tokenizer._tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"eos_token": "<|im_end|>", "chat_template": gguf_checkpoint.tokenizer.chat_template}
        )
    )
    ck = load_checkpoint(tmp_path)
    assert ck.config.to_hf() == cfg.to_hf()
    assert ck.config.eos_token_ids == (2,)
    assert ck.tokenizer is not None
    assert ck.tokenizer.encode("hi 42") == gguf_checkpoint.tokenizer.encode("hi 42")
    loaded = dict(ck.weights())
    assert set(loaded) == set(gguf_weights)
    assert all(torch.equal(loaded[n], gguf_weights[n]) for n in names)


def test_missing_path_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="kvmesh models pull"):
        load_checkpoint(tmp_path / "nope.gguf")


def test_garbage_gguf_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"\x00not a gguf file" * 64)
    with pytest.raises(ValueError, match=r"garbage\.gguf.*not a valid GGUF"):
        load_checkpoint(bad)


@pytest.mark.parametrize("keep", [1000, 50_000_000])
def test_truncated_gguf_is_a_value_error_naming_the_file(
    smollm_gguf: Path, tmp_path: Path, keep: int
) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm_gguf.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(keep))
    with pytest.raises(ValueError, match=r"cut\.gguf"):
        load_checkpoint(cut)


def test_hf_folder_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_checkpoint(tmp_path)


def test_unsupported_hf_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        load_checkpoint(tmp_path)


def test_an_output_projection_bias_is_refused_naming_the_file(tmp_path: Path) -> None:
    _tiny_hf_folder(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "attention_bias": True}))
    with pytest.raises(ValueError, match=r"config\.json: llama: attention_bias"):
        load_checkpoint(tmp_path)


def _tiny_hf_folder(folder: Path) -> None:
    from safetensors.torch import save_file

    cfg = {
        "model_type": "llama",
        "vocab_size": 8,
        "hidden_size": 4,
        "intermediate_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({"model.norm.weight": torch.ones(4)}, str(folder / "model.safetensors"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_broken_safetensors_is_a_value_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    _tiny_hf_folder(tmp_path)
    shard = tmp_path / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(b"\xff" * 64 if damage == "garbage" else data[:-3])
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_checkpoint(tmp_path)


def test_unsupported_gguf_architecture(smollm_gguf: Path, tmp_path: Path) -> None:
    from inference.engine.gguf_loader import gguf_config

    with pytest.raises(ValueError, match="unsupported architecture 'qwen3moe'"):
        gguf_config(tmp_path / "x.gguf", {"general.architecture": "qwen3moe"}, set(), None)


@pytest.mark.slow
def test_gguf_load_time_is_reasonable(smollm_gguf: Path) -> None:
    start = time.perf_counter()
    ck = load_checkpoint(smollm_gguf)
    n = sum(1 for _ in ck.weights())
    elapsed = time.perf_counter() - start
    print(f"\nloaded {n} tensors from {smollm_gguf.name} in {elapsed:.1f}s")
    assert elapsed < 60


def _rank_one_of_three(name: str) -> tuple[int, int, int] | None:
    """What rank 1 of TP=3 reads of SmolLM2-135M: a third of the heads (whole rotary heads of
    64), of the MLP and of the vocabulary; norms whole."""
    if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
        return (0, 64 * 3, 64 * 6) if "q_proj" in name else (0, 64, 128)
    if name.endswith(("gate_proj.weight", "up_proj.weight")):
        return (0, 512, 1024)
    if name.endswith("o_proj.weight"):
        return (1, 192, 384)
    if name.endswith("down_proj.weight"):
        return (1, 512, 1024)
    if name.endswith("embed_tokens.weight"):
        return (0, 16384, 32768)
    return None


@pytest.mark.slow
def test_a_tensor_parallel_rank_reads_only_its_slices_from_gguf_and_safetensors(
    gguf_checkpoint: Checkpoint, gguf_weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """GGUF rows are cut before dequantising (Q/K un-permuted per head), safetensors through
    `get_slice`: both equal the slice of the whole tensor."""
    from safetensors.torch import save_file

    save_file(gguf_weights, str(tmp_path / "model.safetensors"))
    hf = {"model_type": "llama", **gguf_checkpoint.config.to_hf()}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    for ck in (gguf_checkpoint, load_checkpoint(tmp_path)):
        seen = set()
        for name, got in ck.weights(_rank_one_of_three):
            whole, part = gguf_weights[name], _rank_one_of_three(name)
            want = whole if part is None else whole.narrow(part[0], part[1], part[2] - part[1])
            assert torch.equal(got, want), name
            seen.add(name)
        assert seen == set(gguf_weights)
