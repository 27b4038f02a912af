"""The DIN protocol: CTR samples from any time-ordered interaction log (used by the log layouts and the
synthetic generator).

Order each user's events by time; for every event after the user's first, emit a positive sample (the item
and its category, label 1) and `negatives` negative samples (a random item the user never interacted with,
at any time, with its category, label 0), each with the user's earlier items and categories as the
behaviour sequence (most recent last, the newest `max_history`). Splits: leave-last-out per user (test =
last event, valid = the second-to-last, train = the rest) or by time (global cut-offs). Events sharing a
timestamp: with `same_time_history` (the default, as in the published benchmark splits) an event that comes
earlier in the log's order counts as history even on the same timestamp; without it, a history holds only
events strictly earlier in time.

The builder is vectorised (numpy + Arrow): no per-sample Python loop. It outputs the AmazonElectronics_x1
columns (`label,user_id,item_id,cate_id,item_history,cate_history`), histories as list<string> columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopctr.errors import UserError

NO_CATEGORY = "0"  # the category token of an item without one (as in the benchmark splits)
X1_COLUMNS = ("label", "user_id", "item_id", "cate_id", "item_history", "cate_history")


@dataclass
class Log:
    """A time-ordered interaction log, grouped by user: event i is (user[i], item[i], time[i])."""

    user: np.ndarray  # int64 codes; each user's events are contiguous and in time order
    item: np.ndarray  # int64 ids into item_tokens
    user_tokens: pa.Array  # user code -> raw id (string)
    item_tokens: pa.Array  # item id -> raw id (string)
    cate_tokens: pa.Array  # item id -> category token (string)
    time: np.ndarray | None = None  # int64/float, non-decreasing within a user
    source: str = "<log>"

    def check(self):
        n = self.user.shape[0]
        if n == 0:
            raise UserError(f"{self.source}: no interactions")
        first = np.r_[True, self.user[1:] != self.user[:-1]]
        if np.unique(self.user[first]).shape[0] != int(first.sum()):
            raise UserError(f"{self.source}: events are not grouped by user")
        if self.time is not None:
            backwards = (~first[1:]) & (self.time[1:] < self.time[:-1])
            if backwards.any():
                raise UserError(f"{self.source}: events of a user are not in time order "
                                f"(user '{self.user_tokens[int(self.user[1:][backwards][0])]}')")


def window_indices(begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged ranges [begin[r], end[r]) flattened: (flat indices, int32 offsets of rows + 1)."""
    lengths = np.maximum(end - begin, 0)
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.repeat(begin - offsets[:-1], lengths) + np.arange(offsets[-1])
    return flat, offsets


def user_positions(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each event: the index of its user's first event, its position in the user's events, the user's count."""
    n = user.shape[0]
    first = np.r_[True, user[1:] != user[:-1]]
    seg_start = np.flatnonzero(first)
    seg = np.cumsum(first) - 1
    start = seg_start[seg]
    count = np.diff(np.r_[seg_start, n])[seg]
    return start, np.arange(n) - start, count


def sample_negatives(user: np.ndarray, item: np.ndarray, target_users: np.ndarray, k: int, pool: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """k items per target from `pool`, none of them an item its user ever interacted with (rejection, vectorised)."""
    n_items = int(max(item.max(), pool.max())) + 1
    keys = np.unique(user.astype(np.int64) * n_items + item)
    per_user = np.bincount(keys // n_items)
    pool_size = np.unique(pool).shape[0]
    if (per_user >= pool_size).any():
        raise UserError(f"user code {int(np.flatnonzero(per_user >= pool_size)[0])} interacted with every one of the "
                        f"{pool_size} items: no negative item can be sampled for them")

    def taken(u, candidates):
        k_ = u * n_items + candidates
        at = np.minimum(np.searchsorted(keys, k_), keys.shape[0] - 1)
        return keys[at] == k_

    users = np.repeat(target_users.astype(np.int64), k)
    out = pool[rng.integers(0, pool.shape[0], users.shape[0])]
    bad = np.flatnonzero(taken(users, out))
    while bad.size:
        out[bad] = pool[rng.integers(0, pool.shape[0], bad.shape[0])]
        bad = bad[taken(users[bad], out[bad])]
    return out.reshape(-1, k)


def din_protocol(log: Log, *, max_history: int = 100, negatives: int = 1, split: str = "leave_last_out",
                 valid_fraction: float = 0.1, test_fraction: float = 0.1, same_time_history: bool = True,
                 seed: int = 2024, negative_items: np.ndarray | None = None,
                 negative_pool: np.ndarray | None = None) -> dict[str, pa.Table]:
    """Split -> table of x1 columns. `negative_items` ([targets, negatives], targets in log order) replaces
    the sampler (the synthetic generator keeps its own draws); `negative_pool` restricts the sampler."""
    log.check()
    user, item = log.user, log.item
    start, pos, count = user_positions(user)
    targets = np.flatnonzero(pos >= 1)
    if targets.size == 0:
        raise UserError(f"{log.source}: every user has a single interaction: no samples to build")
    if same_time_history or log.time is None:
        if not same_time_history:
            raise UserError(f"{log.source}: same_time_history=false needs event times, which this layout lacks")
        hist_end = targets
    else:
        boundary = np.r_[True, (user[1:] != user[:-1]) | (log.time[1:] != log.time[:-1])]
        group_first = np.maximum.accumulate(np.where(boundary, np.arange(user.shape[0]), 0))
        hist_end = group_first[targets]
    hist_begin = np.maximum(start[targets], hist_end - max_history)

    if split == "leave_last_out":
        last = count[targets] - 1
        where = np.where(pos[targets] == last, 2, np.where(pos[targets] == last - 1, 1, 0))
    elif split == "time":
        if log.time is None:
            raise UserError(f"{log.source}: split=time needs event times, which this layout lacks")
        t = log.time[targets]
        ordered = np.sort(t)
        t_test = ordered[min(int(len(t) * (1 - test_fraction)), len(t) - 1)]
        t_valid = ordered[min(int(len(t) * (1 - test_fraction - valid_fraction)), len(t) - 1)]
        where = np.where(t >= t_test, 2, np.where(t >= t_valid, 1, 0))
    else:
        raise UserError(f"unknown split '{split}' (leave_last_out or time)")

    if negative_items is None:
        pool = np.unique(item) if negative_pool is None else negative_pool
        negative_items = sample_negatives(user, item, user[targets], negatives, pool, np.random.default_rng(seed))
    per = 1 + negative_items.shape[1]
    tables = {}
    for code, name in enumerate(("train", "valid", "test")):
        sel = np.flatnonzero(where == code)
        rows_target = targets[sel]
        items = np.column_stack([item[rows_target], negative_items[sel]]).ravel()
        labels = np.tile(np.r_[1.0, np.zeros(per - 1)], sel.shape[0])
        flat, offsets = window_indices(np.repeat(hist_begin[sel], per), np.repeat(hist_end[sel], per))
        hist_items = item[flat]
        offsets32 = pa.array(offsets.astype(np.int32))
        tables[name] = pa.table({
            "label": pa.array(labels, pa.float64()),
            "user_id": log.user_tokens.take(pa.array(np.repeat(user[rows_target], per))),
            "item_id": log.item_tokens.take(pa.array(items)),
            "cate_id": log.cate_tokens.take(pa.array(items)),
            "item_history": pa.ListArray.from_arrays(offsets32, log.item_tokens.take(pa.array(hist_items))),
            "cate_history": pa.ListArray.from_arrays(offsets32, log.cate_tokens.take(pa.array(hist_items))),
        })
    return tables


# -- categories from attribute lists -------------------------------------------------------------------------


def pick_categories(attributes: dict[str, list], rule: str = "last") -> dict[str, str]:
    """One category per item from S3Rec-style attribute lists (`[brand] + category path`, ids shared).

    Categories are the attribute ids that ever occur at list position >= 1 (brands occur only at position
    0); any that covers more than half of all items is dropped (a root such as "Sports & Outdoors"). Of what
    remains in an item's list, `last` takes the last (the leaf: the rule behind the published benchmark
    splits) and `first` the first (the coarsest level). An item with none gets NO_CATEGORY.
    """
    categories = {a for attrs in attributes.values() for a in attrs[1:]}
    cover: dict = {}
    for attrs in attributes.values():
        for a in set(attrs):
            cover[a] = cover.get(a, 0) + 1
    half = len(attributes) / 2
    keep = {a for a in categories if cover[a] <= half}
    out = {}
    for item, attrs in attributes.items():
        kept = [a for a in attrs if a in keep]
        out[item] = str(kept[-1] if rule == "last" else kept[0]) if kept else NO_CATEGORY
    return out


def categories_array(item_tokens: pa.Array, item_category: dict[str, str]) -> pa.Array:
    keys = pa.array(list(item_category.keys()), pa.string())
    values = pa.array(list(item_category.values()), pa.string())
    idx = pc.index_in(item_tokens, value_set=keys)
    return pc.fill_null(values.take(idx), NO_CATEGORY) if len(keys) else pa.array([NO_CATEGORY] * len(item_tokens))


# -- readers of the public layouts ----------------------------------------------------------------------------
