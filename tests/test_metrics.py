import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from loopctr import metrics as M


def naive_gauc(y, p, g):
    total, weight = 0.0, 0
    for group in np.unique(g):
        m = g == group
        if 0 < y[m].sum() < m.sum():
            total += roc_auc_score(y[m], p[m]) * m.sum()
            weight += m.sum()
    return total / weight


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    p = np.round(rng.random(2000), 1)  # many ties
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_hand_values():
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert np.isnan(M.auc([1, 1], [0.2, 0.3]))


@pytest.mark.parametrize("seed", [0, 1])
def test_gauc_matches_per_group_loop(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    g = rng.integers(0, 200, n)
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n), 2)
    assert M.gauc(y, p, g) == pytest.approx(naive_gauc(y, p, g), abs=1e-12)


def test_gauc_skips_single_class_groups_and_weights_by_size():
    y = np.array([1, 0, 1, 1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.5, 0.4, 0.6, 0.7, 0.2])
    g = np.array([0, 0, 1, 1, 1, 2, 2])
    # group 0: auc 1 (n=2); group 1: pos {0.5,0.4} vs neg {0.6} -> 0 (n=3); group 2: 1 (n=2)
    assert M.gauc(y, p, g) == pytest.approx((1 * 2 + 0 * 3 + 1 * 2) / 7)
    assert M.gauc(y[:2], p[:2], np.array(["u1", "u1"])) == pytest.approx(1.0)


def test_normalized_entropy_hand_values():
    assert M.normalized_entropy([1, 0], [0.2, 0.3]) == pytest.approx(1.4183, abs=1e-4)
    assert M.normalized_entropy([1, 0], [0.2, 0.3], weights=[5, 1]) == pytest.approx(3.1087, abs=1e-4)


def test_logloss_and_calibration():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = rng.random(500)
    assert M.logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)
    assert M.calibration([1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(1.0)
    assert M.calibration([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)


def test_oracle_picks_lowest_logloss_depth():
    y = np.array([1, 0, 1])
    by_depth = np.array([[0.9, 0.8, 0.2], [0.6, 0.1, 0.3]])
    best, depth = M.oracle_predictions(y, by_depth)
    assert best.tolist() == [0.9, 0.1, 0.3]
    assert depth.tolist() == [0, 1, 1]
    assert M.auc(y, best) >= max(M.auc(y, d) for d in by_depth)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        M.auc([0, 1], [0.1])


def test_reliability_bins_and_expected_calibration_error():
    from loopctr.metrics import expected_calibration_error, reliability

    y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    p = np.array([0.05, 0.1, 0.1, 0.9, 0.95, 0.9, 1.0, 0.5])
    bins = reliability(y, p, bins=4)  # [0, .25): 3 rows, [.5, .75): 1, [.75, 1]: 4 (1.0 in the last bin)
    assert [(b["lower"], b["count"]) for b in bins] == [(0.0, 3), (0.5, 1), (0.75, 4)]
    assert bins[0]["mean_pred"] == pytest.approx(0.25 / 3) and bins[0]["mean_label"] == pytest.approx(1 / 3)
    expected = (3 * abs(0.25 / 3 - 1 / 3) + 1 * abs(0.5 - 0) + 4 * abs(3.75 / 4 - 3 / 4)) / 8
    assert expected_calibration_error(y, p, bins=4) == pytest.approx(expected)
    assert expected_calibration_error(y, y.astype(float)) == 0.0  # certain and right: perfectly calibrated
