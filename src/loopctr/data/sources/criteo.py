"""Criteo (Kaggle layout): `label, I1..I13, C1..C26` per row, tab-separated without a header (the original
`train.txt`) or comma-separated with a header line. As in the BARS Criteo configs, the 13 count features
become categorical values by log-binning (missing -> 0; v > 2 -> floor(ln(v)^2); else int(v)); the 26
hashed categories are kept as they are (missing -> ""). With no public labelled test set, rows are split
8:1:1 at random (seeded), as Criteo_x4 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from loopctr.data.sources.registry import (Layout, ReadContext, SourceResult, check_label, locate_csv_problem,
                                           register, split_by_options)
from loopctr.errors import UserError, located

NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label"] + NUMERIC + CATEGORICAL
CANDIDATES = ("train.txt", "train.csv", "dac_sample.txt")


@dataclass
class CriteoOptions:
    file: str = ""  # default: train.txt, train.csv or the only *.txt / *.csv in the source directory
    seed: int = 2018
    train_fraction: float = 0.8
    valid_fraction: float = 0.1

    def validate(self):
        if not (0 < self.train_fraction < 1 and 0 < self.valid_fraction < 1
                and self.train_fraction + self.valid_fraction < 1):
            raise UserError("train_fraction and valid_fraction must be in (0, 1) and sum to less than 1")


def log_bin(values: np.ndarray) -> np.ndarray:
    """BARS's convert_to_bucket on counts with missing values as NaN: the bin index as an int64."""
    v = np.nan_to_num(values, nan=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        binned = np.floor(np.log(np.where(v > 2, v, 3.0)) ** 2)
    return np.where(v > 2, binned, np.trunc(v)).astype(np.int64)


def find_file(directory: Path, name: str, candidates: tuple[str, ...], what: str) -> Path:
    directory = Path(directory)
    if name:
        path = directory / name
        if not path.is_file():
            raise UserError(f"{path}: file not found (file=)")
        return path
    for c in candidates:
        if (directory / c).is_file():
            return directory / c
    found = sorted(p for p in directory.iterdir() if p.suffix in (".txt", ".csv") and p.is_file())
    if len(found) == 1:
        return found[0]
    raise UserError(f"{directory}: no {what} file found (looked for {', '.join(candidates)}); name it with file=")


def read_kaggle_table(path: Path, columns: list[str], numeric: list[str], label: str) -> tuple[pa.Table, int]:
    """Read a Kaggle-layout file (tab without header, or CSV with one), validated; (table, line of row 0)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n")
    if not first:
        raise UserError(f"{located(path, 1)}: the file is empty")
    delimiter = "\t" if "\t" in first else ","
    cells = first.split(delimiter)
    header = label in cells or cells[0] in columns
    if header:
        missing = [c for c in columns if c not in cells]
        if missing:
            raise UserError(f"{located(path, 1)}: missing column(s) {missing}; the header has {cells}")
        names = cells
    else:
        if len(cells) != len(columns):
            guess = "," if delimiter == "\t" else "\t"
            raise UserError(f"{located(path, 1)}: expected {len(columns)} {delimiter!r}-separated columns "
                            f"({', '.join(columns[:3])}, ...) but found {len(cells)}"
                            + (f"; is the file {guess!r}-separated?" if len(cells) == 1 else ""))
        names = columns
    types = {c: (pa.float64() if c in numeric or c == label else pa.string()) for c in columns}
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0,
                                                                    block_size=1 << 24),
                               parse_options=pacsv.ParseOptions(delimiter=delimiter),
                               convert_options=pacsv.ConvertOptions(column_types=types, include_columns=columns,
                                                                    strings_can_be_null=False))
    except pa.ArrowInvalid:
        idx = {names.index(c): c for c in numeric + [label]}
        raise locate_csv_problem(path, delimiter, len(names), header, idx) from None
    first_line = 2 if header else 1
    if table.num_rows == 0:
        raise UserError(f"{located(path, first_line)}: no data rows")
    y = table.column(label).to_numpy(zero_copy_only=False)
    nan = np.flatnonzero(np.isnan(y))
    if nan.size:
        raise UserError(f"{located(path, first_line + int(nan[0]), label)}: the label is missing")
    check_label(y, path, first_line, label)
    return table, first_line


def read_criteo(ctx: ReadContext) -> SourceResult:
    path = find_file(ctx.source_dir, ctx.options.file, CANDIDATES, "Criteo")
    table, first_line = read_kaggle_table(path, COLUMNS, NUMERIC, "label")
    cols = {"label": table.column("label")}
    for c in NUMERIC:
        values = table.column(c).to_numpy(zero_copy_only=False)
        inf = np.flatnonzero(np.isinf(values))
        if inf.size:
            raise UserError(f"{located(path, first_line + int(inf[0]), c)}: infinite value")
        cols[c] = pc.cast(pa.array(log_bin(values)), pa.string())
    for c in CATEGORICAL:
        cols[c] = table.column(c)
    tables = split_by_options(pa.table(cols), ctx)
    names = {s: f"{path} ({s} rows)" for s in tables}
    return SourceResult(tables, names, info={"file": path.name, "split": "random", "numeric": "log-binned (BARS)"})


register(Layout("criteo", CriteoOptions, read_criteo,
                lambda ctx: [find_file(ctx.source_dir, ctx.options.file, CANDIDATES, "Criteo")],
                help="Criteo Kaggle train.txt (tab, no header) or a CSV with a header"))
