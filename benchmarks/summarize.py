"""Summarise run directories (each with metrics.json) as a markdown table: mean ± std over seeds.

    python benchmarks/summarize.py RUNS_DIR     # run dirs named <config>-s<seed>
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(root: str):
    groups = defaultdict(list)
    for path in sorted(Path(root).glob("*/metrics.json")):
        groups[re.sub(r"-s\d+$", "", path.parent.name)].append(json.loads(path.read_text()))
    print("| config | seeds | test AUC | gAUC | logloss | NE | best valid AUC | best epoch | dense params | "
          "embedding params | train samples/s | eval samples/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in groups.items():
        col = lambda k: np.array([r[k] for r in runs], dtype=float)  # noqa: E731
        ms = lambda k: f"{col(k).mean():.4f} ± {col(k).std(ddof=1 if len(runs) > 1 else 0):.4f}"  # noqa: E731
        valid = np.array([r["valid"]["auc"] for r in runs])
        print(f"| {name} | {len(runs)} | {ms('auc')} | {ms('gauc')} | {ms('logloss')} | {ms('ne')} | "
              f"{valid.mean():.4f} | {', '.join(str(r['best_epoch']) for r in runs)} | {runs[0]['params_dense']:,} | "
              f"{runs[0]['params_embedding']:,} | {col('train_samples_per_s').mean():,.0f} | "
              f"{col('eval_samples_per_s').mean():,.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
