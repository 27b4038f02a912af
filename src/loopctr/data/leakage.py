"""Leakage checks on a prepared dataset, for `loopctr data info` and `loopctr prepare`.

Two mistakes of split building that inflate test AUC without warning: an evaluation row that repeats a training
row exactly (every feature, the whole history: the same user at the same moment, seen with its label in
training), and a history that already holds the event it is meant to predict (the target is the history's
newest event: the history was cut after, not before, the impression). The second is read by label: when
positives show it far more often than negatives, the history leaks the label.
"""

from __future__ import annotations

import numpy as np

from loopctr.data.dataset import PreparedDataset, SplitData
from loopctr.data.schema import Schema

_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _mixed(values: np.ndarray, salt: int) -> np.ndarray:
    """A 64-bit mix of ids (wrapping arithmetic), different for each `salt` (the column, the position)."""
    x = values.astype(np.uint64) * _MIX[0] + np.uint64(salt) * _MIX[1]
    return (x ^ (x >> np.uint64(31))) * _MIX[2]


def row_fingerprints(split: SplitData, schema: Schema) -> np.ndarray:
    """(rows,) uint64: equal for rows equal in every feature column (sequences event by event)."""
    out = np.zeros(split.rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, f in enumerate(schema.fields):
            values = np.asarray(split.column(f.name))
            if f.type == "numeric":
                values = values.astype(np.float32).view(np.uint32)
            if f.type != "sequence":
                out += _mixed(values, 2 * i)
                continue
            offsets = np.asarray(split.column(f.name + ".offsets"))
            position = np.arange(values.shape[0]) - np.repeat(offsets[:-1], np.diff(offsets))
            events = _mixed(_mixed(values, 2 * i + 1) ^ position.astype(np.uint64), 0)
            sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(events, dtype=np.uint64)])
            out += _mixed(sums[offsets[1:]] - sums[offsets[:-1]] + np.diff(offsets).astype(np.uint64), 2 * i + 1)
    return out


def target_is_newest_event(split: SplitData, schema: Schema) -> dict[str, np.ndarray]:
    """target field -> (rows,) bool: the target's id is its history's newest event."""
    out = {}
    for target, history in schema.sequence_targets():
        spec = schema.field(history)
        ids, offsets = np.asarray(split.column(history)), np.asarray(split.column(history + ".offsets"))
        lengths = np.diff(offsets)
        newest = offsets[1:] - 1 if spec.padding == "pre" else offsets[:-1]  # "pre": the newest event is last
        hit = np.zeros(split.rows, dtype=bool)
        has = lengths > 0
        hit[has] = ids[newest[has]] == np.asarray(split.column(target))[has]
        out[target] = hit
    return out


def leakage_report(ds: PreparedDataset) -> list[dict]:
    """Per split: rows repeating a training row (and how many with its label too), and for each target field the
    share of positives and of negatives whose history ends with the target."""
    train = ds.split("train")
    train_rows = row_fingerprints(train, ds.schema)
    train_pairs = set(zip(train_rows.tolist(), np.asarray(train.labels).tolist()))
    report = []
    for name in ds.split_names:
        split = ds.split(name)
        labels = np.asarray(split.labels)
        positive = labels == 1
        row = {"split": name, "rows": int(split.rows)}
        if name != "train":
            fingerprints = row_fingerprints(split, ds.schema)
            repeats = np.isin(fingerprints, train_rows)
            row["repeats train"] = int(repeats.sum())
            row["with its label"] = sum(pair in train_pairs for pair in
                                        zip(fingerprints[repeats].tolist(), labels[repeats].tolist()))
        for target, hit in target_is_newest_event(split, ds.schema).items():
            row[f"{target} newest event: positives"] = float(hit[positive].mean()) if positive.any() else 0.0
            row[f"{target} newest event: negatives"] = float(hit[~positive].mean()) if (~positive).any() else 0.0
        report.append(row)
    return report


def leakage_warnings(report: list[dict]) -> list[str]:
    """The findings of `leakage_report` worth a user's attention, one line each."""
    lines = []
    for row in report:
        if row.get("repeats train"):
            lines.append(f"{row['split']}: {row['repeats train']:,} of {row['rows']:,} rows repeat a training row in "
                         f"every feature ({row['with its label']:,} with its label too)")
        for key, share in row.items():
            if key.endswith("newest event: positives"):
                negatives = row[key.replace("positives", "negatives")]
                if share > 0.5 and share > 2 * negatives:
                    target = key.split(" ")[0]
                    lines.append(f"{row['split']}: the history of {share:.0%} of the positives (of {negatives:.0%} "
                                 f"of the negatives) ends with the target {target}: it may hold the event it predicts")
    return lines
