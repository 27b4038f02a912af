"""`loopctr report`: run directories and results files -> a Markdown page with tables and PNG figures.

Runs are grouped by dataset (never mixed in one table: a section per prepared dataset, told apart by its data
fingerprint) and, within one, by label: the run directory's name without its `-s<seed>` suffix (a results row
names its own dataset and label). Runs of one label must differ in their seed only (settings that do not change
results, such as threads or the device, aside). Each section has the leaderboard (mean ± std over seeds, best mean
test AUC first), a paired t-test over common seeds of every row against the top one, the depth and oracle table of
looped models (runs with `loopctr evaluate --depths all`), the cold and warm rows' metrics (runs with `loopctr
evaluate --cold`), and figures: the leaderboard with every seed, validation AUC by epoch, AUC by depth.

A results file (`.jsonl`) holds runs as rows, one JSON object a line: `dataset`, `label`, `model`, `seed` and
`metrics` (at least the test `auc`), and where known `settings`, `machine`, `date`, `valid_curve` and
`evaluation`. `write_results` writes run directories as such rows: metrics and settings only, no data, so that
results can be kept where the data may not be.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from loopctr.atomic import atomic_write_text
from loopctr.errors import UserError

# settings that change how a run executes, not what it computes (the data is told apart by its fingerprint, not
# by where it lies)
NOT_RESULT_SETTINGS = {"train.seed", "train.threads", "train.device", "train.tensorboard", "train.checkpoint_every",
                       "train.log_every", "train.eval_batch_size", "data.prefetch", "data_dir"}
# a results row: its fields with their JSON types; the first five are required
ROW_FIELDS = {"dataset": str, "label": str, "model": str, "seed": int, "metrics": dict, "settings": dict,
              "machine": str, "date": str, "valid_curve": list, "evaluation": dict}
REQUIRED_ROW_FIELDS = list(ROW_FIELDS)[:5]
JSON_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list"}
# the metrics the tables read, numbers wherever a row has them
TABLE_METRICS = ("auc", "gauc", "logloss", "ece", "best_valid_auc", "best_epoch", "epochs_run", "params_dense",
                 "params_embedding", "train_samples_per_s", "eval_samples_per_s")


@dataclass
class Run:
    path: Path
    label: str
    seed: int
    model: str
    dataset: str  # a run directory's schema name and data fingerprint; a results row's own name
    settings: dict
    metrics: dict
    valid_curve: list = field(default_factory=list)  # (epoch, valid AUC)
    evaluation: dict | None = None  # eval.json, when evaluated (by depth, or on cold and warm rows)
    machine: str = ""  # where it ran, when known
    date: str = ""  # when it finished (YYYY-MM-DD), when known


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


def evaluated(run: Run, part: str) -> bool:
    """Whether the run's evaluation has that part: `by_depth` (`loopctr evaluate --depths`), `slices` (`--cold`)."""
    return bool(run.evaluation) and part in run.evaluation


def load_run(path: Path) -> Run:
    config = yaml.safe_load((path / "config.yaml").read_text())
    schema = json.loads((path / "schema.json").read_text())
    settings = {k: v for k, v in _flatten(config).items() if k not in NOT_RESULT_SETTINGS}
    match = re.fullmatch(r"(.*)-s(\d+)", path.name)
    curve = [(e["epoch"], e["auc"]) for e in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())
             if e.get("event") == "valid"]
    evaluation = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else None
    metrics = json.loads((path / "metrics.json").read_text())
    if "auc" in metrics.get("valid", {}):
        metrics["best_valid_auc"] = metrics["valid"]["auc"]  # the validation metrics are those of the best epoch
    finished = datetime.fromtimestamp((path / "metrics.json").stat().st_mtime, timezone.utc)
    return Run(path, match.group(1) if match else path.name, int(config["train"]["seed"]), config["model_name"],
               f"{schema['schema']['name']} ({schema['fingerprint']})", settings, metrics, curve, evaluation,
               date=finished.date().isoformat())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row_problem(row) -> str | None:
    """What is wrong with a results row, or None."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [key for key in REQUIRED_ROW_FIELDS if key not in row]
    if missing:
        return "a results row needs " + ", ".join(missing)
    unknown = sorted(set(row) - set(ROW_FIELDS))
    if unknown:
        return f"unknown field {unknown[0]} (a results row has {', '.join(ROW_FIELDS)})"
    for key, kind in ROW_FIELDS.items():
        if key in row and (not isinstance(row[key], kind) or isinstance(row[key], bool)):
            return f"{key} must be {JSON_TYPE_NAMES[kind]}"
    metrics = row["metrics"]
    if "auc" not in metrics:
        return "metrics need the test auc"
    not_numbers = [key for key in TABLE_METRICS if key in metrics and not _is_number(metrics[key])]
    if not_numbers:
        return f"metrics.{not_numbers[0]} must be a number"
    if not isinstance(metrics.get("reliability", []), list) or not all(
            isinstance(b, dict) and all(_is_number(b.get(key)) for key in ("lower", "count", "mean_pred", "mean_label"))
            for b in metrics.get("reliability", [])):
        return "metrics.reliability must be a list of bins with their lower, count, mean_pred and mean_label"
    if not all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p)) for p in row.get("valid_curve", [])):
        return "valid_curve must be a list of [epoch, valid AUC] pairs"
    evaluation = row.get("evaluation", {})
    by_depth, oracle = evaluation.get("by_depth", []), evaluation.get("oracle", {"auc": 0})
    if not isinstance(by_depth, list) or not all(
            isinstance(d, dict) and _is_number(d.get("depth")) and _is_number(d.get("auc")) for d in by_depth):
        return "evaluation.by_depth must be a list of objects with a depth and an auc"
    if not isinstance(oracle, dict) or not _is_number(oracle.get("auc")):
        return "evaluation.oracle must be an object with an auc"
    slices = evaluation.get("slices", {})
    if not isinstance(slices, dict) or not all(isinstance(part, dict) and all(
            _is_number(part.get(key)) for key in ("rows", "auc", "logloss")) for part in slices.values()):
        return "evaluation.slices must map each slice to an object with its rows, auc and logloss"
    return None


def read_results(path: Path) -> list[Run]:
    """The runs of a results file, one row a line (blank lines skipped)."""
    if not path.is_file():
        raise UserError(f"{path}: no such results file")
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        problem = _row_problem(row)
        if problem:
            raise UserError(f"{path}:{number}: {problem}")
        runs.append(Run(Path(f"{path}:{number}"), row["label"], row["seed"], row["model"], row["dataset"],
                        row.get("settings", {}), row["metrics"], [tuple(p) for p in row.get("valid_curve", [])],
                        row.get("evaluation"), row.get("machine", ""), row.get("date", "")))
    if not runs:
        raise UserError(f"{path}: no results rows in it")
    return runs


def load_runs(paths: list) -> list[Run]:
    """The runs of every path: a results file (`.jsonl`), a run directory, or a directory with runs below it."""
    results = [Path(p) for p in paths if str(p).endswith(".jsonl")]
    directories = [p for p in paths if not str(p).endswith(".jsonl")]
    return [load_run(p) for p in find_runs(directories)] + [run for path in results for run in read_results(path)]


def result_row(run: Run) -> dict:
    """A run as a results row (the inverse of `read_results`)."""
    row = {"dataset": run.dataset, "label": run.label, "model": run.model, "seed": run.seed,
           "settings": run.settings, "metrics": run.metrics}
    known = {"machine": run.machine, "date": run.date, "valid_curve": run.valid_curve, "evaluation": run.evaluation}
    return row | {key: value for key, value in known.items() if value}


def write_results(runs: list[Run], path: Path) -> None:
    """Write runs as a results file, one row a line."""
    atomic_write_text(Path(path), "".join(json.dumps(result_row(run), default=str) + "\n" for run in runs))


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


def _mean_of(key: str, digits: int = 4):
    """A table cell: the mean ± std of a metric over the seeds, when every seed has it."""
    return lambda metrics: mean_std([m[key] for m in metrics], digits) if all(key in m for m in metrics) else None


def _epochs(metrics: list[dict]) -> str | None:
    if not all("best_epoch" in m for m in metrics):
        return None
    return ", ".join(f"{m['best_epoch']}/{m['epochs_run']}" if "epochs_run" in m else f"{m['best_epoch']}"
                     for m in metrics)


def _first(key: str):
    return lambda metrics: f"{metrics[0][key]:,}" if key in metrics[0] else None


def _rate(key: str):
    return lambda metrics: f"{np.mean([m[key] for m in metrics]):,.0f}" if all(key in m for m in metrics) else None


# the leaderboard's columns after label, model and seeds: (header, cell from the seeds' metrics, None if unknown);
# a column that no row knows is left out, so that results rows with a few metrics give a narrow table
LEADERBOARD_COLUMNS = [("test AUC", _mean_of("auc")), ("gAUC", _mean_of("gauc")), ("logloss", _mean_of("logloss")),
                       ("ECE", _mean_of("ece")), ("best valid AUC", _mean_of("best_valid_auc")),
                       ("best epoch / run", _epochs), ("dense params", _first("params_dense")),
                       ("embedding params", _first("params_embedding")),
                       ("train samples/s", _rate("train_samples_per_s")),
                       ("eval samples/s", _rate("eval_samples_per_s"))]


def leaderboard_table(rows: list[tuple[str, list[Run]]]) -> list[str]:
    cells = [[cell([r.metrics for r in runs]) for _, cell in LEADERBOARD_COLUMNS] for _, runs in rows]
    shown = [i for i in range(len(LEADERBOARD_COLUMNS)) if any(row[i] is not None for row in cells)]
    lines = ["| label | model | seeds | " + " | ".join(LEADERBOARD_COLUMNS[i][0] for i in shown) + " |",
             "|---" * (3 + len(shown)) + "|"]
    for (label, runs), row in zip(rows, cells):
        lines.append(f"| {label} | {runs[0].model} | {', '.join(str(r.seed) for r in runs)} | "
                     + " | ".join("-" if row[i] is None else row[i] for i in shown) + " |")
    return lines


def provenance(runs: list[Run]) -> str:
    """The dates and machines of runs, where known."""
    dates = sorted({r.date for r in runs if r.date})
    machines = sorted({r.machine for r in runs if r.machine})
    return " ".join(([f"Dates: {', '.join(dates)}."] if dates else [])
                    + ([f"Machines: {'; '.join(machines)}."] if machines else []))


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
    looped = [(label, [r for r in runs if evaluated(r, "by_depth")]) for label, runs in rows]
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


def slice_table(rows: list[tuple[str, list[Run]]]) -> list[str]:
    """Test metrics on the slices of `loopctr evaluate --cold` (cold and warm rows), for the labels evaluated so."""
    sliced = [(label, runs) for label, runs in rows if all(evaluated(r, "slices") for r in runs)]
    if not sliced:
        return []
    first = sliced[0][1][0].evaluation["slices"]
    names = list(first)
    lines = ["Test metrics by slice (" + "; ".join(f"{name}: {first[name].get('rule', name)}" for name in names) + "):",
             "", "| label | seeds | " + " | ".join(f"{n} rows | {n} AUC | {n} logloss" for n in names) + " |",
             "|---|---|" + "---|" * (3 * len(names))]
    for label, runs in sliced:
        parts = [[r.evaluation["slices"][n] for r in runs if n in r.evaluation["slices"]] for n in names]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(
            f"{part[0]['rows']:,} | {mean_std([x['auc'] for x in part])} | {mean_std([x['logloss'] for x in part])}"
            if len(part) == len(runs) else "- | - | -" for part in parts) + " |")
    return lines


def write_report(runs: list[Run], out: Path) -> str:
    """Write OUT/report.md and its figures; return the Markdown."""
    from loopctr import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = ["# Results", ""]
    for i, (dataset, labels) in enumerate(group_runs(runs).items()):
        rows = leaderboard(labels)
        known = provenance([r for _, members in rows for r in members])
        page += [f"## {dataset}", "", *([known, ""] if known else []), *leaderboard_table(rows), ""]
        page += [*significance_table(rows), ""] if len(rows) > 1 else []
        depths = depth_table(rows)
        page += ["Test AUC by inference depth:", "", *depths, ""] if depths else []
        slices = slice_table(rows)
        page += [*slices, ""] if slices else []
        figures = {f"leaderboard-{i}.png": lambda p: plots.leaderboard_figure(
                       [(label, [r.metrics["auc"] for r in runs]) for label, runs in rows], p, dataset)}
        curves = [(label, [r.valid_curve for r in runs]) for label, runs in rows if any(r.valid_curve for r in runs)]
        if curves:  # results rows may come without their validation curve
            figures[f"curves-{i}.png"] = lambda p: plots.curves_figure(curves, p, dataset)
        calibrated = [(label, [r.metrics["reliability"] for r in runs]) for label, runs in rows
                      if all("reliability" in r.metrics for r in runs)]
        if calibrated:
            figures[f"calibration-{i}.png"] = lambda p: plots.reliability_figure(calibrated, p, dataset)
        if depths:
            figures[f"depths-{i}.png"] = lambda p: plots.depth_by_label_figure(
                [(label, [r.evaluation["by_depth"] for r in runs if evaluated(r, "by_depth")]) for label, runs in rows
                 if any(evaluated(r, "by_depth") for r in runs)], p, dataset)
        for name, draw in figures.items():
            draw(out / name)
            page += [f"![{name[:-4]}]({name})", ""]
    text = "\n".join(page)
    (out / "report.md").write_text(text)
    return text
