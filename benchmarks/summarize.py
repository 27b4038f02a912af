"""Summarise run directories (each with metrics.json) as a markdown table: mean ± std over seeds, best mean
test AUC first.

    python benchmarks/summarize.py RUNS_DIR     # run dirs named <config>-s<seed>

Runs evaluated by depth (`loopctr evaluate --run R --depths all`, which writes R/eval.json) get a second
table: test AUC at every depth, the oracle AUC (best depth per sample) and its headroom over depth 1.
Runs evaluated with `--cold FIELD:N` get a table of the cold and warm rows' test AUC.
Each table is followed by its per-seed values (test AUC; oracle headroom), in seed order, and the runs whose best
epoch was the budget's last (still improving when the budget stopped them: `--resume epochs=N` continues them).
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


def config_and_seed(run_dir: Path) -> tuple[str, int]:
    """A run dir named <config>-s<seed>; any other name is a config of its own, seed 0."""
    match = re.fullmatch(r"(.*)-s(\d+)", run_dir.name)
    return (match.group(1), int(match.group(2))) if match else (run_dir.name, 0)


def load_groups(root: str, filename: str) -> dict[str, list[tuple[int, dict]]]:
    """{config: [(seed, parsed file), ...] in seed order}."""
    groups = defaultdict(list)
    for path in sorted(Path(root).glob(f"*/{filename}"), key=lambda p: config_and_seed(p.parent)[1]):
        config, seed = config_and_seed(path.parent)
        groups[config].append((seed, json.loads(path.read_text())))
    return groups


def per_seed(title: str, groups: dict, value) -> list[str]:
    return [f"{title}, each seed:"] + [
        f"- {name}: " + " / ".join(f"{value(r):.4f}" for _, r in runs) + f" (seeds {', '.join(str(s) for s, _ in runs)})"
        for name, runs in groups.items()]


def depth_table(root: str) -> list[str]:
    groups = {name: kept for name, runs in load_groups(root, "eval.json").items()
              if (kept := [(s, r) for s, r in runs if "by_depth" in r])}
    if not groups:
        return []
    depths = sorted({d["depth"] for runs in groups.values() for _, r in runs for d in r["by_depth"]})
    lines = ["| config | seeds | " + " | ".join(f"AUC depth {d}" for d in depths)
             + " | oracle AUC | headroom over depth 1 | best-depth share |",
             "|---|---|" + "---|" * (len(depths) + 3)]
    for name, seeded in groups.items():
        runs = [r for _, r in seeded]
        cells = []
        for d in depths:
            values = [x["auc"] for r in runs for x in r["by_depth"] if x["depth"] == d]
            cells.append(mean_std(values) if len(values) == len(runs) else "-")
        share = np.mean([r["oracle"]["depth_share"] for r in runs], axis=0)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells)
                     + f" | {mean_std([r['oracle']['auc'] for r in runs])}"
                     + f" | {mean_std([r['oracle']['headroom_auc'] for r in runs])} | "
                     + " / ".join(f"{s:.2f}" for s in share) + " |")
    return lines + [""] + per_seed("Oracle headroom over depth 1", groups, lambda r: r["oracle"]["headroom_auc"])


def slice_table(root: str) -> list[str]:
    groups = {name: kept for name, runs in load_groups(root, "eval.json").items()
              if (kept := [(s, r) for s, r in runs if "slices" in r])}
    if not groups:
        return []
    rule = next(iter(groups.values()))[0][1]["slices"]["cold"]["rule"]
    lines = [f"Cold rows: {rule}.", "", "| config | seeds | test AUC, all rows | cold rows | cold AUC | cold logloss "
             "| warm AUC |", "|---|---|---|---|---|---|---|"]
    for name, seeded in groups.items():
        runs = [r for _, r in seeded]
        lines.append(f"| {name} | {len(runs)} | {mean_std([r['auc'] for r in runs])} | "
                     f"{runs[0]['slices']['cold']['rows']:,} | {mean_std([r['slices']['cold']['auc'] for r in runs])} | "
                     f"{mean_std([r['slices']['cold']['logloss'] for r in runs])} | "
                     f"{mean_std([r['slices']['warm']['auc'] for r in runs])} |")
    return lines + [""] + per_seed("Cold-row test AUC", groups, lambda r: r["slices"]["cold"]["auc"])


def main(root: str):
    seeded = load_groups(root, "metrics.json")
    seeded = dict(sorted(seeded.items(), key=lambda g: -np.mean([r["auc"] for _, r in g[1]])))  # best first
    print("| config | seeds | test AUC | gAUC | logloss | NE | best valid AUC | best epoch / epochs run | dense params | "
          "embedding params | train samples/s | eval samples/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs_with_seeds in seeded.items():
        runs = [r for _, r in runs_with_seeds]
        col = lambda k: np.array([r[k] for r in runs], dtype=float)  # noqa: E731
        ms = lambda k: mean_std(col(k)) if all(k in r for r in runs) else "-"  # noqa: E731  (gAUC needs a group)
        valid = np.array([r["valid"]["auc"] for r in runs])
        epochs = ", ".join(f"{r['best_epoch']} / {r['epochs_run']}" for r in runs)
        print(f"| {name} | {len(runs)} | {ms('auc')} | {ms('gauc')} | {ms('logloss')} | {ms('ne')} | "
              f"{valid.mean():.4f} | {epochs} | {runs[0]['params_dense']:,} | "
              f"{runs[0]['params_embedding']:,} | {col('train_samples_per_s').mean():,.0f} | "
              f"{col('eval_samples_per_s').mean():,.0f} |")
    print("\n" + "\n".join(per_seed("Test AUC", seeded, lambda r: r["auc"])))
    # a run whose last epoch was its best cannot have been stopped by patience
    at_budget = {name: [str(s) for s, r in runs if r["best_epoch"] == r["epochs_run"]] for name, runs in seeded.items()}
    if any(at_budget.values()):
        print("\nStill improving at the budget's last epoch: "
              + "; ".join(f"{name} seeds {', '.join(seeds)}" for name, seeds in at_budget.items() if seeds))
    for lines in (depth_table(root), slice_table(root)):
        if lines:
            print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
