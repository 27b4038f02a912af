"""Adaptive per-sample depth: the exit logic, rows that stop leave the batch, calibration, evaluate and serve."""

import json

import numpy as np
import pytest
import torch

from helpers import raw_rows
from loopctr.cli.main import main
from loopctr.data.dataset import PreparedDataset
from loopctr.data.loader import BatchLoader
from loopctr.models import adaptive_depth as ad
from loopctr.serve.predictor import BadRequest, Predictor
from loopctr.train.evaluate import load_exit_head, predict_adaptive

from test_loopctr import SMALL_OVERRIDES, small


def test_stop_targets_say_where_no_deeper_depth_is_better():
    # 3 depths, 4 rows; labels 1: a higher logit is a lower loss
    logits = np.array([[2.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 3.0], [3.0, 1.0, 0.0, 2.0]])
    targets = ad.stop_targets(logits, np.ones(4))
    assert targets.tolist() == [[0, 0, 1, 0], [0, 0, 1, 1]]  # ties stop early: a pass that does not help


def test_exit_depths_thresholds_and_budget():
    probs = np.array([[0.9, 0.1, 0.2], [0.5, 0.7, 0.1]])  # passes 1 and 2 of 3 rows (K = 3)
    assert ad.exit_depths(probs, 0.6).tolist() == [1, 2, 3]
    assert ad.exit_depths(probs, 0.95).tolist() == [3, 3, 3]
    taus = ad.thresholds(probs)
    assert taus[-1] == 1.0 and (np.diff(taus) > 0).all()
    curve = [{"threshold": 0.2, "mean_passes": 1.2, "auc": 0.70}, {"threshold": 0.5, "mean_passes": 1.5, "auc": 0.72},
             {"threshold": 0.8, "mean_passes": 2.4, "auc": 0.75}]
    assert ad.threshold_for_budget(curve, 1.5)["threshold"] == 0.5
    assert ad.threshold_for_budget(curve, 1.0)["threshold"] == 0.2  # none within: the cheapest


def test_a_row_that_stops_skips_the_later_passes_and_keeps_its_fixed_depth_prediction(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, train_loops=3).eval()
    tokens_per_pass = []
    original = model._loop_pass
    model._loop_pass = lambda x, *args: tokens_per_pass.append(x.shape[0]) or original(x, *args)

    def decide(t, state, previous):  # the first half of the rows still looping stop at each pass
        stop = torch.zeros(state.shape[0], dtype=torch.bool)
        stop[: state.shape[0] // 2] = True
        return stop

    with torch.no_grad():
        logits, depths = model.forward_adaptive(tiny_batch, decide, 3)
        adaptive_passes = list(tokens_per_pass)
        fixed = model(tiny_batch, depths=[1, 2, 3])["logits_by_depth"]
    rows = torch.arange(tiny_batch.size)
    torch.testing.assert_close(logits, fixed[depths - 1, rows], atol=1e-5, rtol=1e-4)
    assert sorted(torch.bincount(depths).tolist()[1:]) == [16, 16, 32]
    tokens = tiny_batch.jagged("item_history").lengths + 1  # every row's events and its target token
    remaining = [rows, rows[depths > 1], rows[depths > 2]]
    assert adaptive_passes == [int(tokens[r].sum()) for r in remaining]  # stopped rows left the batch


def test_stop_probabilities_collected_give_the_same_rows_as_the_real_exits(tiny_dataset):
    model = small(tiny_dataset, train_loops=3).eval()
    torch.manual_seed(0)
    head = ad.ExitHead(model.tokenizer.n_readout * 16, 3).eval()
    loader = BatchLoader(tiny_dataset.split("test"), 50)
    collected = ad.collect(model, loader.batches(), 3, head)
    tau = float(np.median(collected["stop_probs"]))
    depth = ad.exit_depths(collected["stop_probs"], tau)
    simulated = 1 / (1 + np.exp(-collected["logits"][depth - 1, np.arange(depth.shape[0])]))
    arrays, speed = predict_adaptive(model, head, tau, loader)
    np.testing.assert_array_equal(arrays["depths"], depth)
    np.testing.assert_allclose(arrays["preds"], simulated, rtol=1e-5, atol=1e-6)
    assert 1 < depth.mean() < 3 and speed > 0


@pytest.fixture(scope="module")
def k3_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("adaptive") / "k3"
    assert main(["train", "--data", str(tiny_data), "--model", "loopctr", "--out", str(run), "epochs=2", "threads=1",
                 "batch_size=64", "train_loops=3", *SMALL_OVERRIDES]) == 0
    assert main(["evaluate", "--run", str(run), "--depths", "adaptive", "--budget", "1.5"]) == 0
    return run


def test_evaluate_adaptive_calibrates_on_validation_and_reports_test(k3_run):
    assert not (k3_run / "eval.json").exists()  # the fixed-depth report is left alone
    report = json.loads((k3_run / "adaptive.json").read_text())["adaptive"]
    assert report["valid_mean_passes"] <= 1.5 and 1.0 <= report["mean_passes"] <= 3.0
    assert report["budget"] == 1.5 and len(report["by_depth"]) == 3 and "headroom_auc" in report["oracle"]
    chosen = [p for p in report["curve"] if p["threshold"] == report["threshold"]]
    assert abs(chosen[0]["auc"] - report["auc"]) < 1e-9  # the real exits give the simulated curve's point
    assert abs(chosen[0]["mean_passes"] - report["mean_passes"]) < 1e-9
    assert abs(sum(report["depth_share"]) - 1) < 1e-9
    assert (k3_run / "adaptive.png").read_bytes()[:4] == b"\x89PNG"
    head, saved = load_exit_head(k3_run)
    assert head is not None and saved["threshold"] == report["threshold"] and saved["calibration"]


def test_served_adaptive_predictions_equal_evaluated_ones(k3_run, tiny_data):
    predictor = Predictor(k3_run)
    assert predictor.metadata()["adaptive"]["budget"] == 1.5
    rows = raw_rows(tiny_data, n=30)
    threshold = load_exit_head(k3_run)[1]["threshold"]
    arrays, _ = predict_adaptive(predictor.model, predictor.exit_head, threshold,
                                 BatchLoader(PreparedDataset(tiny_data).split("test"), 1000))
    np.testing.assert_allclose(predictor.predict(rows, "adaptive"), arrays["preds"][:30], rtol=1e-5, atol=1e-6)
    cheapest = predictor.predict(rows, "adaptive", budget=1)  # the threshold of the fewest passes
    assert len(cheapest) == 30
    for depth, budget in (("adaptive", 0.5), ("adaptive", "1"), (2, 1.5)):
        with pytest.raises(BadRequest, match="budget"):
            predictor.predict(rows, depth, budget)


def test_adaptive_depth_is_refused_where_there_is_no_depth_to_choose(tiny_data, tmp_path, k3_run):
    run = tmp_path / "k1"
    assert main(["train", "--data", str(tiny_data), "--model", "loopctr", "--out", str(run), "epochs=1", "threads=1",
                 "batch_size=256", "train_loops=1", *SMALL_OVERRIDES]) == 0
    assert main(["evaluate", "--run", str(run), "--depths", "adaptive"]) == 2
    assert main(["evaluate", "--run", str(k3_run), "--budget", "1.5"]) == 2  # a budget needs --depths adaptive
    assert main(["evaluate", "--run", str(k3_run), "--depths", "adaptive", "--split", "valid"]) == 2
    with pytest.raises(BadRequest, match="exit head"):
        Predictor(run).predict(raw_rows(tiny_data, n=2), "adaptive")


def test_depth_speed_times_adaptive_depth_and_its_prediction(k3_run):
    from helpers import load_script

    depth_speed = load_script("depth_speed")
    model, batches, seen, _ = depth_speed.load_batches(k3_run, "test", 64, 100)
    forward, mean_passes = depth_speed.adaptive_forward(model, k3_run)
    speeds = depth_speed.samples_per_s(model, batches, seen, [1, 2, 3], repeats=1, baselines={"adaptive": forward})
    assert speeds["adaptive"] > 0 and 1.0 <= mean_passes() <= 3.0
    # seconds exactly linear in the depth: the prediction is the line at the mean passes
    linear = {1: seen / 1.0, 2: seen / 1.5, 3: seen / 2.0}
    assert abs(depth_speed.predicted_speed(linear, [1, 2, 3], 1.5, seen) - seen / 1.25) < 1e-6
