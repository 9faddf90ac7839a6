"""Fetch the wheels a GPU device machine lacks into `.whl`, for `bench/gpu_session.sh`.

    python bench/device_wheels.py [--into .whl]

The device machine has Python 3.12 on x86_64 with PyTorch, Triton and transformers (and what
they pull in) but nothing else, and reaches no index. This resolves kvmesh's runtime
dependencies and what `tests/gpu` and the benches import for that platform (`pip install
--dry-run --report`, binary wheels only) and downloads every wheel the device does not already
have. `gpu_session.sh` installs them there with `pip --no-index`; carry `.whl` with the call
(about 31 MB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what tests/gpu and the benches need beyond the runtime dependencies
EXTRA = ["pytest", "pytest-asyncio", "pytest-timeout", "jsonschema", "py-spy"]
# on the device already (PyTorch's, Triton's and transformers' own dependencies)
PRESENT = {"torch", "triton", "transformers", "numpy", "tokenizers", "jinja2", "markupsafe",
           "safetensors", "huggingface-hub", "hf-xet", "packaging", "pyyaml", "requests",
           "setuptools", "tqdm", "certifi", "charset-normalizer", "click", "filelock",
           "fsspec", "idna", "urllib3"}
PLATFORMS = ["manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]


def requirements() -> list[str]:
    """kvmesh's runtime dependencies (pyproject.toml) and `EXTRA`, less what the device has."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    keep = [d for d in deps if requirement_name(d) not in PRESENT]
    return keep + EXTRA


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement string, normalised (`Jinja2[x]>=3` -> `jinja2`)."""
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def resolve(reqs: list[str]) -> list[tuple[str, str]]:
    """(name, wheel URL) of every wheel pip would install for the device's platform."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
               "--ignore-installed", "--report", str(report), "--target", str(Path(tmp, "t")),
               "--python-version", "3.12", "--implementation", "cp",
               "--only-binary=:all:"]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        subprocess.run(cmd + reqs, check=True)
        items = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"].lower().replace("_", "-"), i["download_info"]["url"])
            for i in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--into", type=Path, default=ROOT / ".whl")
    args = ap.parse_args()
    args.into.mkdir(parents=True, exist_ok=True)
    wanted = [url for name, url in resolve(requirements()) if name not in PRESENT]
    for url in wanted:
        dest = args.into / url.rsplit("/", 1)[1]
        if not dest.exists():
            urllib.request.urlretrieve(url, dest)
    size = sum(f.stat().st_size for f in args.into.glob("*.whl"))
    print(f"{len(wanted)} wheels in {args.into} ({size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
