"""`loopctr prepare`: fit vocabularies on the train split, transform every split, write column files.

The prepared-dataset directory holds `schema.json` (schema, vocabulary sizes, split sizes, fingerprint, the
source files with their sizes, modification times and SHA-256, which decide whether a re-run can reuse it),
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

from loopctr.atomic import atomic_write_text
from loopctr.data.schema import HASH_BITS, OOV, Schema
from loopctr.data.sources import split_sequence
from loopctr.errors import UserError, located

FORMAT_VERSION = 1
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


class TokenIndex:
    """A fitted vocabulary with its token -> id map built once, for encoding a few rows at a time (serving):
    `pc.index_in` builds its hash set of the whole vocabulary on every call, which is most of the cost of
    encoding a request of a few rows. Large inputs still go through `pc.index_in`; both give the same ids."""

    SMALL = 4096  # tokens; above this, one vectorised pass wins

    def __init__(self, tokens: list[str]):
        self.array = pa.array(tokens, type=pa.string())
        self.ids = {token: i + 2 for i, token in enumerate(tokens)}

    def encode(self, tokens: pa.Array) -> np.ndarray:
        if len(tokens) > self.SMALL:
            return _encode(tokens, self.array)
        return np.fromiter((self.ids.get(t, OOV) for t in tokens.to_pylist()), dtype=np.int32, count=len(tokens))


    def code(self, token: str) -> int:
        return self.ids.get(token, OOV)


def token_code(token: str) -> int:
    """A token's id in a hashed vocabulary: a hash of it, the same in every process and on every machine (not
    Python's salted hash), in [2, 2^31), so never PAD or OOV."""
    digest = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return 2 + digest % (2 ** HASH_BITS - 2)


class HashedTokens:
    """A hashed vocabulary (`hashed: true` in the schema): no token list; every token has its own id, seen in
    training or not; a missing value is OOV."""

    def code(self, token: str) -> int:
        return token_code(token)

    def encode(self, tokens: pa.Array) -> np.ndarray:
        distinct = pc.dictionary_encode(tokens)  # each distinct token hashed once
        codes = np.array([token_code(t) for t in distinct.dictionary.to_pylist()] + [OOV], dtype=np.int32)
        return codes[pc.fill_null(distinct.indices, -1).to_numpy(zero_copy_only=False)]


def _encode(tokens: pa.Array, vocab: pa.Array | TokenIndex | HashedTokens) -> np.ndarray:
    if isinstance(vocab, (TokenIndex, HashedTokens)):
        return vocab.encode(tokens)
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
            column = table.column(f.name)
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                # built in code (e.g. the DIN-protocol builder): already tokens, nothing to split or check
                lists = column.combine_chunks()
                out[f.name] = (pc.list_flatten(lists).cast(pa.string()),
                               pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64))
            else:
                out[f.name] = split_sequence(column, f.separator, source_name, f.name)
    check_paired_lengths({name: out[name][1] for name in out}, schema, source_name)
    return out


def check_paired_lengths(lengths: dict[str, np.ndarray], schema: Schema, source_name, first_line: int = 2) -> None:
    """The fields of one history (e.g. item_history and cate_history) describe the same events: equal lengths
    on every row, or an error naming the first row where they differ."""
    for group in schema.same_event_groups():
        first = group[0]
        for other in group[1:]:
            differ = np.flatnonzero(lengths[first] != lengths[other])
            if differ.size:
                r = int(differ[0])
                raise UserError(f"{located(source_name, first_line + r, other)}: {lengths[other][r]} events, but "
                                f"'{first}' has {lengths[first][r]}; the fields of one history describe the same "
                                "events")


def encode_features(table: pa.Table, schema: Schema, vocabs, numeric_stats, raw: dict | None = None,
                    source_name="<table>") -> dict[str, np.ndarray]:
    """The feature columns of raw values -> model inputs: ids through the fitted vocabularies (OOV = 1),
    sequences truncated to their newest max_len events (flat ids + offsets), numerics normalised.
    `raw` (from `_raw_tokens`) saves splitting the sequences again when the caller already has them."""
    raw = raw if raw is not None else _raw_tokens(table, schema, source_name)
    cols: dict[str, np.ndarray] = {}
    for f in schema.fields:
        if f.type == "numeric":
            x = table.column(f.name).to_numpy().astype(np.float64)
            cols[f.name] = normalize_numeric(x, f.normalize, numeric_stats.get(f.name)).astype(np.float32)
            continue
        tokens, lengths = raw[f.name]
        ids = _encode(tokens, vocabs[f.vocab])
        if f.type == "categorical":
            cols[f.name] = ids
        else:
            cols[f.name], cols[f.name + ".offsets"] = truncate_ragged(ids, lengths, f.max_len)
    return cols


def transform_split(table, raw, schema, vocabs, numeric_stats) -> dict[str, np.ndarray]:
    """A whole split: the encoded features plus the label and the group codes (for gAUC)."""
    cols: dict[str, np.ndarray] = {LABEL: table.column(schema.label).to_numpy().astype(np.float32)}
    if schema.group:
        cols[GROUP] = pc.dictionary_encode(table.column(schema.group).combine_chunks().cast(pa.string())).indices.to_numpy().astype(np.int64)
    cols.update(encode_features(table, schema, vocabs, numeric_stats, raw))
    return cols


def normalize_numeric(x: np.ndarray, how: str, stats: dict | None) -> np.ndarray:
    if how == "standard":
        return (x - stats["mean"]) / stats["std"]
    if how == "log1p":
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def denormalize_numeric(y: np.ndarray, how: str, stats: dict | None) -> np.ndarray:
    """The inverse of `normalize_numeric`: prepared values back to raw ones."""
    if how == "standard":
        return y * stats["std"] + stats["mean"]
    if how == "log1p":
        return np.sign(y) * np.expm1(np.abs(y))
    return y


def _fit_numeric(train: pa.Table, schema: Schema) -> dict:
    stats = {}
    for f in schema.of_type("numeric"):
        if f.normalize == "standard":
            x = train.column(f.name).to_numpy().astype(np.float64)
            std = float(x.std())
            stats[f.name] = {"mean": float(x.mean()), "std": std if std > 0 else 1.0}
    return stats


def _write_vectors(tmp: Path, vectors_of: dict, vocab_arrays: dict, folder: str) -> dict:
    """Align each vocabulary's (tokens, vectors) with its fitted vocabulary, row i + 2 the vector of vocabulary
    token i (rows 0 and 1, padding and OOV, and tokens without a vector are zeros), into `folder/<vocab>.npy`."""
    out = {}
    for name, (tokens, vectors) in vectors_of.items():
        if name not in vocab_arrays:
            raise UserError(f"{folder} vectors for '{name}', which is not a vocabulary of the schema "
                            f"({sorted(vocab_arrays)})")
        if isinstance(vocab_arrays[name], HashedTokens):
            raise UserError(f"{folder} vectors for '{name}', whose vocabulary is hashed (no token list to align)")
        vectors = np.asarray(vectors, dtype=np.float32)
        vocab = vocab_arrays[name]
        rows = pc.index_in(vocab, value_set=pa.array(tokens).cast(pa.string()))
        found = ~rows.is_null().to_numpy(zero_copy_only=False)
        matrix = np.zeros((len(vocab) + 2, vectors.shape[1]), dtype=np.float32)
        matrix[2:][found] = vectors[pc.fill_null(rows, 0).to_numpy(zero_copy_only=False)[found]]
        (tmp / folder).mkdir(exist_ok=True)
        np.save(tmp / folder / f"{name}.npy", matrix)
        out[name] = {"file": f"{folder}/{name}.npy", "dim": int(vectors.shape[1]), "freeze": True,
                     "found": int(found.sum()), "vocab": int(len(vocab))}
    return out


def fit_vocabularies(raw: dict, schema: Schema) -> dict[str, list[str]]:
    """The token list of every vocabulary but the hashed ones."""
    vocabs = {}
    for name in schema.vocabularies:
        if name in schema.hashed_vocabularies:
            continue
        owner = schema.field(name)
        vocabs[name] = _fit_vocab(vocabulary_tokens(raw, schema, name), owner.min_count or schema.min_count)
    return vocabs


def vocabulary_tokens(raw: dict, schema: Schema, vocabulary: str) -> list[pa.Array]:
    """The raw tokens of every field that shares `vocabulary`."""
    return [raw[f.name][0] for f in schema.fields if f.vocab == vocabulary]


def distinct_tokens(raw: dict, schema: Schema, vocabulary: str) -> int:
    tokens = vocabulary_tokens(raw, schema, vocabulary)
    return len(pc.unique(pa.chunked_array(tokens, type=pa.string()).combine_chunks()))


def source_stamps(paths: list[Path]) -> list[dict]:
    """Path, size and modification time of each source file. Path and size go into the cache key; a changed
    modification time alone falls back to the content digest recorded at preparation, so a copy with fresh
    times (cp or rsync without -t, a container build, a re-mounted share) still counts as the same source."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append({"path": str(Path(p).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def file_digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(schema: Schema, source_identity) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "schema": schema.to_dict(), "source": source_identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stale_reason(out_dir: Path, key: str, stamps: list[dict], log=print) -> str | None:
    """None when `out_dir` holds this preparation (same key, each source file unchanged by time or by content),
    else why not. Modification times found to differ while the contents match are refreshed in schema.json."""
    meta_path = Path(out_dir) / "schema.json"
    if not holds_prepared_dataset(Path(out_dir)):
        return "it holds no prepared dataset"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, OSError) as err:
        return f"its schema.json is unreadable ({err})"
    if "source_files" not in meta:
        return "it was prepared by an older loopctr, which recorded no digests of its sources"
    if meta.get("cache_key") != key:
        return "it was prepared from other source files or settings"
    recorded = {f["path"]: f for f in meta["source_files"]}
    touched = []
    for stamp in stamps:
        old = recorded[stamp["path"]]  # the same key means the same paths
        if old["mtime_ns"] == stamp["mtime_ns"]:
            continue
        if file_digest(stamp["path"]) != old["sha256"]:
            return f"{stamp['path']} changed since it was prepared"
        touched.append(Path(stamp["path"]).name)
        old["mtime_ns"] = stamp["mtime_ns"]
    if touched:
        log(f"{out_dir}: {', '.join(touched)}: new modification time, same contents")
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return None


def holds_prepared_dataset(directory: Path) -> bool:
    """A prepared dataset: schema.json naming its splits, a directory per split, and no run files (a run
    directory carries a copy of its dataset's schema.json, and must never be taken for, or replaced as, one)."""
    try:
        splits = json.loads((directory / "schema.json").read_text())["splits"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False
    run_files = ("config.yaml", "checkpoint.pt", "best.pt", "metrics.jsonl")
    return all((directory / name).is_dir() for name in splits) and not any((directory / f).exists() for f in run_files)


def _check_replaceable(out_dir: Path, overwrite: bool, why: str) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not holds_prepared_dataset(out_dir):
            raise UserError(f"{out_dir}: exists and is not a prepared dataset (a run directory, or other files); "
                            "choose another --out")
        if not overwrite:
            raise UserError(f"{out_dir}: holds a dataset that does not match: {why}; "
                            "pass --overwrite to replace it, or choose another --out")


def prepare_tables(schema: Schema, tables: dict[str, pa.Table], out_dir: Path, key: str, source_names: dict,
                   overwrite: bool = False, started: float | None = None, extra_meta: dict | None = None,
                   pretrained: dict | None = None, content: dict | None = None) -> dict:
    """Fit on tables['train'], transform every split, and write the prepared directory atomically.
    `started` is when reading the sources began, so that prepare_seconds covers the whole preparation.
    `extra_meta` is merged into schema.json (source layout and options, protocol, training defaults);
    `pretrained` maps a vocabulary to (tokens, vectors): the vectors are aligned with the fitted vocabulary
    and written to `pretrained/<vocab>.npy` (rows 0 and 1, padding and OOV, and unmatched tokens are zeros);
    `content` likewise to `content/<vocab>.npy`: item content vectors, which replace no embedding table (the
    models with `model.content_interest` read them, layers/content_interest.py); the file's items that the
    training split lacks are added to the vocabulary (cold-start items keep their content)."""
    out_dir = Path(out_dir)
    _check_replaceable(out_dir, overwrite, "it was prepared from other sources or settings")
    t0 = started if started is not None else time.perf_counter()
    raw = {split: _raw_tokens(table, schema, source_names[split]) for split, table in tables.items()}
    vocabs = fit_vocabularies(raw["train"], schema)
    added = {}
    for name, (tokens, _) in (content or {}).items():
        if name in vocabs:  # (a hashed vocabulary is refused by _write_vectors)
            # items of the catalogue that training never saw join the vocabulary: their id embeddings stay
            # untrained (as OOV's), but they reach their own content vector instead of the shared OOV row
            known = set(vocabs[name])
            new = [t for t in dict.fromkeys(tokens.to_pylist()) if t not in known]
            vocabs[name] = vocabs[name] + new
            added[name] = len(new)
    numeric_stats = _fit_numeric(tables["train"], schema)
    vocab_arrays = {name: pa.array(tokens, type=pa.string()) for name, tokens in vocabs.items()}
    for name in schema.hashed_vocabularies:
        vocab_arrays[name] = HashedTokens()
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
        pretrained_meta = _write_vectors(tmp, pretrained or {}, vocab_arrays, "pretrained")
        content_meta = _write_vectors(tmp, content or {}, vocab_arrays, "content")
        for name, count in added.items():
            content_meta[name]["added_to_vocabulary"] = count
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
            # a hashed vocabulary's size is that of the table it replaces: its distinct training tokens + 2
            "vocab_sizes": {name: 2 + (len(vocabs[name]) if name in vocabs
                                       else distinct_tokens(raw["train"], schema, name))
                            for name in schema.vocabularies},
            "numeric_stats": numeric_stats,
            "splits": splits,
            "prepare_seconds": round(time.perf_counter() - t0, 3),
        }
        if pretrained_meta:
            meta["pretrained"] = pretrained_meta
        if content_meta:
            meta["content"] = content_meta
        for name, value in (extra_meta or {}).items():
            meta.setdefault(name, value)
        (tmp / "schema.json").write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def prepare_dataset(dataset: str, out_dir, source_dir=None, overwrite: bool = False, synthetic_overrides=(),
                    log=print, test_as_valid: bool = False, content: dict | None = None) -> dict:
    """Prepare a built-in dataset or a schema YAML from `source_dir` (or the generated one) into `out_dir`.

    The catalogue entry names the source layout (`loopctr.data.sources.registry`) that reads the files;
    `synthetic_overrides` are `key=value` settings: the generator's for `synthetic`, the layout's options
    otherwise. `test_as_valid` is BARS's protocol (the test split doubles as validation, so models are
    selected on test): it is recorded in schema.json as `protocol.valid_is_test` so results can be labelled.
    `content` maps a vocabulary to a file of item content vectors (`loopctr.data.content`), aligned with the
    vocabulary into content/<vocab>.npy. Re-running with the same sources and settings reuses the existing result.
    """
    from loopctr.data import catalog
    from loopctr.data.content import read_item_vectors
    from loopctr.data.sources import registry

    started = time.perf_counter()
    entry = catalog.entry(dataset)
    schema = entry.schema
    out_dir = Path(out_dir)
    layout = registry.get(entry.layout)
    where = "synthetic dataset" if entry.layout == "synthetic" else f"dataset '{entry.name}' (layout {entry.layout})"
    options = registry.make_options(layout, entry.options, list(synthetic_overrides), where)
    if layout.needs_source:
        if source_dir is None:
            raise UserError(f"--source is required for dataset '{dataset}' "
                            f"(a directory with its files: {layout.help or sorted(schema.splits.values())})")
        source_dir = Path(source_dir)
        if not source_dir.is_dir():
            raise UserError(f"{source_dir}: source directory not found")
    if test_as_valid and not ({"valid", "test"} <= set(schema.splits)):
        raise UserError(f"--test-as-valid: dataset '{entry.name}' needs 'valid' and 'test' splits in its schema")
    ctx = registry.ReadContext(schema, source_dir, options, test_as_valid=test_as_valid, log=log)
    content = {vocab: Path(path) for vocab, path in (content or {}).items()}
    for vocab, path in content.items():
        if vocab not in schema.vocabularies:
            raise UserError(f"--content {vocab}=...: '{vocab}' is not a vocabulary of dataset '{entry.name}' "
                            f"({sorted(schema.vocabularies)})")
        if not path.is_file():
            raise UserError(f"--content {vocab}={path}: file not found")
    stamps = source_stamps(layout.files(ctx) + list(content.values()))
    identity = {"layout": layout.name, "options": registry.options_dict(options),
                "files": [[f["path"], f["size"]] for f in stamps], "test_as_valid": test_as_valid,
                **({"content": {v: str(p.resolve()) for v, p in content.items()}} if content else {})}
    key = cache_key(schema, identity)
    why = stale_reason(out_dir, key, stamps, log=log)
    if why is None:
        log(f"{out_dir}: up to date (same sources and settings); reusing it")
        return json.loads((out_dir / "schema.json").read_text())
    _check_replaceable(out_dir, overwrite, why)  # before reading: refusing should not cost a full read
    result = layout.read(ctx)
    stamps = [{**f, "sha256": file_digest(f["path"])} for f in stamps]
    tables, names = dict(result.tables), dict(result.names)
    protocol = {"valid_is_test": bool(test_as_valid)}
    if test_as_valid:
        tables["valid"], names["valid"] = tables["test"], names["test"] + " (the test split doubling as validation)"
        protocol["note"] = "BARS protocol: the test split doubles as validation (models are selected on test)"
    tables = {split: tables[split] for split in schema.splits if split in tables}
    extra = {"source": {"dataset": entry.name, "layout": layout.name, "options": registry.options_dict(options),
                        **({"dir": str(source_dir.resolve())} if layout.needs_source else {}), **result.info},
             "protocol": protocol, "defaults": entry.defaults, "source_files": stamps}
    meta = prepare_tables(schema, tables, out_dir, key, names, overwrite=overwrite, started=started,
                          extra_meta=extra, pretrained=result.pretrained,
                          content={vocab: read_item_vectors(path) for vocab, path in content.items()})
    rows = sum(s["rows"] for s in meta["splits"].values())
    log(f"prepared {rows:,} rows into {out_dir} in {meta['prepare_seconds']:.2f}s "
        f"({rows / max(meta['prepare_seconds'], 1e-9):,.0f} rows/s)")
    return meta


def prepare_frames(schema, frames: dict, out_dir, overwrite: bool = False, log=print) -> dict:
    """Prepare in-memory splits: `frames` maps split names (train required) to pandas DataFrames or pyarrow
    Tables with the schema's columns; `schema` is a catalogue name, a schema YAML path or a `Schema`. The
    tables are checked as files are (`check_table`), and the same tables prepared again reuse the result."""
    from loopctr.data import catalog
    from loopctr.data.sources.registry import check_table

    if isinstance(schema, (str, Path)):
        schema = catalog.entry(str(schema)).schema
    if "train" not in frames:
        raise UserError(f"prepare_frames: needs a 'train' split (got {sorted(frames)})")
    tables, digest = {}, hashlib.sha256()
    for split, frame in frames.items():
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        tables[split] = check_table(table, schema, f"prepare_frames: split '{split}'")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, tables[split].schema) as writer:
            writer.write_table(tables[split])
        digest.update(split.encode() + sink.getvalue().to_pybytes())
    key = cache_key(schema, {"frames": digest.hexdigest()})
    out_dir = Path(out_dir)
    if stale_reason(out_dir, key, [], log=log) is None:  # no source files: the key covers the tables' bytes
        log(f"{out_dir}: up to date (the same tables); reusing it")
        return json.loads((out_dir / "schema.json").read_text())
    names = {split: f"prepare_frames: split '{split}'" for split in tables}
    return prepare_tables(schema, tables, out_dir, key, names, overwrite=overwrite,
                          extra_meta={"source": {"frames": sorted(tables)}, "source_files": []})
