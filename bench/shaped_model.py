"""A model folder of any shape with a real tokenizer, for `load_format="dummy"` serving: the
config of a preset (`inference/engine/presets.py`) or of the default model, and the default
model's tokenizer (exported from its GGUF). No weights: the engine draws random ones.

    python bench/shaped_model.py llama-3.1-8b /tmp/llama-8b-shaped
    python bench/shaped_model.py smollm2 /tmp/smollm2-shaped
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inference.engine.config import ModelConfig
from inference.engine.loader import load_checkpoint
from inference.engine.model_store import resolve_model
from inference.engine.presets import preset_config


def make(shape: str, folder: Path) -> Path:
    """Write `config.json` (the shape) and the default model's tokenizer into `folder`."""
    default = load_checkpoint(resolve_model(None), need_weights=False)
    cfg: ModelConfig = default.config if shape == "smollm2" else preset_config(shape)
    assert default.tokenizer is not None
    default.tokenizer.save_hf_folder(folder)
    hf = {"model_type": cfg.hf_model_type, **cfg.to_hf(),
          "bos_token_id": default.config.bos_token_id,
          "eos_token_id": list(default.config.eos_token_ids)}
    (folder / "config.json").write_text(json.dumps(hf, indent=1), encoding="utf-8")
    return folder


if __name__ == "__main__":
    print(make(sys.argv[1], Path(sys.argv[2])))
