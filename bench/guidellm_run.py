"""Load test of `kvmesh up` with guidellm at several constant request rates.

    python -m bench.guidellm_run [--rates 0.5,1,2] [--seconds 45] [--requests 30]
        [--prompt-tokens 64] [--output-tokens 32] [--guidellm PATH] [--out DIR]

Starts `kvmesh up` on free ports (own state dir), exports the model's tokenizer into a temp
folder (tokenizer.json + tokenizer_config.json) so guidellm builds its synthetic prompts
without a hub, runs `guidellm run` with a scenario file (constant profile, one benchmark per
rate, each bounded by seconds and requests), prints a table of TTFT / ITL / end-to-end latency
P50/P99 and throughput per rate (JSON report kept under --out), and stops the mesh.

guidellm is not a dependency of kvmesh: install it where it cannot disturb the project's
packages, e.g. `python -m venv --system-site-packages /tmp/gllm && /tmp/gllm/bin/pip install
guidellm`, then pass `--guidellm /tmp/gllm/bin/guidellm` (default: `guidellm` on PATH).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvmesh.cli import procs

ROOT = Path(__file__).resolve().parent.parent


def export_tokenizer(dest: Path) -> str:
    """Write the default model's tokenizer as an HF folder guidellm can load; return the
    served model name."""
    from inference.engine.loader import load_checkpoint
    from inference.engine.model_store import DEFAULT_MODEL_NAME, resolve_model

    tok = load_checkpoint(resolve_model(None)).tokenizer
    dest.mkdir(parents=True, exist_ok=True)
    tok._tok.save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192,
        "bos_token": tok.bos_token or None, "eos_token": tok.eos_token or None,
        "chat_template": tok.chat_template}))
    return DEFAULT_MODEL_NAME


def start_mesh(state: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`kvmesh up` on free ports; returns (process, base URL, dev API key)."""
    port = procs.free_port()
    argv = [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(port),
            "--nats-port", str(procs.free_port()), "--redis-port", str(procs.free_port()),
            "--metrics-port", str(procs.free_port()), "--state-dir", str(state),
            "--workers", "1"]
    up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=ROOT, start_new_session=True)
    banner, deadline = "", time.monotonic() + 300
    assert up.stdout is not None
    while "Ctrl-C stops everything" not in banner:
        line = up.stdout.readline()
        if (not line and up.poll() is not None) or time.monotonic() > deadline:
            procs._signal_group(up.pid, signal.SIGKILL)
            raise RuntimeError(f"kvmesh up did not come up:\n{banner}")
        banner += line
    key = next(ln.split(": ")[-1].strip() for ln in banner.splitlines() if "API key" in ln)
    return up, f"http://127.0.0.1:{port}", key


def stop_mesh(up: subprocess.Popen[str]) -> None:
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=20)
    except subprocess.TimeoutExpired:
        procs._signal_group(up.pid, signal.SIGKILL)
        up.wait(5)


def scenario(args: argparse.Namespace, url: str, key: str, model: str, tok_dir: Path,
             report: Path) -> dict[str, Any]:
    return {
        "metadata": {"name": "kvmesh-constant",
                     "description": "kvmesh up under constant request rates"},
        "spec": {
            "backend": {"kind": "openai_http", "target": url, "model": model, "api_key": key,
                        "request_format": "/v1/chat/completions", "timeout": 300,
                        "http2": False},
            "profile": {"kind": "constant", "rate": [args.rates[0]]},
            "tokenizer": {"kind": "huggingface_auto", "model": str(tok_dir)},
            "data": [{"kind": "synthetic_text", "prompt_tokens": args.prompt_tokens,
                      "output_tokens": args.output_tokens}],
            "constraints": [{"kind": "max_duration", "seconds": args.seconds},
                            {"kind": "max_requests", "count": args.requests}],
            "outputs": [{"kind": "json", "path": str(report)}, {"kind": "console"}],
        },
        "benchmarks": [{"profile.rate": [r]} for r in args.rates],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                   default=[0.5, 1.0, 2.0])
    p.add_argument("--seconds", type=float, default=45)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=32)
    p.add_argument("--guidellm", default=shutil.which("guidellm") or "guidellm")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="kvmesh-guidellm-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    report = out / "guidellm.json"
    model = export_tokenizer(work / "tokenizer")
    up, url, key = start_mesh(work / "state")
    try:
        spec = scenario(args, url, key, model, work / "tokenizer", report)
        (work / "scenario.json").write_text(json.dumps(spec, indent=1))
        cmd = [args.guidellm, "run", "--scenario", str(work / "scenario.json"),
               "--disable-console-interactive"]
        print("+", " ".join(cmd), flush=True)
        started = time.monotonic()
        rc = subprocess.run(cmd, cwd=work).returncode
        print(f"guidellm finished with {rc} in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        stop_mesh(up)
    if rc != 0 or not report.exists():
        return rc or 1
    print(table(json.loads(report.read_text())))
    print(f"report: {report}")
    return 0


def table(report: dict[str, Any]) -> str:
    """Markdown rows from guidellm's JSON report: one per benchmark (rate)."""
    rows = ["| rate (req/s) | requests ok / err / cut | TTFT P50 / P99 (ms) "
            "| ITL P50 / P99 (ms) | latency P50 / P99 (s) | output tok/s | req/s |",
            "|---|---|---|---|---|---|---|"]
    for b in report.get("benchmarks", []):
        m = b["metrics"]

        def pct(name: str, m: dict[str, Any] = m) -> tuple[float, float]:
            pcts = m[name]["successful"]["percentiles"]
            return pcts["p50"], pcts["p99"]

        rate = b["config"]["strategy"].get("rate", "?")
        totals = m["request_totals"]
        t50, t99 = pct("time_to_first_token_ms")
        i50, i99 = pct("inter_token_latency_ms")
        l50, l99 = pct("request_latency")
        tok_s = m["output_tokens_per_second"]["successful"]["mean"]
        req_s = m["requests_per_second"]["successful"]["mean"]
        rows.append(f"| {rate} | {totals['successful']} / {totals['errored']} / "
                    f"{totals['incomplete']} | {t50:.0f} / {t99:.0f} | {i50:.0f} / {i99:.0f} "
                    f"| {l50:.1f} / {l99:.1f} | {tok_s:.1f} | {req_s:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
