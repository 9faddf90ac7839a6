"""Read a llama.cpp GGUF file: its config, its tokenizer, and its weights in Hugging Face form.

Contract:
- `open_gguf` turns every way a file can be broken (bad magic, truncated header or data) into a
  ValueError that names the file.
- `gguf_config` supports the `llama` architecture (Llama 2/3 without rope scaling, SmolLM2,
  Mistral as llama.cpp writes it), `qwen2` (q/k/v biases) and `qwen3` (q/k norms), and
  raises ValueError for anything it would get wrong.
- `iter_gguf_weights` yields `(hf_name, float32 tensor)` in HF layout ([out, in] matrices;
  for `llama` only, Q/K rows un-permuted back from llama.cpp's rotary order: its converter
  permutes Llama's and leaves Qwen's in HF order), one tensor at a time, so peak memory is
  one dequantised tensor on top of the memory-mapped file. Given `select` (a tensor-parallel
  rank's slices), only the part it names: rows are cut before dequantising (GGUF stores a
  matrix row by row, whole quantisation blocks per row), columns after.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ModelConfig
from .loader import Select
from .pooling_config import gguf_pooling
from .tokenizer import Tokenizer

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def open_gguf(path: Path) -> Any:
    """A `gguf.GGUFReader` over `path` (memory-mapped); ValueError if the file is not sound."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        short = [t.name for t in reader.tensors if t.data.nbytes != t.n_bytes]
    except Exception as e:  # the reader raises ValueError, IndexError, ... on broken files
        raise ValueError(f"{path}: not a valid GGUF file, corrupt or truncated ({e})") from e
    if short:
        raise ValueError(f"{path}: GGUF file is truncated (tensor {short[0]} is incomplete)")
    return reader


def metadata_of(reader: Any) -> dict[str, Any]:
    """Every metadata field as a plain Python value (str, int, float, bool, list)."""
    return {name: field.contents() for name, field in reader.fields.items()}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of the GGUF file at `path` (see `metadata_of`)."""
    return metadata_of(open_gguf(Path(path)))


def gguf_config(
    path: Path, meta: dict[str, Any], tensor_names: set[str], tokenizer: Tokenizer | None
) -> ModelConfig:
    """A ModelConfig from `{arch}.*` metadata; ValueError for what this engine cannot run."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: unsupported architecture {arch!r}; supported: {SUPPORTED_ARCHITECTURES}"
        )
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in tensor_names:
        # Llama 3.1 stores its scaling as a rope_freqs tensor; running without it is wrong.
        raise ValueError(f"{path}: rope scaling ({scaling}) from GGUF is not supported; "
                         "load the Hugging Face folder instead")

    def need(key: str) -> Any:
        if f"{arch}.{key}" not in meta:
            raise ValueError(f"{path}: GGUF metadata lacks {arch}.{key}")
        return meta[f"{arch}.{key}"]

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = meta.get(f"{arch}.attention.key_length") or meta.get(
        f"{arch}.rope.dimension_count", hidden // heads
    )
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ()))
    return ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(head_dim),
        max_position=int(meta.get(f"{arch}.context_length", 2048)),
        rms_norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in tensor_names,
        bos_token_id=tokenizer.bos_token_id if tokenizer else None,
        eos_token_ids=tokenizer.eos_token_ids if tokenizer else (),
        name=str(meta.get("general.name") or path.stem),
        attention_bias=arch == "qwen2",
        qk_norm=arch == "qwen3",
        pooling=gguf_pooling(path, meta, arch),
    )


def hf_name(path: Path, gguf_name: str) -> str:
    """The Hugging Face name of a llama.cpp tensor; ValueError for one we do not know."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    raise ValueError(f"{path}: unexpected tensor {gguf_name!r} for a llama-family model")


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (interleaved rotary pairs → HF's halves).

    llama.cpp stores rows of each head as (d/2, 2) interleaved; HF stores them as (2, d/2).
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(
        w.shape
    )


def iter_gguf_weights(
    path: Path,
    reader: Any,
    config: ModelConfig,
    arch: str = "llama",
    select: Select | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every tensor of `reader` as `(hf_name, float32 tensor in HF layout)`, or the part
    `(dim, start, stop)` that `select(hf_name)` names; `arch` is the file's
    `general.architecture` (only `llama` stores Q/K rows permuted)."""
    from gguf.quants import dequantize

    permuted = arch == "llama"

    for t in reader.tensors:
        name = hf_name(path, t.name)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists ne0 (in) first
        part = select(name) if select is not None else None
        data = t.data
        if part is not None and part[0] == 0:  # whole heads/rows: the permutation stays inside
            data, shape = data[part[1] : part[2]], (part[2] - part[1], *shape[1:])
        try:
            array = dequantize(data, t.tensor_type).astype(np.float32, copy=False)
            if not array.flags.writeable:  # F32 tensors come back as views of the read-only map
                array = array.copy()
            w = torch.from_numpy(np.ascontiguousarray(array).reshape(shape))
        except Exception as e:
            raise ValueError(f"{path}: cannot dequantise {t.name} ({e})") from e
        if permuted and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = unpermute_rotary(w, w.shape[0] // config.head_dim)
        if part is not None and part[0] == 1:
            w = w[:, part[1] : part[2]].contiguous()
        yield name, w
