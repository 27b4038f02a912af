"""Avazu (Kaggle layout): `id,click,hour,C1,banner_pos,site_*,app_*,device_*,C14..C21` with a header line;
`hour` is YYMMDDHH. As in the BARS Avazu_x4 configs: `id` is dropped, `hour` becomes the hour of the day,
and `weekday` and `weekend` are derived from its date. With no public labelled test set, rows are split
8:1:1 at random (seeded), as Avazu_x4 does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopctr.data.sources.criteo import CriteoOptions, find_file, read_kaggle_table
from loopctr.data.sources.registry import Layout, ReadContext, SourceResult, register, split_by_options
from loopctr.errors import UserError, located

RAW = ["click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
       "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type"] + \
      [f"C{i}" for i in range(14, 22)]
CANDIDATES = ("train.csv", "train", "train.gz")


@dataclass
class AvazuOptions(CriteoOptions):
    seed: int = 2018


def read_avazu(ctx: ReadContext) -> SourceResult:
    path = find_file(ctx.source_dir, ctx.options.file, CANDIDATES, "Avazu")
    table, first_line = read_kaggle_table(path, RAW, [], "click")
    hour = table.column("hour").combine_chunks()
    ok = pc.match_substring_regex(hour, r"^\d{8}$").to_numpy(zero_copy_only=False)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise UserError(f"{located(path, first_line + row, 'hour')}: '{hour[row].as_py()}' is not YYMMDDHH")
    try:
        day = pc.strptime(pc.utf8_slice_codeunits(hour, 0, 6), format="%y%m%d", unit="s")
    except pa.ArrowInvalid:
        days = pc.utf8_slice_codeunits(hour, 0, 6).to_pylist()
        import datetime

        for row, d in enumerate(days):
            try:
                datetime.datetime.strptime(d, "%y%m%d")
            except ValueError:
                raise UserError(f"{located(path, first_line + row, 'hour')}: '{hour[row].as_py()}' has no valid "
                                "date YYMMDD") from None
        raise
    weekday = pc.day_of_week(day)  # Monday = 0
    cols = {"click": table.column("click"),
            "hour": pc.utf8_slice_codeunits(hour, 6, 8),
            "weekday": pc.cast(weekday, pa.string()),
            "weekend": pc.cast(pc.cast(pc.greater_equal(weekday, 5), pa.int8()), pa.string())}
    for c in RAW[2:]:
        cols[c] = table.column(c)
    tables = split_by_options(pa.table(cols), ctx)
    return SourceResult(tables, {s: f"{path} ({s} rows)" for s in tables},
                        info={"file": path.name, "split": "random"})


register(Layout("avazu", AvazuOptions, read_avazu,
                lambda ctx: [find_file(ctx.source_dir, ctx.options.file, CANDIDATES, "Avazu")],
                help="Avazu Kaggle train.csv (header line; hour as YYMMDDHH)"))
