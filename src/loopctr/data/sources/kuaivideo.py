"""KuaiVideo_x1: train.csv/test.csv (`timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items`,
sorted by timestamp; `^`-joined clicked / not-clicked item sequences) and the frozen 64-d visual item
embeddings `item_visual_emb_dim64.h5` (datasets `key`: item ids, `value`: [items, 64] float32).

The schema's `item_emb`, `pos_items_emb` and `neg_items_emb` are copies of item_id, pos_items and
neg_items made here; the embeddings are passed on for the `item_emb` vocabulary, aligned with it by
`prepare_tables` (pretrained/item_emb.npy). Reading HDF5 needs h5py, an optional extra
(`pip install 'loopctr[h5]'`); a `.npz` with arrays `key` and `value` converted from the .h5 is read
without it (e.g. `np.savez(f, key=h5["key"][:], value=h5["value"][:])`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from loopctr.data.content import read_item_vectors
from loopctr.data.schema import FieldSpec, Schema
from loopctr.data.sources.registry import Layout, ReadContext, SourceResult, read_table_file, register
from loopctr.errors import UserError

COPIES = {"item_emb": "item_id", "pos_items_emb": "pos_items", "neg_items_emb": "neg_items"}
EMBEDDINGS = ("item_visual_emb_dim64.h5", "item_visual_emb_dim64.npz")


@dataclass
class KuaiVideoOptions:
    embeddings: Literal["required", "optional"] = "required"  # the visual item embeddings file
    holdout: Literal["none", "tail"] = "tail"  # valid when no valid file: the newest train rows by timestamp
    holdout_fraction: float = 0.1

    def validate(self):
        if not 0.0 < self.holdout_fraction < 1.0:
            raise UserError("holdout_fraction must be in (0, 1)")


def _file_schema(schema: Schema) -> Schema:
    """The columns the CSV holds: the schema less the copies, plus the timestamp (for the holdout)."""
    fields = tuple(f for f in schema.fields if f.name not in COPIES) + (FieldSpec("timestamp", "numeric"),)
    return Schema(name=schema.name, label=schema.label, fields=fields, group=schema.group,
                  min_count=schema.min_count, splits=schema.splits, delimiter=schema.delimiter)


def _files(ctx: ReadContext) -> tuple[dict[str, Path], Path | None]:
    d = Path(ctx.source_dir)
    files = {}
    for split, fname in ctx.schema.splits.items():
        if (d / fname).is_file():
            files[split] = d / fname
        elif split != "valid" or (ctx.options.holdout == "none" and not ctx.test_as_valid):
            raise UserError(f"{d / fname}: file not found (the '{split}' split of KuaiVideo_x1)"
                            + ("; pass holdout=tail or --test-as-valid" if split == "valid" else ""))
    emb = next((d / n for n in EMBEDDINGS if (d / n).is_file()), None)
    if emb is None and ctx.options.embeddings == "required":
        raise UserError(f"{d}: {' or '.join(EMBEDDINGS)} not found (the frozen visual item embeddings); "
                        "pass embeddings=optional to prepare without them")
    return files, emb


def read_kuaivideo(ctx: ReadContext) -> SourceResult:
    missing = [c for c in COPIES if c not in ctx.schema.field_names]
    if missing:
        raise UserError(f"layout 'kuaivideo' needs the fields {sorted(COPIES)} in the schema (missing {missing})")
    files, emb = _files(ctx)
    file_schema = _file_schema(ctx.schema)
    tables, names = {}, {}
    for split, path in files.items():
        if split == "valid" and ctx.test_as_valid:
            continue
        tables[split] = read_table_file(path, file_schema)
        names[split] = str(path)
    info = {}
    if "valid" not in tables and not ctx.test_as_valid:
        from loopctr.data.sources import split_sequence

        train = tables["train"]
        for f in file_schema.of_type("sequence"):  # check every line now, while line numbers still match
            split_sequence(train.column(f.name), f.separator, names["train"], f.name)
        t = train.column("timestamp").to_numpy()
        cut = np.sort(t)[int(len(t) * (1 - ctx.options.holdout_fraction))]
        mask = pa.array(t >= cut)
        tables["train"], tables["valid"] = train.filter(pa.compute.invert(mask)), train.filter(mask)
        if tables["train"].num_rows == 0:
            raise UserError(f"{names['train']}: every row has the newest timestamp; cannot hold out a validation split")
        names["valid"] = names["train"] + " (its newest rows, held out)"
        info["valid"] = f"the newest {ctx.options.holdout_fraction:.0%} of train rows by timestamp"
    for split, table in tables.items():
        for copy, original in COPIES.items():
            table = table.append_column(copy, table.column(original))
        tables[split] = table.drop_columns(["timestamp"])
    pretrained = {}
    if emb is not None:
        pretrained["item_emb"] = read_item_vectors(emb)
        info["embeddings"] = emb.name
    return SourceResult(tables, names, pretrained=pretrained, info=info)


def _source_files(ctx: ReadContext) -> list[Path]:
    files, emb = _files(ctx)
    return list(files.values()) + ([emb] if emb else [])


register(Layout("kuaivideo", KuaiVideoOptions, read_kuaivideo, _source_files,
                help="train.csv, test.csv and item_visual_emb_dim64.h5 (or .npz) of KuaiVideo_x1"))
