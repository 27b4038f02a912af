"""Summarise run directories (each with metrics.json) as a markdown table: mean ± std over seeds, best mean
test AUC first.

    python benchmarks/summarize.py RUNS_DIR     # run dirs named <config>-s<seed>

Runs evaluated by depth (`loopctr evaluate --run R --depths all`, which writes R/eval.json) get a second
table: test AUC at every depth, the oracle AUC (best depth per sample) and its headroom over depth 1.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f}" + (f" ± {v.std(ddof=1):.4f}" if v.size > 1 else "")


def depth_table(root: str) -> list[str]:
    groups = defaultdict(list)
    for path in sorted(Path(root).glob("*/eval.json")):
        report = json.loads(path.read_text())
        if "by_depth" in report:
            groups[re.sub(r"-s\d+$", "", path.parent.name)].append(report)
    if not groups:
        return []
    depths = sorted({d["depth"] for runs in groups.values() for r in runs for d in r["by_depth"]})
    lines = ["| config | seeds | " + " | ".join(f"AUC depth {d}" for d in depths)
             + " | oracle AUC | headroom over depth 1 | best-depth share |",
             "|---|---|" + "---|" * (len(depths) + 3)]
    for name, runs in groups.items():
        cells = []
        for d in depths:
            values = [x["auc"] for r in runs for x in r["by_depth"] if x["depth"] == d]
            cells.append(mean_std(values) if len(values) == len(runs) else "-")
        share = np.mean([r["oracle"]["depth_share"] for r in runs], axis=0)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells)
                     + f" | {mean_std([r['oracle']['auc'] for r in runs])}"
                     + f" | {mean_std([r['oracle']['headroom_auc'] for r in runs])} | "
                     + " / ".join(f"{s:.2f}" for s in share) + " |")
    return lines


def main(root: str):
    groups = defaultdict(list)
    for path in sorted(Path(root).glob("*/metrics.json")):
        groups[re.sub(r"-s\d+$", "", path.parent.name)].append(json.loads(path.read_text()))
    print("| config | seeds | test AUC | gAUC | logloss | NE | best valid AUC | best epoch | dense params | "
          "embedding params | train samples/s | eval samples/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in sorted(groups.items(), key=lambda g: -np.mean([r["auc"] for r in g[1]])):  # best first
        col = lambda k: np.array([r[k] for r in runs], dtype=float)  # noqa: E731
        ms = lambda k: mean_std(col(k)) if all(k in r for r in runs) else "-"  # noqa: E731  (gAUC needs a group)
        valid = np.array([r["valid"]["auc"] for r in runs])
        print(f"| {name} | {len(runs)} | {ms('auc')} | {ms('gauc')} | {ms('logloss')} | {ms('ne')} | "
              f"{valid.mean():.4f} | {', '.join(str(r['best_epoch']) for r in runs)} | {runs[0]['params_dense']:,} | "
              f"{runs[0]['params_embedding']:,} | {col('train_samples_per_s').mean():,.0f} | "
              f"{col('eval_samples_per_s').mean():,.0f} |")
    lines = depth_table(root)
    if lines:
        print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
