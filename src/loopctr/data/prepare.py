"""`loopctr prepare`: fit vocabularies on the train split, transform every split, write column files.

The prepared-dataset directory holds `schema.json` (schema, vocabulary sizes, split sizes, fingerprint),
`vocab/<name>.json` (tokens; index 0 is padding, 1 is out-of-vocabulary, tokens start at 2) and one
directory per split of memory-mappable `.npy` files: `<field>.npy` (int32 ids or float32 numerics; for
sequences the flat int32 ids of all rows, newest max_len events per row, oldest first), `<field>.offsets.npy`
(int64, rows + 1: row i's events are ids[offsets[i]:offsets[i+1]]), `_label.npy` and `_group.npy`.
It is written to a temporary directory and renamed into place, so an interrupted run leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopctr.data.schema import Schema
from loopctr.data.sources import split_sequence
from loopctr.errors import UserError

FORMAT_VERSION = 1
PAD, OOV = 0, 1
LABEL, GROUP = "_label", "_group"


def _fit_vocab(token_arrays: list[pa.Array], min_count: int) -> list[str]:
    """Tokens seen at least min_count times, most frequent first (ties by token, so the order is deterministic)."""
    counts = pc.value_counts(pa.chunked_array(token_arrays, type=pa.string()).combine_chunks())
    values = counts.field("values").to_numpy(zero_copy_only=False).astype(object)
    freq = counts.field("counts").to_numpy()
    keep = freq >= min_count
    values, freq = values[keep], freq[keep]
    order = np.lexsort((values.astype(str), -freq))
    return values[order].tolist()


def _encode(tokens: pa.Array, vocab: pa.Array) -> np.ndarray:
    idx = pc.index_in(tokens, value_set=vocab)
    return (pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int32) + 2).astype(np.int32)


def truncate_ragged(ids: np.ndarray, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's newest (last) max_len ids of ragged (flat ids, lengths); return (flat ids, offsets)."""
    keep = np.minimum(lengths, max_len)
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(keep, out=offsets[1:])
    if np.array_equal(keep, lengths):
        return ids.astype(np.int32, copy=False), offsets
    ends = np.cumsum(lengths)
    src = np.repeat(ends - keep, keep) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], keep))
    return ids[src].astype(np.int32, copy=False), offsets


def _raw_tokens(table: pa.Table, schema: Schema, source_name) -> dict:
    """field -> (flat tokens, lengths or None) for categorical and sequence fields."""
    out = {}
    for f in schema.fields:
        if f.type == "categorical":
            out[f.name] = (table.column(f.name).combine_chunks(), None)
        elif f.type == "sequence":
            out[f.name] = split_sequence(table.column(f.name), f.separator, source_name, f.name)
    return out


def transform_split(table, raw, schema, vocabs, numeric_stats) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {LABEL: table.column(schema.label).to_numpy().astype(np.float32)}
    if schema.group:
        cols[GROUP] = pc.dictionary_encode(table.column(schema.group).combine_chunks().cast(pa.string())).indices.to_numpy().astype(np.int64)
    for f in schema.fields:
        if f.type == "numeric":
            x = table.column(f.name).to_numpy().astype(np.float64)
            cols[f.name] = _normalize(x, f.normalize, numeric_stats.get(f.name)).astype(np.float32)
            continue
        tokens, lengths = raw[f.name]
        ids = _encode(tokens, vocabs[f.vocab])
        if f.type == "categorical":
            cols[f.name] = ids
        else:
            cols[f.name], cols[f.name + ".offsets"] = truncate_ragged(ids, lengths, f.max_len)
    return cols


def _normalize(x: np.ndarray, how: str, stats: dict | None) -> np.ndarray:
    if how == "standard":
        return (x - stats["mean"]) / stats["std"]
    if how == "log1p":
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def _fit_numeric(train: pa.Table, schema: Schema) -> dict:
    stats = {}
    for f in schema.of_type("numeric"):
        if f.normalize == "standard":
            x = train.column(f.name).to_numpy().astype(np.float64)
            std = float(x.std())
            stats[f.name] = {"mean": float(x.mean()), "std": std if std > 0 else 1.0}
    return stats


def fit_vocabularies(raw: dict, schema: Schema) -> dict[str, list[str]]:
    vocabs = {}
    for name in schema.vocabularies:
        owner = schema.field(name)
        min_count = owner.min_count or schema.min_count
        arrays = [raw[f.name][0] for f in schema.fields if f.vocab == name]
        vocabs[name] = _fit_vocab(arrays, min_count)
    return vocabs


def source_fingerprint(paths: list[Path]) -> list:
    """Cheap identity of source files (path, size, mtime) for the preparation cache."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def cache_key(schema: Schema, source_identity) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "schema": schema.to_dict(), "source": source_identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def is_prepared(out_dir: Path, key: str) -> bool:
    meta = Path(out_dir) / "schema.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("cache_key") == key
    except (json.JSONDecodeError, OSError):
        return False


def prepare_tables(schema: Schema, tables: dict[str, pa.Table], out_dir: Path, key: str, source_names: dict,
                   overwrite: bool = False, started: float | None = None) -> dict:
    """Fit on tables['train'], transform every split, and write the prepared directory atomically.
    `started` is when reading the sources began, so that prepare_seconds covers the whole preparation."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "schema.json").is_file():
            raise UserError(f"{out_dir}: exists and is not a prepared dataset; choose another --out")
        if not overwrite:
            raise UserError(
                f"{out_dir}: holds a dataset prepared from other sources or settings; "
                "pass --overwrite to replace it, or choose another --out"
            )
    t0 = started if started is not None else time.perf_counter()
    raw = {split: _raw_tokens(table, schema, source_names[split]) for split, table in tables.items()}
    vocabs = fit_vocabularies(raw["train"], schema)
    numeric_stats = _fit_numeric(tables["train"], schema)
    vocab_arrays = {name: pa.array(tokens, type=pa.string()) for name, tokens in vocabs.items()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        splits = {}
        for split, table in tables.items():
            cols = transform_split(table, raw[split], schema, vocab_arrays, numeric_stats)
            (tmp / split).mkdir()
            for name, arr in cols.items():
                np.save(tmp / split / f"{name}.npy", arr)
            splits[split] = {"rows": int(table.num_rows), "positives": int(cols[LABEL].sum())}
        (tmp / "vocab").mkdir()
        digest = hashlib.sha256(json.dumps(schema.to_dict(), sort_keys=True).encode())
        for name, tokens in vocabs.items():
            text = json.dumps(tokens)
            digest.update(text.encode())
            (tmp / "vocab" / f"{name}.json").write_text(text)
        meta = {
            "format_version": FORMAT_VERSION,
            "cache_key": key,
            "fingerprint": digest.hexdigest()[:16],
            "schema": schema.to_dict(),
            "vocab_sizes": {name: len(tokens) + 2 for name, tokens in vocabs.items()},
            "numeric_stats": numeric_stats,
            "splits": splits,
            "prepare_seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "schema.json").write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def prepare_dataset(dataset: str, out_dir, source_dir=None, overwrite: bool = False, synthetic_overrides=(),
                    log=print) -> dict:
    """Prepare a built-in dataset or a schema YAML from `source_dir` (or the generated one) into `out_dir`.

    Re-running with the same sources and settings reuses the existing result.
    """
    from loopctr.data import catalog
    from loopctr.data.sources import read_csv_split

    started = time.perf_counter()
    schema = catalog.resolve(dataset)
    out_dir = Path(out_dir)
    if dataset == catalog.SYNTHETIC:
        from loopctr.config import apply_overrides
        from loopctr.data.synthetic import SyntheticConfig, generate_splits

        cfg = apply_overrides(SyntheticConfig(), list(synthetic_overrides), where="synthetic dataset")
        key = cache_key(schema, {"synthetic": cfg.__dict__})
        if is_prepared(out_dir, key):
            log(f"{out_dir}: up to date (same generator settings); reusing it")
            return json.loads((out_dir / "schema.json").read_text())
        tables = generate_splits(cfg)
        names = {split: f"<synthetic {split}>" for split in tables}
    else:
        if synthetic_overrides:
            raise UserError(f"generator settings {list(synthetic_overrides)} only apply to --dataset synthetic")
        if source_dir is None:
            raise UserError(f"--source is required for dataset '{dataset}' (a directory with {sorted(schema.splits.values())})")
        source_dir = Path(source_dir)
        if not source_dir.is_dir():
            raise UserError(f"{source_dir}: source directory not found")
        paths = {split: source_dir / fname for split, fname in schema.splits.items()}
        for split, path in paths.items():
            if not path.is_file():
                raise UserError(f"{path}: file not found (the '{split}' split of dataset '{schema.name}')")
        key = cache_key(schema, source_fingerprint(list(paths.values())))
        if is_prepared(out_dir, key):
            log(f"{out_dir}: up to date (same sources and schema); reusing it")
            return json.loads((out_dir / "schema.json").read_text())
        tables = {split: read_csv_split(path, schema) for split, path in paths.items()}
        names = {split: str(path) for split, path in paths.items()}
    meta = prepare_tables(schema, tables, out_dir, key, names, overwrite=overwrite, started=started)
    rows = sum(s["rows"] for s in meta["splits"].values())
    log(f"prepared {rows:,} rows into {out_dir} in {meta['prepare_seconds']:.2f}s "
        f"({rows / max(meta['prepare_seconds'], 1e-9):,.0f} rows/s)")
    return meta
