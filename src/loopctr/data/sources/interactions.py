"""Interaction logs in their public layouts, turned into CTR samples by the DIN protocol
(`loopctr.data.din_protocol`).

Layouts read here (`format=`):
- `table`: a CSV or parquet file with user, item, time and optional category columns;
- `sequences`: one line per user, `uid i1 i2 ... in` in time order (S3Rec's `Beauty.txt`), with an optional
  `*_item2attributes.json` (`{"item": [attr, ...]}`; one category per item: see `pick_categories`) and,
  for Amazon, optional times from `<X>_time_org_rank.txt` (aligned position by position);
- `pairs`: `uid iid [time]` lines grouped by user, in time order within a user;
- `mcauley`: `reviews_*.json(.gz)` (one JSON object per line: reviewerID, asin, unixReviewTime) with an
  optional `meta_*.json(.gz)` (asin, categories): the category is the last entry of the last category
  path, as in DIN's preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopctr.data.sources.registry import Layout, ReadContext, SourceResult, register
from loopctr.errors import UserError, located

from loopctr.data.din_protocol import NO_CATEGORY, X1_COLUMNS, Log, categories_array, din_protocol, pick_categories


def _read_text(path: Path, truncated_ok: bool = False) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        import zlib

        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = d.decompress(data)
        except zlib.error as exc:
            raise UserError(f"{path}: not a valid gzip file ({exc})") from None
        if not d.eof:
            if not truncated_ok:
                raise UserError(f"{path}: the gzip stream is truncated (an interrupted download?); download it "
                                "again, or pass truncated_ok=true to use the complete lines it holds")
            out = out[:out.rfind(b"\n") + 1]  # drop the incomplete last line
        data = out
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None


def _encode(tokens: list[str]) -> tuple[np.ndarray, pa.Array]:
    enc = pc.dictionary_encode(pa.array(tokens, pa.string()))
    return enc.indices.to_numpy().astype(np.int64), enc.dictionary


def read_sequences(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """`uid i1 i2 ...` lines: (user ids, item lists, line numbers); errors name file and line."""
    users, seqs, lines = [], [], []
    seen: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1:
            sep = next((c for c in ",;|\t^" if c in parts[0]), None)
            if sep:
                raise UserError(f"{located(path, number)}: found '{sep}' but the items must be separated by "
                                f"spaces: 'uid item1 item2 ...'")
            raise UserError(f"{located(path, number)}: user '{parts[0]}' has no items; expected 'uid item1 item2 ...'")
        if parts[0] in seen:
            raise UserError(f"{located(path, number)}: user '{parts[0]}' already has a line ({seen[parts[0]]}); "
                            "expected one line per user")
        seen[parts[0]] = number
        users.append(parts[0])
        seqs.append(parts[1:])
        lines.append(number)
    if not users:
        raise UserError(f"{located(path, 1)}: the file is empty")
    return users, seqs, lines


def read_attributes(path: Path, items: set[str], log_name: str) -> dict[str, list]:
    text = _read_text(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{located(path, exc.lineno)}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{located(path, 1)}: expected an object {{\"item_id\": [attribute ids]}}")
    for key, value in raw.items():
        if key not in items:
            at = text.find(f'"{key}"')
            line = text.count("\n", 0, at) + 1 if at >= 0 else 1
            raise UserError(f"{located(path, line)}, item '{key}': unknown id, not an item of {log_name}; "
                            "the attribute file does not belong to this log")
        if not isinstance(value, list) or not all(isinstance(a, (int, str)) for a in value):
            at = text.find(f'"{key}"')
            line = text.count("\n", 0, at) + 1 if at >= 0 else 1
            raise UserError(f"{located(path, line)}, item '{key}': expected a list of attribute ids, got {value!r}")
    return raw


def _times_for_sequences(ctx_dir: Path, prefix: str, users: list[str], seqs: list[list[str]]) -> np.ndarray | None:
    """Unix times for `X.txt` from `<P>_time_org_rank.txt` (same users, same lengths, times aligned position by
    position with `<P>_item_org_rank.txt`). Sorted per user, they attach to X.txt's time-ordered positions."""
    candidates = sorted(ctx_dir.glob("*_time_org_rank.txt"))
    if not candidates:
        return None
    path = candidates[0]
    times: dict[str, list[str]] = {}
    line_of: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        parts = line.split()
        if parts:
            times[parts[0]] = parts[1:]
            line_of[parts[0]] = number
    out = []
    for user, seq in zip(users, seqs):
        t = times.get(user)
        if t is None:
            raise UserError(f"{path}: user '{user}' of {prefix} has no line; the time file does not match the log")
        if len(t) != len(seq):
            raise UserError(f"{located(path, line_of[user])}: user '{user}' has {len(t)} times but {len(seq)} items "
                            f"in the log; the time file does not match the log")
        out.append(t)
    try:
        flat = np.array([v for t in out for v in t], dtype=np.int64)
    except ValueError:
        raise UserError(f"{path}: times must be integers (unix seconds)") from None
    lengths = np.array([len(t) for t in out])
    order = np.lexsort((flat, np.repeat(np.arange(len(out)), lengths)))  # each user's times, ascending
    return flat[order]


def log_from_sequences(path: Path, attributes: Path | None, category: str, want_times: bool) -> tuple[Log, dict]:
    users, seqs, _ = read_sequences(path)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    user = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    item, item_tokens = _encode([i for s in seqs for i in s])
    info = {"format": "sequences", "file": path.name}
    cates = {}
    if attributes is not None:
        raw = read_attributes(attributes, set(item_tokens.to_pylist()), path.name)
        cates = pick_categories(raw, category)
        info["attributes"] = attributes.name
    times = None
    if want_times:
        times = _times_for_sequences(path.parent, path.stem, users, seqs)
        if times is None:
            raise UserError(f"{path.parent}: no *_time_org_rank.txt with times for {path.name}; "
                            "use split=leave_last_out and same_time_history=true (order only)")
        info["times"] = "from *_time_org_rank.txt"
    log = Log(user, item, pa.array(users, pa.string()), item_tokens, categories_array(item_tokens, cates),
              times, source=str(path))
    return log, info


def log_from_pairs(path: Path) -> tuple[Log, dict]:
    """`uid iid [time]` lines, grouped by user, in time order within each user."""
    users, items, times, lines = [], [], [], []
    width = None
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        parts = line.split()
        if not parts:
            continue
        if width is None:
            width = len(parts)
            if width not in (2, 3):
                raise UserError(f"{located(path, number)}: expected 'uid iid' or 'uid iid time', found {len(parts)} "
                                "space-separated values")
        if len(parts) != width:
            raise UserError(f"{located(path, number)}: expected {width} space-separated values (as on the first "
                            f"line), found {len(parts)}")
        users.append(parts[0])
        items.append(parts[1])
        if width == 3:
            times.append(parts[2])
        lines.append(number)
    if not users:
        raise UserError(f"{located(path, 1)}: the file is empty")
    user, user_tokens = _encode(users)
    first = np.r_[True, user[1:] != user[:-1]]
    starts = np.flatnonzero(first)
    _, at = np.unique(user[starts], return_index=True)
    if at.shape[0] != starts.shape[0]:
        dup = np.setdiff1d(np.arange(starts.shape[0]), at)[0]
        raise UserError(f"{located(path, lines[starts[dup]])}: user '{users[starts[dup]]}' appears again after "
                        "other users' lines; the lines must be grouped by user (in time order)")
    item, item_tokens = _encode(items)
    t = None
    if times:
        try:
            t = np.array(times, dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(times) if not _is_number(v))
            raise UserError(f"{located(path, lines[bad], 'time')}: '{times[bad]}' is not a number") from None
    log = Log(user, item, user_tokens, item_tokens, pa.array([NO_CATEGORY] * len(item_tokens), pa.string()),
              t, source=str(path))
    if t is not None:
        back = np.flatnonzero((~first[1:]) & (t[1:] < t[:-1]))
        if back.size:
            raise UserError(f"{located(path, lines[back[0] + 1], 'time')}: earlier than the user's previous line; "
                            "each user's lines must be in time order")
    return log, {"format": "pairs", "file": path.name}


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _json_lines(path: Path, truncated_ok: bool = False):
    import ast

    for number, line in enumerate(_read_text(path, truncated_ok).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            try:  # the 2014 metadata files are Python literals, not JSON
                yield number, ast.literal_eval(line)
            except (ValueError, SyntaxError):
                raise UserError(f"{located(path, number)}: not a JSON object (one review/product per line)") from None


def log_from_mcauley(reviews: Path, meta: Path | None, truncated_ok: bool = False) -> tuple[Log, dict]:
    users, items, times = [], [], []
    for number, obj in _json_lines(reviews, truncated_ok):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if not isinstance(obj, dict) or key not in obj:
                raise UserError(f"{located(reviews, number, key)}: missing; each line must be a review with "
                                "reviewerID, asin and unixReviewTime")
        if not isinstance(obj["unixReviewTime"], (int, float)):
            raise UserError(f"{located(reviews, number, 'unixReviewTime')}: {obj['unixReviewTime']!r} is not a number")
        users.append(str(obj["reviewerID"]))
        items.append(str(obj["asin"]))
        times.append(obj["unixReviewTime"])
    if not users:
        raise UserError(f"{located(reviews, 1)}: no reviews")
    user, user_tokens = _encode(users)
    item, item_tokens = _encode(items)
    t = np.array(times, dtype=np.int64)
    order = np.lexsort((np.arange(t.shape[0]), t, user))  # by user, then time; ties keep the file's order
    cates: dict[str, str] = {}
    info = {"format": "mcauley", "file": reviews.name}
    if meta is not None:
        wanted = set(items)
        for number, obj in _json_lines(meta, truncated_ok):
            if not isinstance(obj, dict) or "asin" not in obj:
                raise UserError(f"{located(meta, number, 'asin')}: missing; each line must be a product with an asin")
            if obj["asin"] not in wanted:
                continue
            paths = obj.get("categories", obj.get("category"))
            if paths and isinstance(paths[-1], list):
                paths = paths[-1]
            if paths:
                cates[str(obj["asin"])] = str(paths[-1])
        info["meta"] = meta.name
    log = Log(user[order], item[order], user_tokens, item_tokens, categories_array(item_tokens, cates), t[order],
              source=str(reviews))
    return log, info


def log_from_table(path: Path, user_col: str, item_col: str, time_col: str, category_col: str) -> tuple[Log, dict]:
    """A CSV (header line) or parquet log with user, item, time and optional category columns."""
    import pyarrow.csv as pacsv

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        first_line = 1
    else:
        try:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in (user_col, item_col, category_col) if c},
                strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            raise UserError(f"{path}: could not be parsed as CSV with a header line ({exc})") from None
        first_line = 2
    names = table.column_names
    needed = [c for c in (user_col, item_col, time_col) if c]
    missing = [c for c in needed if c not in names]
    if missing:
        raise UserError(f"{located(path, 1)}: missing column(s) {missing}; the header has {names}. "
                        "Name the columns with user_col=, item_col=, time_col=")
    if table.num_rows == 0:
        raise UserError(f"{located(path, first_line)}: no rows")
    cols = {}
    for c in (user_col, item_col):
        col = table.column(c).cast(pa.string())
        bad = pc.or_kleene(col.is_null(), pc.equal(col, "")).to_numpy(zero_copy_only=False)
        if bad.any():
            raise UserError(f"{located(path, first_line + int(np.flatnonzero(bad)[0]), c)}: empty id")
        cols[c] = col.combine_chunks()
    try:
        t = table.column(time_col).cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = table.column(time_col).cast(pa.string()).to_pylist()
        bad = next(i for i, v in enumerate(values) if v is None or not _is_number(v))
        raise UserError(f"{located(path, first_line + bad, time_col)}: '{values[bad]}' is not a number") from None
    if not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise UserError(f"{located(path, first_line + bad, time_col)}: time is missing or not finite")
    user, user_tokens = _encode(cols[user_col].to_pylist())
    item, item_tokens = _encode(cols[item_col].to_pylist())
    cates: dict[str, str] = {}
    info = {"format": "table", "file": path.name}
    if category_col and category_col in names:
        cate = table.column(category_col).cast(pa.string()).to_pylist()
        seen: dict[str, tuple[str, int]] = {}
        for row, (it, c) in enumerate(zip(cols[item_col].to_pylist(), cate)):
            c = NO_CATEGORY if c in (None, "") else c
            prev = seen.get(it)
            if prev is None:
                seen[it] = (c, row)
            elif prev[0] != c:
                raise UserError(f"{located(path, first_line + row, category_col)}: item '{it}' has category '{c}' "
                                f"here but '{prev[0]}' on line {first_line + prev[1]}; one category per item")
        cates = {it: c for it, (c, _) in seen.items()}
        info["category_col"] = category_col
    order = np.lexsort((np.arange(t.shape[0]), t, user))
    log = Log(user[order], item[order], user_tokens, item_tokens, categories_array(item_tokens, cates), t[order],
              source=str(path))
    return log, info


# -- the layout ---------------------------------------------------------------------------------------------


@dataclass
class InteractionOptions:
    format: Literal["auto", "table", "sequences", "pairs", "mcauley"] = "auto"
    file: str = ""  # the log file in the source directory (default: found by its name)
    attributes: str = ""  # sequences: the item2attributes JSON (default: *_item2attributes.json if present)
    meta: str = ""  # mcauley: the meta_*.json(.gz) file (default: found by its name if present)
    category: Literal["last", "first"] = "last"  # sequences: which remaining attribute is the category
    user_col: str = "user_id"  # table: column names
    item_col: str = "item_id"
    time_col: str = "time"
    category_col: str = "cate_id"
    max_history: int = 100  # newest events kept per behaviour sequence (the schema's max_len also applies)
    negatives: int = 1  # negatives per positive
    split: Literal["leave_last_out", "time"] = "leave_last_out"
    valid_fraction: float = 0.1  # split=time: the share of samples (by time) in valid and in test
    test_fraction: float = 0.1
    same_time_history: bool = True  # an event earlier in the log on the same timestamp counts as history
    seed: int = 2024  # negative sampling
    truncated_ok: bool = False  # mcauley: accept a truncated .gz (its complete lines), e.g. a sample

    def validate(self):
        if self.max_history < 1 or self.negatives < 1:
            raise UserError("max_history and negatives must be >= 1")
        if not (0 < self.valid_fraction < 1 and 0 < self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise UserError("valid_fraction and test_fraction must be in (0, 1) and sum to less than 1")


def _find(directory: Path, patterns: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[Path]:
    found = []
    for pattern in patterns:
        found += [p for p in sorted(directory.glob(pattern)) if not any(p.name.endswith(e) for e in exclude)]
    return found


def _resolve_files(directory: Path, o: InteractionOptions) -> tuple[str, Path, Path | None]:
    """(format, log file, attribute/meta file or None) for the source directory."""
    directory = Path(directory)
    fmt = o.format
    log_file = directory / o.file if o.file else None
    if log_file is not None and not log_file.is_file():
        raise UserError(f"{log_file}: file not found (file=)")
    if fmt == "auto":
        if log_file is not None:
            name = log_file.name
            fmt = ("mcauley" if name.startswith("reviews_") else "table" if log_file.suffix in (".csv", ".parquet")
                   else "sequences")
        elif _find(directory, ("reviews_*.json", "reviews_*.json.gz")):
            fmt = "mcauley"
        elif _find(directory, ("*.txt",), ("_org_rank.txt",)):
            fmt = "sequences"
        elif _find(directory, ("*.csv", "*.parquet")):
            fmt = "table"
        else:
            raise UserError(f"{directory}: no interaction log found (a *.txt of 'uid item ...' lines, a "
                            "reviews_*.json(.gz), or a *.csv / *.parquet with user, item and time columns)")
        if fmt == "sequences":
            candidate = log_file or _find(directory, ("*.txt",), ("_org_rank.txt",))[0]
            if _looks_like_pairs(candidate):
                fmt = "pairs"
    if log_file is None:
        patterns = {"mcauley": ("reviews_*.json.gz", "reviews_*.json"), "sequences": ("*.txt",),
                    "pairs": ("*.txt", "*.inter"), "table": ("*.csv", "*.parquet")}[fmt]
        found = _find(directory, patterns, ("_org_rank.txt",))
        if not found:
            raise UserError(f"{directory}: no log file for format={fmt} ({' or '.join(patterns)})")
        if len(found) > 1:
            raise UserError(f"{directory}: several candidate log files {[p.name for p in found]}; name one with file=")
        log_file = found[0]
    side = None
    if fmt == "sequences":
        if o.attributes:
            side = require(directory / o.attributes, "attributes=")
        else:
            found = _find(directory, ("*_item2attributes.json",))
            side = found[0] if found else None
    elif fmt == "mcauley":
        if o.meta:
            side = require(directory / o.meta, "meta=")
        else:
            found = _find(directory, ("meta_*.json.gz", "meta_*.json"))
            side = found[0] if found else None
    return fmt, log_file, side


def require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: file not found ({what})")
    return path


def _looks_like_pairs(path: Path) -> bool:
    """A user id on several lines: `uid iid` pairs rather than one line per user."""
    seen = set()
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i > 2000:
                break
            parts = line.split()
            if parts:
                if parts[0] in seen:
                    return True
                seen.add(parts[0])
    return False


def load_log(directory: Path, o: InteractionOptions) -> tuple[Log, dict]:
    fmt, log_file, side = _resolve_files(directory, o)
    want_times = o.split == "time" or not o.same_time_history
    if fmt == "sequences":
        return log_from_sequences(log_file, side, o.category, want_times)
    if fmt == "pairs":
        return log_from_pairs(log_file)
    if fmt == "mcauley":
        return log_from_mcauley(log_file, side, o.truncated_ok)
    return log_from_table(log_file, o.user_col, o.item_col, o.time_col, o.category_col)


def _files(ctx: ReadContext) -> list[Path]:
    fmt, log_file, side = _resolve_files(ctx.source_dir, ctx.options)
    files = [log_file] + ([side] if side else [])
    if fmt == "sequences" and (ctx.options.split == "time" or not ctx.options.same_time_history):
        files += _find(Path(ctx.source_dir), ("*_time_org_rank.txt",))
    return files


def read_interactions(ctx: ReadContext) -> SourceResult:
    o = ctx.options
    missing = [c for c in X1_COLUMNS if c != ctx.schema.label and c not in ctx.schema.field_names + [ctx.schema.group]]
    if missing or ctx.schema.label != "label":
        raise UserError(f"layout 'interactions' builds the columns {list(X1_COLUMNS)}; schema '{ctx.schema.name}' "
                        "must use them (as amazon-electronics-x1 does)")
    log, info = load_log(ctx.source_dir, o)
    tables = din_protocol(log, max_history=o.max_history, negatives=o.negatives, split=o.split,
                          valid_fraction=o.valid_fraction, test_fraction=o.test_fraction,
                          same_time_history=o.same_time_history, seed=o.seed)
    if ctx.test_as_valid:
        tables["train"] = pa.concat_tables([tables["train"], tables.pop("valid")])
    for split, table in tables.items():
        if table.num_rows == 0:
            raise UserError(f"{log.source}: the '{split}' split is empty (too few events per user for "
                            f"split={o.split})")
    users = int(np.unique(log.user).shape[0])
    info.update({"protocol": "din", "users": users, "items": int(np.unique(log.item).shape[0]),
                 "interactions": int(log.user.shape[0]), "split": o.split,
                 "same_time_history": o.same_time_history})
    names = {split: f"{log.source} ({split} samples)" for split in tables}
    return SourceResult(tables, names, info=info)


register(Layout("interactions", InteractionOptions, read_interactions, _files,
                help="a time-ordered interaction log: *.csv/*.parquet (user, item, time[, category]), "
                     "'uid i1 i2 ...' lines (+ *_item2attributes.json), 'uid iid' lines, or McAuley "
                     "reviews_*.json(.gz) (+ meta_*.json(.gz))"))
