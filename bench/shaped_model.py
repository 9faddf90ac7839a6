"""A model folder of any shape with a real tokenizer, for `load_format="dummy"` serving: the
config of a preset (`inference/engine/presets.py`) or of the default model, and the default
model's tokenizer (exported from its GGUF). No weights: the engine draws random ones.

    python bench/shaped_model.py llama-3.1-8b /tmp/llama-8b-shaped
    python bench/shaped_model.py smollm2 /tmp/smollm2-shaped
    python bench/shaped_model.py smollm2 /tmp/two/SmolLM2-135M-Instruct --layers 2

`--layers N` keeps N decoder layers (a short engine step, for timing what is around it:
bench/mesh_overhead.py). The folder's name is the name the mesh serves it under.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from inference.engine.config import ModelConfig
from inference.engine.loader import load_checkpoint
from inference.engine.model_store import resolve_model
from inference.engine.presets import preset_config


def make(shape: str, folder: Path, layers: int = 0) -> Path:
    """Write `config.json` (the shape, with `layers` decoder layers when given) and the default
    model's tokenizer into `folder`."""
    default = load_checkpoint(resolve_model(None), need_weights=False)
    cfg: ModelConfig = default.config if shape == "smollm2" else preset_config(shape)
    if layers:
        cfg = dataclasses.replace(cfg, num_layers=layers)
    assert default.tokenizer is not None
    default.tokenizer.save_hf_folder(folder)
    hf = {"model_type": cfg.hf_model_type, **cfg.to_hf(),
          "bos_token_id": default.config.bos_token_id,
          "eos_token_id": list(default.config.eos_token_ids)}
    (folder / "config.json").write_text(json.dumps(hf, indent=1), encoding="utf-8")
    return folder


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", help="smollm2, or a preset (inference/engine/presets.py)")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--layers", type=int, default=0, help="decoder layers; 0 = the shape's")
    args = ap.parse_args()
    print(make(args.shape, args.folder, args.layers))
