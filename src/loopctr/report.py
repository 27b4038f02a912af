"""`loopctr report`: run directories -> a Markdown page with tables and PNG figures.

Runs are grouped by dataset (never mixed in one table: a section per prepared dataset, told apart by its data
fingerprint) and, within one, by label: the run directory's name without its `-s<seed>` suffix. Runs of one label
must differ in their seed only (settings that do not change results, such as threads or the device, aside). Each
section has the leaderboard (mean ± std over seeds, best mean test AUC first), a paired t-test over common seeds
of every row against the top one, the depth and oracle table of looped models (runs with `loopctr evaluate
--depths all`), and figures: the leaderboard with every seed, validation AUC by epoch, AUC by depth.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from loopctr.errors import UserError

# settings that change how a run executes, not what it computes
NOT_RESULT_SETTINGS = {"train.seed", "train.threads", "train.device", "train.tensorboard", "train.checkpoint_every",
                       "train.log_every", "train.eval_batch_size", "data.prefetch"}


@dataclass
class Run:
    path: Path
    label: str
    seed: int
    model: str
    dataset: str  # schema name and data fingerprint
    settings: dict
    metrics: dict
    valid_curve: list = field(default_factory=list)  # (epoch, valid AUC)
    evaluation: dict | None = None  # eval.json, when evaluated by depth


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def find_runs(paths: list) -> list[Path]:
    """Finished run directories (with metrics.json): each path itself, or the runs up to two levels below it."""
    found = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            found.append(path)
            continue
        below = sorted({p.parent for pattern in ("*/metrics.json", "*/*/metrics.json") for p in path.glob(pattern)})
        if not below:
            raise UserError(f"{path}: no finished run (a directory with metrics.json) in or below it")
        found += below
    return list(dict.fromkeys(found))


def load_run(path: Path) -> Run:
    config = yaml.safe_load((path / "config.yaml").read_text())
    schema = json.loads((path / "schema.json").read_text())
    settings = {k: v for k, v in _flatten(config).items() if k not in NOT_RESULT_SETTINGS}
    match = re.fullmatch(r"(.*)-s(\d+)", path.name)
    curve = [(e["epoch"], e["auc"]) for e in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())
             if e.get("event") == "valid"]
    evaluation = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else None
    return Run(path, match.group(1) if match else path.name, int(config["train"]["seed"]), config["model_name"],
               f"{schema['schema']['name']} ({schema['fingerprint']})", settings,
               json.loads((path / "metrics.json").read_text()), curve,
               evaluation if evaluation and "by_depth" in evaluation else None)


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """{dataset: {label: runs in seed order}}. Runs of one name but other settings (two sweeps that both name their
    runs `lightsuan-s1`, one distilled) are two rows, each name followed by the settings it differs in."""
    by_settings: dict[str, dict[tuple, list[Run]]] = {}
    for run in runs:
        key = (run.label, json.dumps(run.settings, sort_keys=True, default=str))
        by_settings.setdefault(run.dataset, {}).setdefault(key, []).append(run)
    groups: dict[str, dict[str, list[Run]]] = {}
    for dataset, keyed in by_settings.items():
        for (label, _), members in keyed.items():
            members.sort(key=lambda r: r.seed)
            seeds = [r.seed for r in members]
            if len(set(seeds)) < len(seeds):
                raise UserError(f"runs '{label}' on {dataset} repeat a seed with the same settings: "
                                + ", ".join(str(r.path) for r in members))
            namesakes = [m[0].settings for (other, _), m in keyed.items() if other == label]
            differ = sorted(k for k in set().union(*namesakes)
                            if len({json.dumps(s.get(k), default=str) for s in namesakes}) > 1)
            shown = lambda v: "''" if v == "" else v  # noqa: E731
            suffix = " [" + ", ".join(f"{k.split('.', 1)[-1]}={shown(members[0].settings.get(k))}"
                                      for k in differ) + "]"
            groups.setdefault(dataset, {})[label + (suffix if differ else "")] = members
    return groups


# -- statistics ----------------------------------------------------------------------------------------
def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return min(max(x, 0.0), 1.0)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    tiny = 1e-300
    clamp = lambda v: v if abs(v) > tiny else tiny  # noqa: E731
    c, d = 1.0, 1.0 / clamp(1.0 - (a + b) * x / (a + 1))
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 / clamp(1.0 + numerator * d)
            c = clamp(1.0 + numerator / c)
            h *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    return front * h / a


def paired_t_test(a, b) -> tuple[float, float]:
    """(mean of a - b, two-sided p-value of the paired t-test); p is nan with fewer than two pairs."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = diff.size
    if n < 2:
        return float(diff.mean()) if n else float("nan"), float("nan")
    sd = diff.std(ddof=1)
    if sd == 0:
        return float(diff.mean()), 0.0 if diff.mean() != 0 else 1.0
    t = diff.mean() / (sd / math.sqrt(n))
    df = n - 1
    return float(diff.mean()), _incomplete_beta(df / 2, 0.5, df / (df + t * t))


# -- tables --------------------------------------------------------------------------------------------
def mean_std(values, digits: int = 4) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else "")


def leaderboard(labels: dict[str, list[Run]]) -> list[tuple[str, list[Run]]]:
    return sorted(labels.items(), key=lambda kv: -np.mean([r.metrics["auc"] for r in kv[1]]))


def leaderboard_table(rows: list[tuple[str, list[Run]]]) -> list[str]:
    lines = ["| label | model | seeds | test AUC | gAUC | logloss | ECE | best epoch / run | dense params | "
             "embedding params | train samples/s | eval samples/s |", "|---" * 12 + "|"]
    for label, runs in rows:
        m = [r.metrics for r in runs]
        gauc = mean_std([x["gauc"] for x in m]) if all("gauc" in x for x in m) else "-"
        ece = mean_std([x["ece"] for x in m]) if all("ece" in x for x in m) else "-"
        lines.append(f"| {label} | {runs[0].model} | {', '.join(str(r.seed) for r in runs)} | "
                     f"{mean_std([x['auc'] for x in m])} | {gauc} | {mean_std([x['logloss'] for x in m])} | {ece} | "
                     + ", ".join(f"{x['best_epoch']}/{x['epochs_run']}" for x in m)
                     + f" | {m[0]['params_dense']:,} | {m[0]['params_embedding']:,} | "
                     f"{np.mean([x['train_samples_per_s'] for x in m]):,.0f} | "
                     f"{np.mean([x['eval_samples_per_s'] for x in m]):,.0f} |")
    return lines


def significance_table(rows: list[tuple[str, list[Run]]]) -> list[str]:
    """Every row against the top one, paired over the seeds both have."""
    if len(rows) < 2:
        return []
    top_label, top = rows[0]
    by_seed = {r.seed: r.metrics["auc"] for r in top}
    lines = [f"Paired over seeds against **{top_label}** (two-sided t-test on test AUC):", "",
             f"| label | common seeds | AUC of {top_label} minus this | p |", "|---|---|---|---|"]
    for label, runs in rows[1:]:
        pairs = [(by_seed[r.seed], r.metrics["auc"]) for r in runs if r.seed in by_seed]
        diff, p = paired_t_test([a for a, _ in pairs], [b for _, b in pairs])
        shown = "-" if math.isnan(diff) else f"{diff:+.4f}"
        lines.append(f"| {label} | {len(pairs)} | {shown} | " + ("-" if math.isnan(p) else f"{p:.3f}") + " |")
    return lines


def depth_table(rows: list[tuple[str, list[Run]]]) -> list[str]:
    looped = [(label, [r for r in runs if r.evaluation]) for label, runs in rows]
    looped = [(label, runs) for label, runs in looped if runs]
    if not looped:
        return []
    depths = sorted({d["depth"] for _, runs in looped for r in runs for d in r.evaluation["by_depth"]})
    lines = ["| label | seeds | " + " | ".join(f"AUC depth {d}" for d in depths) + " | oracle AUC |",
             "|---|---|" + "---|" * (len(depths) + 1)]
    for label, runs in looped:
        cells = []
        for depth in depths:
            values = [x["auc"] for r in runs for x in r.evaluation["by_depth"] if x["depth"] == depth]
            cells.append(mean_std(values) if len(values) == len(runs) else "-")
        oracle = [r.evaluation["oracle"]["auc"] for r in runs if "oracle" in r.evaluation]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + f" | {mean_std(oracle) if oracle else '-'} |")
    return lines


def write_report(paths: list, out: Path) -> str:
    """Write OUT/report.md and its figures; return the Markdown."""
    from loopctr import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs([load_run(p) for p in find_runs(paths)])
    page = ["# Results", ""]
    for i, (dataset, labels) in enumerate(groups.items()):
        rows = leaderboard(labels)
        page += [f"## {dataset}", "", *leaderboard_table(rows), ""]
        page += [*significance_table(rows), ""] if len(rows) > 1 else []
        depths = depth_table(rows)
        page += ["Test AUC by inference depth:", "", *depths, ""] if depths else []
        figures = {f"leaderboard-{i}.png": lambda p: plots.leaderboard_figure(
                       [(label, [r.metrics["auc"] for r in runs]) for label, runs in rows], p, dataset),
                   f"curves-{i}.png": lambda p: plots.curves_figure(
                       [(label, [r.valid_curve for r in runs]) for label, runs in rows], p, dataset)}
        calibrated = [(label, [r.metrics["reliability"] for r in runs]) for label, runs in rows
                      if all("reliability" in r.metrics for r in runs)]
        if calibrated:
            figures[f"calibration-{i}.png"] = lambda p: plots.reliability_figure(calibrated, p, dataset)
        if depths:
            figures[f"depths-{i}.png"] = lambda p: plots.depth_by_label_figure(
                [(label, [r.evaluation["by_depth"] for r in runs if r.evaluation]) for label, runs in rows
                 if any(r.evaluation for r in runs)], p, dataset)
        for name, draw in figures.items():
            draw(out / name)
            page += [f"![{name[:-4]}]({name})", ""]
    text = "\n".join(page)
    (out / "report.md").write_text(text)
    return text
