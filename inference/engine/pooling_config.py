"""What a checkpoint declares about embeddings: its pooling, and whether it generates at all.

- A sentence-transformers folder (`modules.json` listing a `Pooling` module, as e5-mistral,
  gte-Qwen2 and Qwen3-Embedding ship) declares `last` (`pooling_mode_lasttoken`) or `mean`
  (`pooling_mode_mean_tokens`) in the module's `config.json`.
- A GGUF declares it in `{arch}.pooling_type` (llama.cpp's enum: 1 mean, 3 last).
- An HF folder whose `architectures` has no `*ForCausalLM` (`LlamaModel`, `Qwen2Model`,
  `MistralModel`) is an embedding model: it has no LM head and does not generate.

Any other declared pooling (CLS, weighted mean, ...) is a ValueError naming the file: this
engine's decoders pool `last` or `mean` only, and a silently different pooling would answer
wrong vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ST_MODES = {"pooling_mode_lasttoken": "last", "pooling_mode_mean_tokens": "mean"}
GGUF_POOLING = {0: None, 1: "mean", 3: "last"}  # llama.cpp's LLAMA_POOLING_TYPE_*


def folder_pooling(folder: Path) -> str | None:
    """The pooling a sentence-transformers folder declares, or None when it declares none."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    try:
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
        pooling = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
        if pooling is None:
            return None
        cfg_path = folder / pooling.get("path", "") / "config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{modules_path}: unreadable sentence-transformers modules ({e})") from e
    on = [mode for key, mode in ST_MODES.items() if cfg.get(key)]
    others = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in ST_MODES]
    if len(on) != 1 or others:
        raise ValueError(f"{cfg_path}: pooling {on + others} is not supported; this engine "
                         "pools last or mean")
    return on[0]


def gguf_pooling(path: Path, meta: dict[str, Any], arch: str) -> str | None:
    value = meta.get(f"{arch}.pooling_type")
    if value is None:
        return None
    if int(value) not in GGUF_POOLING:
        raise ValueError(f"{path}: {arch}.pooling_type {value} is not supported; this engine "
                         "pools last (3) or mean (1)")
    return GGUF_POOLING[int(value)]


def generates(hf_config: dict[str, Any]) -> bool:
    """Whether an HF config's model has an LM head (no `architectures`: assume it does)."""
    archs = hf_config.get("architectures") or []
    return not archs or any(str(a).endswith("ForCausalLM") for a in archs)
