"""Draw each Grafana dashboard (deploy/grafana/dashboards/*.json) as a PNG from a Prometheus's
query API, with matplotlib (`pip install -e .[docs]`), where no browser can render Grafana:

    python scripts/render_dashboards.py --prometheus http://127.0.0.1:9090 --minutes 15

Each panel's queries are run as Grafana would run them (`$__rate_interval` becomes
`--rate-interval`), over the last `--minutes`, and drawn in the dashboard's layout, two panels
to a row, with the panel's legend format. docs/OBSERVABILITY.md shows the result of a real run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"percentunit": ("%", 100.0), "s": ("s", 1.0), "reqps": ("req/s", 1.0)}


def query_range(prom: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    args = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{args}", timeout=30) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def draw(board: dict[str, Any], prom: str, minutes: float, rate: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = board["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.0 * rows), squeeze=False)
    end = time.time()
    start = end - 60 * minutes
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit, scale = UNITS.get(panel["fieldConfig"]["defaults"]["unit"], ("", 1.0))
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate)
            for series in query_range(prom, expr, start, end, max(5.0, minutes * 2)):
                xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                ys = [float(v) * scale for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]))
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("minutes before now", fontsize=8)
    fig.suptitle(f"{board['title']}  (Grafana dashboard {board['uid']}, drawn from "
                 f"Prometheus)", fontsize=12, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prometheus", default="http://127.0.0.1:9090")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--rate-interval", default="1m")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        out = args.out / f"dashboard-{board['uid']}.png"
        draw(board, args.prometheus, args.minutes, args.rate_interval, out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
