"""Item vectors from a file the user gives: item id -> vector (visual, text or any content embedding).

One reader for every format, returning (id tokens, [items, dim] float32):
- `.npz` with arrays `key` (ids) and `value` ([items, dim]);
- `.h5` / `.hdf5` with datasets `key` and `value` (KuaiVideo_x1's item_visual_emb_dim64.h5; needs h5py, the
  optional extra `loopctr[h5]`);
- `.parquet` whose first column is the id and whose vector is either one list column or the remaining numeric
  columns;
- `.npy`: a 2-D numeric array whose column 0 is the (integer) item id and whose other columns are the vector.

Ids are compared as strings with the vocabulary's tokens (so an integer id 7 matches the token "7").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from loopctr.errors import UserError

FORMATS = (".npz", ".h5", ".hdf5", ".parquet", ".npy")


def _read_key_value(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                return data["key"], data["value"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: expected a .npz with arrays 'key' and 'value' ({exc})") from None
    try:
        import h5py
    except ImportError:
        raise UserError(f"{path}: reading HDF5 needs h5py, an optional extra: pip install 'loopctr[h5]' "
                        "(or convert it once to a .npz with arrays key and value)") from None
    try:
        with h5py.File(path, "r") as h5:
            return h5["key"][:], h5["value"][:]
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: expected an HDF5 file with datasets 'key' and 'value' ({exc})") from None


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None
    if table.num_columns < 2:
        raise UserError(f"{path}: needs an id column and a vector (one list column, or numeric columns)")
    keys = table.column(0).to_numpy(zero_copy_only=False)
    rest = table.columns[1:]
    if len(rest) == 1 and (pa.types.is_list(rest[0].type) or pa.types.is_fixed_size_list(rest[0].type)):
        rows = rest[0].to_pylist()
        if len({len(r) if r is not None else -1 for r in rows}) != 1 or rows and rows[0] is None:
            raise UserError(f"{path}: the vectors in column '{table.column_names[1]}' differ in length or are null")
        return keys, np.asarray(rows, dtype=np.float32)
    try:
        return keys, np.stack([c.to_numpy(zero_copy_only=False) for c in rest], axis=1).astype(np.float32)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: the columns after the id must be numeric ({exc})") from None


def read_item_vectors(path) -> tuple[pa.Array, np.ndarray]:
    """(id tokens, [items, dim] float32) from any of `FORMATS`, checked: one vector per id, finite values."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: content vector file not found")
    if path.suffix not in FORMATS:
        raise UserError(f"{path}: content vectors must be one of {', '.join(FORMATS)}")
    if path.suffix == ".parquet":
        keys, values = _read_parquet(path)
    elif path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2 or array.shape[1] < 2 or array.dtype.kind not in "iuf":
            raise UserError(f"{path}: a .npy must be a numeric [items, 1 + dim] array, id in column 0 "
                            f"(got {array.dtype} {array.shape})")
        if not np.array_equal(array[:, 0], np.round(array[:, 0])):
            raise UserError(f"{path}: column 0 of a .npy holds the item ids and must be whole numbers")
        keys, values = array[:, 0].astype(np.int64), array[:, 1:]
    else:
        keys, values = _read_key_value(path)
    values = np.asarray(values, dtype=np.float32)
    keys = np.asarray(keys).ravel()
    if values.ndim != 2 or values.shape[0] != keys.shape[0]:
        raise UserError(f"{path}: the vectors must be [len(ids), dim]; got ids {keys.shape}, vectors {values.shape}")
    tokens = [k.decode() if isinstance(k, bytes) else str(k) for k in keys.tolist()]
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise UserError(f"{path}: the vector of id {tokens[row]!r} (row {row}) has NaN or infinite values")
    if len(set(tokens)) != len(tokens):
        dup = next(t for t, n in Counter(tokens).items() if n > 1)
        raise UserError(f"{path}: id {dup!r} has more than one vector")
    return pa.array(tokens, pa.string()), values
