"""Exact CTR metrics: numpy in, floats out.

Every function takes 1-d arrays of labels (0/1) and predicted probabilities. AUC and gAUC are exact
(rank statistics with tied scores given their average rank), gAUC is vectorised over groups.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def _as_arrays(labels, preds):
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels and preds differ in length: {y.shape[0]} vs {p.shape[0]}")
    return y, p


def _tied_ranks(sorted_values: np.ndarray, segment_starts: np.ndarray | None = None) -> np.ndarray:
    """1-based average ranks of an already sorted array; ties (equal neighbours) share their mean rank.

    With `segment_starts` (a boolean array marking the first element of each segment), ties never cross a
    segment boundary and ranks restart at 1 in every segment.
    """
    n = sorted_values.shape[0]
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    new_run[1:] = sorted_values[1:] != sorted_values[:-1]
    if segment_starts is not None:
        new_run |= segment_starts
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_first, n))
    position = np.arange(n, dtype=np.float64)
    if segment_starts is not None:
        seg_first = np.flatnonzero(segment_starts)
        seg_id = np.cumsum(segment_starts) - 1
        position -= seg_first[seg_id]
        run_start_in_seg = run_first - seg_first[seg_id[run_first]]
    else:
        run_start_in_seg = run_first
    mean_rank = run_start_in_seg + (run_len + 1) / 2.0
    return mean_rank[run_id]


def auc(labels, preds) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties). NaN if one class is absent."""
    y, p = _as_arrays(labels, preds)
    n_pos = y.sum()
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    ranks = _tied_ranks(p[order])
    rank_sum = ranks[y[order] == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(labels, preds, groups) -> float:
    """Group AUC: per-group AUC weighted by group size, over groups that hold both labels (DIN / FuxiCTR)."""
    y, p = _as_arrays(labels, preds)
    g = np.asarray(groups).reshape(-1)
    if g.shape != y.shape:
        raise ValueError(f"groups and labels differ in length: {g.shape[0]} vs {y.shape[0]}")
    if y.shape[0] == 0:
        return float("nan")
    _, g = np.unique(g, return_inverse=True)
    order = np.lexsort((p, g))
    g_sorted, p_sorted, y_sorted = g[order], p[order], y[order]
    starts = np.empty(g_sorted.shape[0], dtype=bool)
    starts[0] = True
    starts[1:] = g_sorted[1:] != g_sorted[:-1]
    ranks = _tied_ranks(p_sorted, starts)
    n_groups = int(g_sorted[-1]) + 1
    size = np.bincount(g_sorted, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(g_sorted, weights=y_sorted, minlength=n_groups)
    n_neg = size - n_pos
    pos_rank_sum = np.bincount(g_sorted, weights=ranks * y_sorted, minlength=n_groups)
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    group_auc = (pos_rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0) / (n_pos[valid] * n_neg[valid])
    return float(np.sum(group_auc * size[valid]) / np.sum(size[valid]))


def _per_sample_logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def logloss(labels, preds, weights=None) -> float:
    """Mean binary cross-entropy (natural log), predictions clipped to [1e-7, 1 - 1e-7]."""
    y, p = _as_arrays(labels, preds)
    return float(np.average(_per_sample_logloss(y, p), weights=weights))


def normalized_entropy(labels, preds, weights=None) -> float:
    """Normalized entropy (He et al. 2014): mean (weighted) logloss over the entropy of the (weighted) base rate."""
    y, p = _as_arrays(labels, preds)
    base_rate = float(np.average(y, weights=weights))
    if base_rate <= 0.0 or base_rate >= 1.0:
        return float("nan")
    entropy = -(base_rate * np.log(base_rate) + (1.0 - base_rate) * np.log(1.0 - base_rate))
    return logloss(y, p, weights) / entropy


def calibration(labels, preds) -> float:
    """Mean prediction over mean label (1.0 is perfectly calibrated on average)."""
    y, p = _as_arrays(labels, preds)
    return float(p.mean() / y.mean()) if y.mean() > 0 else float("nan")


RELIABILITY_BINS = 15  # equal-width bins over [0, 1], as in Guo et al. (2017)


def reliability(labels, preds, bins: int = RELIABILITY_BINS) -> list[dict]:
    """The reliability diagram: for each non-empty equal-width bin of predictions, its bounds, size, mean
    prediction and click rate."""
    y, p = _as_arrays(labels, preds)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    pred_sum, label_sum = np.bincount(index, p, bins), np.bincount(index, y, bins)
    return [{"lower": b / bins, "upper": (b + 1) / bins, "count": int(count[b]),
             "mean_pred": float(pred_sum[b] / count[b]), "mean_label": float(label_sum[b] / count[b])}
            for b in range(bins) if count[b]]


def expected_calibration_error(labels, preds, bins: int = RELIABILITY_BINS) -> float:
    """ECE: the rows' share-weighted mean of |mean prediction - click rate| over the reliability bins."""
    rows = reliability(labels, preds, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["mean_pred"] - r["mean_label"]) for r in rows) / total) if total else 0.0


def oracle_predictions(labels, preds_by_depth) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the prediction of the depth with the lowest logloss, and that depth's index.

    `preds_by_depth` has shape (depths, samples). This is an analysis tool (it looks at the labels), not a model.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(1, -1)
    p = np.asarray(preds_by_depth, dtype=np.float64)
    best = np.argmin(_per_sample_logloss(y, p), axis=0)
    return p[best, np.arange(p.shape[1])], best


def all_metrics(labels, preds, groups=None) -> dict[str, float]:
    """The standard report: auc, gauc (when groups are given), logloss, ne, calibration, ece."""
    out = {"auc": auc(labels, preds)}
    if groups is not None:
        out["gauc"] = gauc(labels, preds, groups)
    out["logloss"] = logloss(labels, preds)
    out["ne"] = normalized_entropy(labels, preds)
    out["calibration"] = calibration(labels, preds)
    out["ece"] = expected_calibration_error(labels, preds)
    return out


__all__ = ["auc", "gauc", "logloss", "normalized_entropy", "calibration", "reliability",
           "expected_calibration_error", "oracle_predictions", "all_metrics"]
