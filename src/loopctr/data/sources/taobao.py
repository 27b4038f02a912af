"""TaobaoAd_x1: the x1 CSVs, and the converter from the 267-column DMR layout they were built from.

The DMR layout (PaddleRec's / DMR's `alimama_sampled.txt`, `train_sorted.csv`, `test.csv`; with or without
a header line of repeated names) has, per row: 50 behaviour types (`btag`), 50 categories, 50 brands,
50 mask and 50 match-mask columns (0 is padding), then userid, cms_segid, cms_group_id, final_gender_code,
age_level, pvalue_level, shopping_level, occupation, new_user_class_level, adgroup_id, cate_id,
campaign_id, customer, brand, price, pid and the click label (267 in all). The conversion is reczoo's
`convert_taobaoad_x1.py`: missing values become "0", each history keeps its non-"0" entries in column
order, `^`-joined, and the target's behaviour type `btag` is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from loopctr.data.schema import Schema
from loopctr.data.sources.registry import (Layout, ReadContext, SourceResult, check_label, holdout_valid,
                                           locate_csv_problem, read_table_file, register)
from loopctr.errors import UserError, located

DMR_COLUMNS = 267
HIST = {"btag_his": 0, "cate_his": 50, "brand_his": 100}  # first column of each 50-wide history block
PROFILE = ["userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
           "shopping_level", "occupation", "new_user_class_level", "adgroup_id", "cate_id", "campaign_id",
           "customer", "brand", "price", "pid"]  # columns 250..265; 266 is the label
DMR_TRAIN_NAMES = ("train_sorted.csv", "alimama_sampled_train.txt", "alimama_sampled.txt")


@dataclass
class TaobaoOptions:
    format: Literal["auto", "x1", "dmr"] = "auto"
    holdout: Literal["none", "tail"] = "tail"  # valid when no valid file: the last rows of train (sorted by time)
    holdout_fraction: float = 0.1

    def validate(self):
        if not 0.0 < self.holdout_fraction < 1.0:
            raise UserError("holdout_fraction must be in (0, 1)")


def dmr_file_format(path: Path) -> tuple[bool, bool]:
    """(is the 267-column DMR layout, has a header line)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n")
    cells = first.split(",")
    if len(cells) != DMR_COLUMNS:
        return False, False
    try:
        float(cells[-1])
        return True, False
    except ValueError:
        return True, True


def read_dmr(path: Path, schema: Schema) -> pa.Table:
    """Convert one DMR-layout file into the TaobaoAd_x1 columns."""
    _, header = dmr_file_format(path)
    first_line = 2 if header else 1
    names = [f"c{i}" for i in range(DMR_COLUMNS)]
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0,
                                                                    block_size=1 << 24),
                               convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                                    strings_can_be_null=False))
    except pa.ArrowInvalid:
        raise locate_csv_problem(path, ",", DMR_COLUMNS, header, {264: "price", 266: "clk"}) from None
    if table.num_rows == 0:
        raise UserError(f"{located(path, first_line)}: no data rows")
    out = {}
    for name, offset in HIST.items():
        block = np.stack([table.column(offset + k).to_numpy(zero_copy_only=False) for k in range(50)], axis=1)
        keep = (block != "0") & (block != "")
        lengths = keep.sum(axis=1)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        out[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(block[keep].tolist(), pa.string()))
    for k, name in enumerate(PROFILE):
        col = table.column(250 + k).combine_chunks()
        out[name] = pc.if_else(pc.equal(col, ""), "0", col)  # reczoo: fillna("0")
    price = _numbers(out.pop("price"), path, first_line, "price (column 265)")
    label = _numbers(table.column(266).combine_chunks(), path, first_line, "clk (column 267)")
    check_label(label, path, first_line, "clk (column 267)")
    n = table.num_rows
    columns = {"clk": pa.array(label), **{k: v for k, v in out.items()}, "price": pa.array(price),
               "btag": pa.array(["1"] * n, pa.string())}
    return pa.table({c: columns[c] for c in [schema.label] + schema.field_names})


def _numbers(col: pa.Array, path: Path, first_line: int, name: str) -> np.ndarray:
    try:
        values = pc.cast(pc.if_else(pc.equal(col, ""), "nan", col), pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        strings = col.to_pylist()
        for row, v in enumerate(strings):
            try:
                float(v)
            except ValueError:
                raise UserError(f"{located(path, first_line + row, name)}: '{v}' is not a number") from None
        raise
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise UserError(f"{located(path, first_line + int(bad[0]), name)}: missing, NaN or infinite")
    return values


def _split_files(ctx: ReadContext) -> dict[str, Path]:
    d = Path(ctx.source_dir)
    files = {}
    for split, fname in ctx.schema.splits.items():
        path = d / fname
        if not path.is_file() and split == "train":
            path = next((d / n for n in DMR_TRAIN_NAMES if (d / n).is_file()), path)
        if path.is_file():
            files[split] = path
    for split in ("train", "test"):
        if split not in files:
            raise UserError(f"{d / ctx.schema.splits[split]}: file not found (the '{split}' split of TaobaoAd_x1; "
                            f"the x1 CSV, or the DMR layout{' ' + '/'.join(DMR_TRAIN_NAMES) if split == 'train' else ''})")
    if "valid" not in files and ctx.options.holdout == "none" and not ctx.test_as_valid:
        raise UserError(f"{d / ctx.schema.splits['valid']}: file not found; pass holdout=tail or --test-as-valid")
    return files


def read_taobao(ctx: ReadContext) -> SourceResult:
    files = _split_files(ctx)
    tables, names, formats = {}, {}, {}
    for split, path in files.items():
        if split == "valid" and ctx.test_as_valid:
            continue
        is_dmr, _ = dmr_file_format(path)
        fmt = ctx.options.format if ctx.options.format != "auto" else ("dmr" if is_dmr else "x1")
        if fmt == "dmr" and not is_dmr:
            raise UserError(f"{located(path, 1)}: format=dmr expects {DMR_COLUMNS} comma-separated columns")
        tables[split] = read_dmr(path, ctx.schema) if fmt == "dmr" else read_table_file(path, ctx.schema)
        names[split] = str(path)
        formats[split] = fmt
    info = {"formats": formats}
    if "valid" not in tables and not ctx.test_as_valid:
        if formats["train"] == "x1":  # check the whole file's sequences before line numbers stop matching
            from loopctr.data.sources import split_sequence

            for f in ctx.schema.of_type("sequence"):
                split_sequence(tables["train"].column(f.name), f.separator, names["train"], f.name)
        tables["train"], tables["valid"] = holdout_valid(tables["train"], "tail", ctx.options.holdout_fraction)
        names["valid"] = names["train"] + " (its last rows, held out)"
        info["valid"] = f"the last {ctx.options.holdout_fraction:.0%} of train rows (by time)"
    return SourceResult(tables, names, info=info)


register(Layout("taobao", TaobaoOptions, read_taobao, lambda ctx: list(_split_files(ctx).values()),
                help="train.csv/test.csv of TaobaoAd_x1, or the 267-column DMR layout (train_sorted.csv, test.csv)"))
