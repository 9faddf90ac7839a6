"""Load a checkpoint from disk: a Hugging Face safetensors folder or a llama.cpp GGUF file.

`load_checkpoint(path)` reads the config and tokenizer at once and checks every weight file's
header, so a broken checkpoint fails here, not halfway through building the model. The weights
themselves stream lazily: `Checkpoint.weights(select)` yields `(hf_name, tensor)` one at a time,
in Hugging Face names and layout (`model.layers.{i}.self_attn.q_proj.weight`, [out, in]). The
model fuses QKV and gate-up itself and casts to its own dtype. With `select` (a tensor-parallel
rank's `model.shard_slice`), a tensor comes as only the `(dim, start, stop)` part that `select`
names: a safetensors file reads just those bytes (`get_slice`), a GGUF tensor is dequantised
alone and cut (rows before dequantising), so no rank ever holds the whole model.

Errors: a missing path raises ModelNotFoundError; a corrupt or truncated file, a folder without
config.json or weights, or an unsupported architecture raises ValueError naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .config import ModelConfig
from .model_store import ModelNotFoundError
from .pooling_config import folder_pooling, generates
from .tokenizer import Tokenizer

Slice = tuple[int, int, int]  # (dim, start, stop) of a tensor
Select = Callable[[str], Slice | None]  # hf_name -> the part to read; None = all of it
WeightStream = Callable[[Select | None], Iterator[tuple[str, torch.Tensor]]]

# model_type values whose HF checkpoints our decoder runs (Qwen via ModelConfig's flags).
SUPPORTED_HF_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class Checkpoint:
    """What the engine needs from a checkpoint; `weights(select=None)` may be called more than
    once."""

    config: ModelConfig
    tokenizer: Tokenizer | None
    weights: WeightStream


def load_checkpoint(path: str | Path, need_weights: bool = True) -> Checkpoint:
    """Open a GGUF file or an HF folder (see the module docstring for errors). With
    `need_weights` False an HF folder may hold only config and tokenizer files (for random
    weights: `load_format="dummy"`); its `weights()` then yields nothing."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(
            f"model {str(path)!r} not found; run `kvmesh models pull` for the default model"
        )
    if p.is_dir():
        return _load_hf_folder(p, need_weights)
    return _load_gguf(p)


def _load_gguf(path: Path) -> Checkpoint:
    from .gguf_loader import gguf_config, iter_gguf_weights, metadata_of, open_gguf

    reader = open_gguf(path)
    meta = metadata_of(reader)
    tokenizer = Tokenizer.from_gguf_metadata(meta) if "tokenizer.ggml.model" in meta else None
    names = {t.name for t in reader.tensors}
    config = gguf_config(path, meta, names, tokenizer)
    arch = str(meta["general.architecture"])
    return Checkpoint(config, tokenizer,
                      lambda select=None: iter_gguf_weights(path, reader, config, arch, select))


def _load_hf_folder(folder: Path, need_weights: bool = True) -> Checkpoint:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from e
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_HF_MODEL_TYPES:
        raise ValueError(
            f"{cfg_path}: unsupported model_type {model_type!r}; "
            f"supported: {SUPPORTED_HF_MODEL_TYPES}"
        )
    try:
        config = ModelConfig.from_hf(cfg, name=folder.name)
    except KeyError as e:
        raise ValueError(f"{cfg_path}: missing field {e}") from e
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from e
    config = replace(config, pooling=folder_pooling(folder), generates=generates(cfg))
    tokenizer = Tokenizer.from_hf_folder(folder) if (folder / "tokenizer.json").is_file() else None
    if tokenizer is not None:
        config = _with_eos(config, tokenizer)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards and need_weights:
        raise ValueError(f"{folder}: no *.safetensors weights")
    for shard in shards:
        _check_safetensors(shard)
    return Checkpoint(config, tokenizer, lambda select=None: _iter_safetensors(shards, select))


def _with_eos(config: ModelConfig, tokenizer: Tokenizer) -> ModelConfig:
    """config.json's eos plus the tokenizer's (generation_config.json, the turn-end token)."""
    eos = tuple(dict.fromkeys(config.eos_token_ids + tokenizer.eos_token_ids))
    return replace(config, eos_token_ids=eos)


def _check_safetensors(shard: Path) -> None:
    """Parse the header (cheap): catches garbage and truncated files before any weight loads."""
    from safetensors import safe_open

    try:
        with safe_open(str(shard), framework="pt") as f:
            f.keys()
    except Exception as e:  # SafetensorError, OSError: both mean an unusable file
        raise ValueError(
            f"{shard}: not a valid safetensors file, corrupt or truncated ({e})"
        ) from e


def _iter_safetensors(shards: list[Path],
                      select: Select | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every shard, in file order, or the part `select` names; rotary caches
    of old checkpoints skipped."""
    from safetensors import safe_open

    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if name.endswith("rotary_emb.inv_freq"):
                        continue
                    part = select(name) if select is not None else None
                    if part is None:
                        yield name, f.get_tensor(name)
                        continue
                    dim, start, stop = part
                    index = [slice(None)] * (dim + 1)
                    index[dim] = slice(start, stop)
                    yield name, f.get_slice(name)[tuple(index)]
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"{shard}: cannot read tensors ({e})") from e
