"""`loopctr tune` end to end: every point trained per seed, the choice made on validation only, resumed runs
kept, random draws fixed by their seed."""

from __future__ import annotations

import json

import yaml

from loopctr.cli.main import main
from loopctr.scaling.sweep import Sweep
from loopctr.tune import available_cores, search_points

FAST = ["epochs=1", "batch_size=64", "embedding_dim=8", "hidden_units=[16]"]


def test_tune_selects_on_validation_and_continues(tiny_data, tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "--data", str(tiny_data), "--model", "dnn", "--out", str(out), "--grid", "lr=0.0001,0.01",
            "--seeds", "1,2", "--jobs", "2", *FAST]
    assert main(args) == 0
    summary = json.loads((out / "tune.json").read_text())
    assert summary["monitor"] == "auc" and len(summary["points"]) == 2
    assert all(p["seeds"] == 2 for p in summary["points"])
    runs = {p.name: json.loads((p / "metrics.json").read_text()) for p in (out / "runs").iterdir()}
    assert sorted(runs) == ["dnn-lr=0.0001-s1", "dnn-lr=0.0001-s2", "dnn-lr=0.01-s1", "dnn-lr=0.01-s2"]
    valid = {lr: sum(runs[f"dnn-lr={lr}-s{s}"]["valid"]["auc"] for s in (1, 2)) / 2 for lr in ("0.0001", "0.01")}
    best = max(valid, key=valid.get)
    assert summary["chosen"]["settings"] == {"lr": best}  # chosen on validation, whatever test says
    test_auc = sum(runs[f"dnn-lr={best}-s{s}"]["auc"] for s in (1, 2)) / 2
    assert abs(summary["chosen_test"]["auc"] - test_auc) < 1e-12
    printed = capsys.readouterr().out
    assert f"chosen on validation: lr={best}" in printed
    threads = {yaml.safe_load((out / "runs" / name / "config.yaml").read_text())["train"]["threads"] for name in runs}
    assert threads == {max(1, available_cores() // 2)}  # 2 jobs share the cores out
    stamps = {name: (out / "runs" / name / "metrics.json").stat().st_mtime_ns for name in runs}
    assert main(args) == 0  # everything finished: nothing is trained again
    assert stamps == {name: (out / "runs" / name / "metrics.json").stat().st_mtime_ns for name in runs}


def test_random_search_draws_a_fixed_subset(tmp_path):
    sweep = Sweep(tmp_path, tmp_path, ["dnn"], {"lr": ["1", "2", "3"], "dropout": ["0", "0.1"]}, [1])
    drawn = search_points(sweep, 3, seed=7)
    assert len(drawn) == 3 and drawn == search_points(sweep, 3, seed=7)
    assert all(p in sweep.points() for p in drawn) and len({json.dumps(p) for p in drawn}) == 3
    assert search_points(sweep, 10, seed=7) == sweep.points()


def test_free_cores_leave_out_the_busy_ones(monkeypatch):
    import os

    from loopctr import runtime

    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    assert runtime.free_cores() == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (11.0, 0.0, 0.0))
    assert runtime.free_cores() == 1  # never none
