"""Frappe (NFM / BARS Frappe_x1): 10 categorical context fields (user, item, daytime, weekday, isweekend,
homework, cost, weather, country, city).

- `libfm`: `frappe.{train,validation,test}.libfm`, lines `label idx:1 idx:1 ...` with label 1 or -1 and
  one token per field in the field order above (the token's index is the categorical value).
- `positives`: rebuild the full CTR set from positive logs (PaddleRec ENSFM's `train.csv`/`test.csv`,
  lines `user-daytime-weekday-isweekend-homework-weather-country-city,item-cost`): each positive plus
  `negatives` random items the user never used (with that item's cost and the positive's context),
  label 0; then split 7:2:1 at random (Frappe_x1's ratio, seeded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from loopctr.data.din_protocol import sample_negatives
from loopctr.data.sources.registry import Layout, ReadContext, SourceResult, random_split, register
from loopctr.errors import UserError, located

FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
CONTEXT = ["user", "daytime", "weekday", "isweekend", "homework", "weather", "country", "city"]
LIBFM = {"train": "frappe.train.libfm", "valid": "frappe.validation.libfm", "test": "frappe.test.libfm"}
POSITIVES = ("train.csv", "test.csv")


@dataclass
class FrappeOptions:
    format: Literal["auto", "libfm", "positives"] = "auto"
    train_file: str = ""  # libfm: default frappe.train.libfm (and so on)
    valid_file: str = ""
    test_file: str = ""
    negatives: int = 2  # positives: random negatives per positive
    seed: int = 2024

    def validate(self):
        if self.negatives < 1:
            raise UserError("negatives must be >= 1")


def read_libfm(path: Path) -> pa.Table:
    labels, rows = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] not in ("1", "-1", "0", "1.0", "-1.0", "0.0"):
            raise UserError(f"{located(path, number, 'label')}: '{parts[0]}' is not a label (1, -1 or 0)")
        if len(parts) != 1 + len(FIELDS):
            raise UserError(f"{located(path, number)}: expected a label and {len(FIELDS)} index:value tokens "
                            f"({', '.join(FIELDS)}), found {len(parts) - 1} tokens")
        values = []
        for k, token in enumerate(parts[1:]):
            index, sep, _ = token.partition(":")
            if not sep or not index:
                raise UserError(f"{located(path, number, FIELDS[k])}: '{token}' is not an index:value token")
            values.append(index)
        labels.append(1.0 if float(parts[0]) > 0 else 0.0)
        rows.append(values)
    if not rows:
        raise UserError(f"{located(path, 1)}: the file is empty")
    columns = list(zip(*rows))
    return pa.table({"label": pa.array(labels), **{f: pa.array(columns[k], pa.string()) for k, f in enumerate(FIELDS)}})


def read_positive_logs(paths: list[Path]) -> tuple[list[list[str]], list[tuple[str, int]]]:
    rows, where = [], []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            context, sep, item = line.strip().partition(",")
            ctx, itm = context.split("-"), item.split("-")
            if not sep or len(ctx) != len(CONTEXT) or len(itm) != 2:
                raise UserError(f"{located(path, number)}: expected '{'-'.join(CONTEXT)},item-cost' "
                                f"({len(CONTEXT)} '-'-joined context ids, a comma, 'item-cost'), found {line.strip()!r}")
            rows.append(ctx + itm)
            where.append((str(path), number))
    if not rows:
        raise UserError(f"{paths[0]}: no positive logs")
    return rows, where


def rebuild_from_positives(rows: list[list[str]], negatives: int, seed: int) -> pa.Table:
    """Each positive plus `negatives` random items its user never used (with their cost; same context)."""
    names = CONTEXT + ["item", "cost"]
    cols = {n: np.array([r[k] for r in rows], dtype=object) for k, n in enumerate(names)}
    user_codes, user = np.unique(cols["user"], return_inverse=True)
    item_codes, item = np.unique(cols["item"], return_inverse=True)
    cost_of = {}
    for it, c in zip(cols["item"], cols["cost"]):
        cost_of.setdefault(it, c)
    order = np.argsort(user, kind="stable")
    neg = sample_negatives(user[order], item[order], user, negatives, np.arange(len(item_codes)),
                           np.random.default_rng(seed))
    per = 1 + negatives
    out = {"label": np.tile(np.r_[1.0, np.zeros(negatives)], len(rows))}
    for n in CONTEXT:
        out[n] = np.repeat(cols[n], per)
    items = np.column_stack([item, neg]).ravel()
    out["item"] = item_codes[items]
    out["cost"] = np.array([cost_of[i] for i in out["item"]], dtype=object)
    return pa.table({"label": pa.array(out["label"]), **{f: pa.array(out[f].tolist(), pa.string()) for f in FIELDS}})


def _detect(ctx: ReadContext) -> tuple[str, dict[str, Path]]:
    d = Path(ctx.source_dir)
    o = ctx.options
    libfm = {s: d / (getattr(o, f"{s}_file") or LIBFM[s]) for s in LIBFM}
    fmt = o.format
    if fmt == "auto":
        fmt = "libfm" if any(p.is_file() for p in libfm.values()) else "positives"
    if fmt == "libfm":
        need = [s for s in ("train", "test") if not libfm[s].is_file()]
        if not libfm["valid"].is_file() and not ctx.test_as_valid:
            need.append("valid")
        if need:
            raise UserError(f"{d}: missing libFM split file(s) {[libfm[s].name for s in need]}; name them with "
                            "train_file=, valid_file=, test_file= (or --test-as-valid for a missing validation file)")
        return fmt, {s: p for s, p in libfm.items() if p.is_file() and not (s == "valid" and ctx.test_as_valid)}
    files = {n: d / n for n in POSITIVES if (d / n).is_file()}
    if not files:
        raise UserError(f"{d}: no Frappe files (frappe.*.libfm, or the positive logs {' / '.join(POSITIVES)})")
    return fmt, files


def read_frappe(ctx: ReadContext) -> SourceResult:
    fmt, files = _detect(ctx)
    if fmt == "libfm":
        tables = {s: read_libfm(p) for s, p in files.items()}
        return SourceResult(tables, {s: str(p) for s, p in files.items()}, info={"format": "libfm"})
    rows, _ = read_positive_logs(list(files.values()))
    table = rebuild_from_positives(rows, ctx.options.negatives, ctx.options.seed)
    tables = random_split(table, (0.7, 0.2, 0.1), ctx.options.seed)
    if ctx.test_as_valid:
        tables["train"] = pa.concat_tables([tables["train"], tables.pop("valid")])
    return SourceResult(tables, {s: f"<frappe rebuilt from {', '.join(files)}: {s}>" for s in tables},
                        info={"format": "positives", "positives": len(rows), "negatives_per_positive":
                              ctx.options.negatives, "split": "random 7:2:1"})


register(Layout("frappe", FrappeOptions, read_frappe, lambda ctx: list(_detect(ctx)[1].values()),
                help="frappe.{train,validation,test}.libfm, or ENSFM positive logs train.csv/test.csv"))
