"""Source layouts: which reader turns a dataset's files into raw columns, by layout name.

A layout is a reader `read(ctx) -> SourceResult` (split -> Arrow table of raw string / float columns, or
list<string> columns for sequences built in code), the list of source files it depends on (for the
preparation cache), and an options dataclass (its fields are the `key=value` settings that
`loopctr prepare` accepts, with the catalogue entry's `source.options` as defaults). Readers never fit
vocabularies and never write anything: `loopctr.data.prepare.prepare_tables` does that, in one place.

Layout modules register themselves on import; `get(name)` imports the module that defines a layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopctr.data.schema import Schema
from loopctr.errors import UserError, located

# layout name -> module that registers it (imported on first use, so `loopctr data list` stays fast)
_MODULES = {
    "csv": "loopctr.data.sources.registry",
    "synthetic": "loopctr.data.sources.registry",
    "interactions": "loopctr.data.sources.interactions",
    "taobao": "loopctr.data.sources.taobao",
    "kuaivideo": "loopctr.data.sources.kuaivideo",
    "criteo": "loopctr.data.sources.criteo",
    "avazu": "loopctr.data.sources.avazu",
    "frappe": "loopctr.data.sources.frappe",
    "movielens": "loopctr.data.sources.movielens",
}

LAYOUTS: dict[str, "Layout"] = {}


@dataclass
class ReadContext:
    schema: Schema
    source_dir: Path | None
    options: Any
    test_as_valid: bool = False  # the test split will double as validation: readers need not make one
    log: Callable = print


@dataclass
class SourceResult:
    tables: dict[str, pa.Table]
    names: dict[str, str]  # split -> what to name in error messages (a file path)
    pretrained: dict[str, tuple[pa.Array, np.ndarray]] = field(default_factory=dict)  # vocab -> (tokens, vectors)
    info: dict = field(default_factory=dict)  # recorded in schema.json under "source"


@dataclass(frozen=True)
class Layout:
    name: str
    options: type
    read: Callable[[ReadContext], SourceResult]
    files: Callable[[ReadContext], list[Path]]
    help: str = ""
    needs_source: bool = True


def register(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


def get(name: str) -> Layout:
    if name not in LAYOUTS:
        module = _MODULES.get(name)
        if module is None:
            raise UserError(f"unknown source layout '{name}' (known: {', '.join(sorted(_MODULES))})")
        __import__(module)
    return LAYOUTS[name]


def make_options(layout: Layout, defaults: dict, overrides, where: str):
    """The layout's options: dataclass defaults <- the entry's `source.options` <- `key=value` overrides."""
    from loopctr.config import parse_override, set_values

    values = dict(defaults or {})
    values.update(dict(parse_override(o, where) for o in overrides))
    return set_values(layout.options(), values, where)


def options_dict(options) -> dict:
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}


# -- holding out a validation split from train ------------------------------------------------------------

HOLDOUTS = ("none", "last_per_user", "tail")


def holdout_valid(table: pa.Table, how: str, fraction: float = 0.1, group: str | None = None,
                  order: np.ndarray | None = None) -> tuple[pa.Table, pa.Table]:
    """Split `table` (train) into (train, valid) without looking at test.

    last_per_user: each group's rows at its latest `order` value (e.g. the pos/neg pair of the newest
    interaction in the DIN protocol, found by the longest history) go to valid; tail: the last `fraction`
    of rows (files sorted by time, e.g. TaobaoAd's train_sorted) go to valid.
    """
    n = table.num_rows
    if how == "tail":
        cut = n - max(1, int(round(n * fraction)))
        if cut < 1:
            raise UserError(f"holdout=tail: train has {n} rows, too few to hold out a validation split")
        return table.slice(0, cut), table.slice(cut)
    if how == "last_per_user":
        if group is None or order is None:
            raise UserError("holdout=last_per_user needs a group column (the schema's `group`) and an order")
        users = pc.dictionary_encode(table.column(group).combine_chunks().cast(pa.string())).indices.to_numpy()
        latest = np.full(users.max() + 1 if n else 0, -np.inf)
        np.maximum.at(latest, users, order)
        is_valid = order == latest[users]
        # a user whose every row is at its latest order keeps them in train (nothing would be left to learn from)
        counts = np.bincount(users, minlength=latest.shape[0])
        in_valid = np.bincount(users, weights=is_valid, minlength=latest.shape[0])
        is_valid &= (in_valid < counts)[users]
        mask = pa.array(is_valid)
        return table.filter(pc.invert(mask)), table.filter(mask)
    raise UserError(f"unknown holdout '{how}' (one of {HOLDOUTS})")


# -- the plain layout: one CSV or parquet file per split, described by the schema ---------------------------


@dataclass
class CsvOptions:
    holdout: Literal["none", "last_per_user", "tail"] = "none"  # how to make 'valid' when its file is absent
    holdout_fraction: float = 0.1  # holdout=tail: the last fraction of train rows
    order_by: str = ""  # holdout=last_per_user: a numeric column, or a sequence field whose length orders events

    def validate(self):
        if not 0.0 < self.holdout_fraction < 1.0:
            raise UserError("holdout_fraction must be in (0, 1)")


def _split_paths(ctx: ReadContext) -> dict[str, Path]:
    return {split: Path(ctx.source_dir) / fname for split, fname in ctx.schema.splits.items()}


def _csv_files(ctx: ReadContext) -> list[Path]:
    """The split files that will be read; a missing one that cannot be made otherwise is an error."""
    files = []
    for split, path in _split_paths(ctx).items():
        if path.is_file():
            files.append(path)
        elif not _may_skip(ctx, split):
            hint = ""
            if split == "valid":
                hint = ("; to hold one out of train pass holdout=last_per_user or holdout=tail, or pass "
                        "--test-as-valid for the BARS protocol (the test split doubles as validation)")
            raise UserError(f"{path}: file not found (the '{split}' split of dataset '{ctx.schema.name}'){hint}")
    return files


def _may_skip(ctx: ReadContext, split: str) -> bool:
    return split == "valid" and (ctx.test_as_valid or ctx.options.holdout != "none") and "train" in ctx.schema.splits


def read_table_file(path: Path, schema: Schema) -> pa.Table:
    """One split file: CSV (strictly validated by `read_csv_split`) or parquet (same checks, rows named)."""
    from loopctr.data.sources import needed_columns, read_csv_split

    if path.suffix != ".parquet":
        return read_csv_split(path, schema)
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UserError(f"{path}: file not found (expected the '{path.name}' split of dataset '{schema.name}')")
    try:
        names = pq.read_schema(path).names
    except pa.ArrowInvalid as exc:
        raise UserError(f"{path}: not a parquet file ({exc})") from None
    wanted = needed_columns(schema)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; the file has {names}")
    return check_table(pq.read_table(path, columns=wanted), schema, f"{path}", "(parquet row numbers)")


def check_table(table: pa.Table, schema: Schema, where: str, numbering: str = "") -> pa.Table:
    """A split given as a typed table (a parquet file, a DataFrame): the schema's columns, none missing a value
    (numeric ones may), cast to text or numbers, and checked as a CSV split is; errors name the row (1-based)."""
    from loopctr.data.sources import check_values, needed_columns

    wanted = needed_columns(schema)
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}; the table has {table.column_names}")
    if table.num_rows == 0:
        raise UserError(f"{where}: the table has no rows")
    numeric = {f.name for f in schema.of_type("numeric")} | {schema.label}
    columns = {}
    for name in wanted:
        col = table.column(name)
        nulls = col.is_null().to_numpy(zero_copy_only=False)
        if name not in numeric and nulls.any():
            raise UserError(f"{where}: row {int(np.flatnonzero(nulls)[0]) + 1}, column '{name}': value is missing")
        try:
            columns[name] = col.cast(pa.float64() if name in numeric else pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise UserError(f"{where}: column '{name}' has type {col.type}, which cannot be read as "
                            f"{'a number' if name in numeric else 'text'}") from None
    table = pa.table(columns)
    check_values(table, schema, f"{where} {numbering}".strip(), first_line=1)
    return table


def _order_of(table: pa.Table, schema: Schema, order_by: str, where: str) -> np.ndarray:
    if not order_by:
        raise UserError(f"{where}: holdout=last_per_user needs order_by (a time column or a sequence field)")
    if order_by not in table.column_names:
        raise UserError(f"{where}: order_by column '{order_by}' is not read (declare it as a field)")
    col = table.column(order_by)
    try:
        spec = schema.field(order_by)
    except KeyError:
        spec = None
    if spec is not None and spec.type == "sequence":
        from loopctr.data.sources import split_sequence

        return split_sequence(col, spec.separator, where, order_by)[1].astype(np.float64)
    return col.to_numpy(zero_copy_only=False).astype(np.float64)


def read_csv_layout(ctx: ReadContext) -> SourceResult:
    from loopctr.data.sources import split_sequence

    paths = _split_paths(ctx)
    tables, names = {}, {}
    present = set(_csv_files(ctx))
    for split, path in paths.items():
        if path in present and not (split == "valid" and ctx.test_as_valid):
            tables[split] = read_table_file(path, ctx.schema)
            names[split] = str(path)
    info = {}
    if "valid" in paths and "valid" not in tables and not ctx.test_as_valid:
        train = tables["train"]
        # check the sequences of the whole file now: after the split, line numbers would no longer match
        for f in ctx.schema.of_type("sequence"):
            split_sequence(train.column(f.name), f.separator, names["train"], f.name)
        order = None
        if ctx.options.holdout == "last_per_user":
            order = _order_of(train, ctx.schema, ctx.options.order_by, names["train"])
        tables["train"], tables["valid"] = holdout_valid(train, ctx.options.holdout, ctx.options.holdout_fraction,
                                                         ctx.schema.group, order)
        names["valid"] = f"{names['train']} (held out: {ctx.options.holdout})"
        info["valid"] = f"held out of train ({ctx.options.holdout})"
    return SourceResult(tables, names, info=info)


register(Layout("csv", CsvOptions, read_csv_layout, _csv_files,
                help="one CSV (or .parquet) file per split, columns as the schema declares"))


# -- the generated dataset ---------------------------------------------------------------------------------


def _synthetic_options():
    from loopctr.data.synthetic import SyntheticConfig

    return SyntheticConfig()


def _read_synthetic(ctx: ReadContext) -> SourceResult:
    from loopctr.data.synthetic import generate_splits

    tables = generate_splits(ctx.options)
    return SourceResult(tables, {split: f"<synthetic {split}>" for split in tables})


register(Layout("synthetic", _synthetic_options, _read_synthetic, lambda ctx: [], needs_source=False,
                help="generated logs (loopctr.data.synthetic)"))


# -- helpers shared by the layout modules ------------------------------------------------------------------


def random_split(table: pa.Table, fractions: tuple[float, float, float], seed: int) -> dict[str, pa.Table]:
    """train/valid/test by a seeded random permutation of the rows (for sets with no public split)."""
    n = table.num_rows
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * fractions[0]))
    n_valid = int(round(n * fractions[1]))
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    for name, idx in parts.items():
        if idx.size == 0:
            raise UserError(f"{n} rows are too few for a {fractions} split: the {name} split would be empty")
    return {name: table.take(pa.array(np.sort(idx))) for name, idx in parts.items()}


def split_by_options(table: pa.Table, ctx: ReadContext) -> dict[str, pa.Table]:
    """`random_split` by the options' train_fraction, valid_fraction and seed; with --test-as-valid the valid
    rows go back into train (test then doubles as validation)."""
    o = ctx.options
    tables = random_split(table, (o.train_fraction, o.valid_fraction, 1 - o.train_fraction - o.valid_fraction), o.seed)
    if ctx.test_as_valid:
        tables["train"] = pa.concat_tables([tables["train"], tables.pop("valid")])
    return tables


def locate_csv_problem(path: Path, delimiter: str, expected: int, header: bool, numeric: dict[int, str] | None = None,
                       first_line: int = 1) -> UserError:
    """Slow line-by-line scan (error path only): the first line with a wrong column count or a non-number."""
    import csv

    opener = _open_text(path)
    with opener as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        for row in reader:
            line = reader.line_num
            if header and line == 1:
                continue
            if len(row) != expected:
                found = f"found {len(row)}"
                if len(row) == 1 and delimiter not in row[0]:
                    guess = next((c for c in ",\t;| " if c != delimiter and c in row[0]), None)
                    if guess:
                        found += f"; the line looks {guess!r}-separated, the file must be {delimiter!r}-separated"
                return UserError(f"{located(path, line)}: expected {expected} {delimiter!r}-separated columns but {found}")
            for index, name in (numeric or {}).items():
                value = row[index]
                if value == "":
                    continue
                try:
                    float(value)
                except ValueError:
                    return UserError(f"{located(path, line, name)}: '{value}' is not a number")
    return UserError(f"{path}: could not be parsed as {delimiter!r}-separated text")


def _open_text(path: Path):
    import gzip

    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def check_label(values: np.ndarray, path, first_line: int, column: str) -> None:
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if bad.size:
        raise UserError(f"{located(path, first_line + int(bad[0]), column)}: label is {values[bad[0]]!r}; "
                        "labels must be 0 or 1")
