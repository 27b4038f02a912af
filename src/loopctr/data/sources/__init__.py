"""Read source files into Arrow tables of raw values, one per split, validating as they go.

A source module only turns files into columns: it never fits vocabularies or writes anything. This module
reads CSV splits described by a schema (the x1 layouts and users' own files); the fast path is pyarrow's
multi-threaded CSV reader, and when it rejects a file a slow line-by-line scan finds the exact line and
column to name in the error. Other layouts get a module of their own beside this one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from loopctr.data.schema import Schema
from loopctr.errors import UserError, located


def needed_columns(schema: Schema) -> list[str]:
    cols = [schema.label] + schema.field_names
    if schema.group and schema.group not in cols:
        cols.append(schema.group)
    return cols


def _read_header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    try:
        first = first.decode("utf-8-sig")  # a byte-order mark, as spreadsheet exports write, is not a column name
    except UnicodeDecodeError:
        raise _non_utf8_line(path, delimiter) from None
    if not first.strip():
        raise UserError(f"{located(path, 1)}: the file is empty; expected a header line with the column names")
    header = next(csv.reader(io.StringIO(first), delimiter=delimiter))
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{located(path, 1)}: column(s) {repeated} appear more than once in the header; a reader "
                        "would have to guess which one is meant: rename or drop the copies")
    return header


def _non_utf8_line(path: Path, delimiter: str) -> UserError | None:
    """The error naming the first line with bytes that are not UTF-8, and their column; None if there is none."""
    with open(path, "rb") as fh:
        header = None
        for line_number, line in enumerate(fh, start=1):
            try:
                text = line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                column = line[:exc.start].count(delimiter.encode())
                name = header[column] if header and column < len(header) else None
                return UserError(f"{located(path, line_number, name)}: byte {line[exc.start]:#04x} is not UTF-8 "
                                 "text; re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
            if header is None:
                header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    return None


def _locate_bad_row(path: Path, schema: Schema, header: list[str], numeric: set[str]) -> UserError:
    """Slow scan (only on the error path) for the first row that is not UTF-8, has a wrong column count or a
    non-numeric value."""
    not_utf8 = _non_utf8_line(path, schema.delimiter)
    if not_utf8 is not None:
        return not_utf8
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=schema.delimiter)
        next(reader)
        for row in reader:
            line = reader.line_num
            if len(row) != len(header):
                return UserError(
                    f"{located(path, line)}: expected {len(header)} columns ({schema.delimiter!r}-separated, "
                    f"as in the header) but found {len(row)}; fix or remove this line"
                )
            for name, value in zip(header, row):
                if name in numeric:
                    try:
                        float(value)
                    except ValueError:
                        return UserError(f"{located(path, line, name)}: '{value}' is not a number")
    return UserError(f"{path}: could not be parsed as CSV")


def read_csv_split(path: Path, schema: Schema) -> pa.Table:
    """Read one split's CSV, keeping only the schema's columns, as strings (numeric fields and the label as float64)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected the '{path.name}' split of dataset '{schema.name}')")
    header = _read_header(path, schema.delimiter)
    wanted = needed_columns(schema)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise UserError(
            f"{located(path, 1)}: missing column(s) {missing}; the header has {header}. "
            "Rename the columns or declare a schema that matches the file"
        )
    numeric = {f.name for f in schema.of_type("numeric")} | {schema.label}
    types = {c: (pa.float64() if c in numeric else pa.string()) for c in wanted}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=schema.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=wanted, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        raise _locate_bad_row(path, schema, header, numeric) from None
    if table.num_rows == 0:
        raise UserError(f"{located(path, 2)}: the file has a header but no data rows")
    check_values(table, schema, path, first_line=2)
    return table


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def check_values(table: pa.Table, schema: Schema, path, first_line: int = 2) -> None:
    """Labels in {0, 1}; numeric values present and finite. `first_line` is the file line of row 0."""
    label = table.column(schema.label).to_numpy(zero_copy_only=False)
    row = _first_bad(~np.isin(label, (0.0, 1.0)))
    if row is not None:
        raise UserError(
            f"{located(path, first_line + row, schema.label)}: label is {label[row]!r}; labels must be 0 or 1"
        )
    for f in schema.of_type("numeric"):
        values = table.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
        row = _first_bad(~np.isfinite(values))
        if row is not None:
            raise UserError(
                f"{located(path, first_line + row, f.name)}: numeric value is missing, NaN or infinite; "
                "fill it in the source (e.g. with 0) or drop the row"
            )


def split_sequence(column: pa.ChunkedArray | pa.Array, separator: str, path, field: str, first_line: int = 2):
    """Split separator-joined strings into (flat tokens, per-row lengths). An empty string is an empty sequence;
    an empty token inside a non-empty string ("3^^4", "3^") is an error naming its line."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lists = pc.split_pattern(column, pattern=separator)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = pc.list_flatten(lists)
    empty_row = pc.equal(column, "").to_numpy(zero_copy_only=False)
    empty_token = pc.equal(tokens, "").to_numpy(zero_copy_only=False)
    if empty_token.any():
        token_row = np.repeat(np.arange(len(lengths)), lengths)
        bad = empty_token & ~empty_row[token_row]
        row = _first_bad(bad)
        if row is not None:
            r = int(token_row[row])
            raise UserError(
                f"{located(path, first_line + r, field)}: malformed sequence {column[r].as_py()!r}: "
                f"empty token between '{separator}' separators"
            )
        tokens = tokens.filter(pa.array(~empty_token))
        lengths[empty_row] = 0
    return tokens, lengths
