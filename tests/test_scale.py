"""Scaling studies: power-law fits and their intervals, counted FLOPs, and `loopctr scale` end to end on tiny data
(a 3-point sweep that fits and draws, resumes without retraining, and refuses bad settings before training)."""

import json

import numpy as np
import pytest
import torch

from loopctr.cli.main import main
from loopctr.models import build_model, model_class
from loopctr.scaling.flops import flops_per_sample
from loopctr.scaling.powerlaw import fit_over_seeds, fit_power_law
from loopctr.scaling.sweep import parse_grid, run_name

FAST = ["epochs=1", "batch_size=64", "threads=1", "embedding_dim=8"]


def test_power_law_fits_recover_known_laws():
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5])
    fit = fit_power_law(x, 2 * x ** -0.3 + 0.4)
    assert fit.b == pytest.approx(0.3, abs=0.01) and fit.c == pytest.approx(0.4, abs=0.002) and fit.r2 > 0.9999
    three = fit_power_law(x[:3], 5 * x[:3] ** -0.5)  # 3 points: no offset, a pure power law
    assert three.c == 0 and three.b == pytest.approx(0.5) and three.a == pytest.approx(5)
    zigzag = fit_power_law(x, np.array([1, 3, 1, 3, 1, 3.0]))
    assert zigzag.r2 < 0.8 and not zigzag.holds
    with pytest.raises(ValueError):
        fit_power_law([1, 1, 1], [0.5, 0.4, 0.3])


def test_bootstrap_interval_over_seeds_covers_the_exponent():
    rng = np.random.default_rng(0)
    x = np.repeat([1e3, 3e3, 1e4, 3e4, 1e5, 3e5], 3)
    seed = np.tile([1, 2, 3], 6)
    y = 2 * x ** -0.3 + 0.4 + rng.normal(0, 0.002, x.size)
    fit = fit_over_seeds(x, seed, y)
    assert fit.b_low < 0.3 < fit.b_high and fit.b_high - fit.b_low < 0.05
    assert fit_over_seeds(x[seed == 1], seed[seed == 1], y[seed == 1]).b_low is None  # one seed: no interval


def test_counted_flops_follow_the_compute(tiny_dataset, tiny_batch):
    def model(name, *overrides):
        from loopctr.config import apply_overrides

        config = apply_overrides(model_class(name).config_class(embedding_dim=8), list(overrides), "test")
        torch.manual_seed(0)
        return build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, config)

    dnn = model("dnn", "hidden_units=[64,32]")
    before = [p.detach().clone() for p in dnn.parameters()]
    infer, train = flops_per_sample(dnn, tiny_batch, train=False), flops_per_sample(dnn, tiny_batch, train=True)
    assert infer > 0 and 2.5 < train / infer <= 3.0  # backward: about twice the forward's matmuls
    assert all(torch.equal(a, b) for a, b in zip(before, dnn.parameters())) and all(p.grad is None for p in dnn.parameters())
    wide = model("dnn", "hidden_units=[128,32]")
    assert flops_per_sample(wide, tiny_batch, train=False) > infer
    loop = {k: model("loopctr", f"train_loops={k}", "d_model=16", "n_heads=2", "ffn_hidden=32") for k in (1, 3)}
    one, three = (flops_per_sample(loop[k], tiny_batch, train=True) for k in (1, 3))
    assert three > 1.5 * one  # three training passes of the loop block
    assert flops_per_sample(loop[3], tiny_batch, train=False) < one  # ... but one pass at inference


def test_grid_parsing_and_run_names():
    grid = parse_grid(["num_layers=1,2,4", "dnn_hidden_units=[64],[64,32]"])
    assert grid == {"num_layers": ["1", "2", "4"], "dnn_hidden_units": ["[64]", "[64,32]"]}
    assert run_name("suan", {"model.num_layers": "2", "dnn_hidden_units": "[64,32]"}, 3) == \
        "suan-num_layers=2-dnn_hidden_units=64,32-s3"


def test_scale_sweeps_fits_draws_and_resumes(tiny_data, tmp_path, capsys):
    study = tmp_path / "study"
    cmd = ["scale", "--data", str(tiny_data), "--out", str(study), "--model", "dnn",
           "--grid", "hidden_units=[4],[16],[64]", "--seeds", "1,2", *FAST]
    assert main(cmd) == 0
    rows = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["seed"] for r in rows} == {1, 2}
    by_size = sorted(rows, key=lambda r: r["params_dense"])
    assert [r["settings"]["hidden_units"] for r in by_size[::2]] == ["[4]", "[16]", "[64]"]
    flops = [r["train_flops"] for r in by_size[::2]]
    assert flops[0] < flops[1] < flops[2]
    fits = json.loads((study / "fits.json").read_text())
    scales = {(f["scale"], f["quality"]) for f in fits}
    assert ("params_dense", "logloss") in scales and ("train_flops", "1-auc") in scales
    assert all(f["points"] == 3 and f["b_low"] is not None and -1 <= f["r2"] <= 1 for f in fits)
    figure = study / "scale-params_dense-logloss.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "power law" in out and "[1/6] dnn-hidden_units=4-s1" in out
    # the same command again trains nothing and writes the same results
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("runs/*/metrics.json")}
    assert main(cmd) == 0
    assert {p: p.stat().st_mtime_ns for p in study.glob("runs/*/metrics.json")} == stamps
    assert "[1/6]" not in capsys.readouterr().out
    assert [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()] == rows


def test_scale_time_budget_and_a_killed_run(tiny_data, tmp_path, capsys):
    study = tmp_path / "study"
    cmd = ["scale", "--data", str(tiny_data), "--out", str(study), "--model", "dnn",
           "--grid", "hidden_units=[4],[8]", *FAST]
    assert main([*cmd, "--time-budget-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert "time budget spent: 2 run(s) left" in out and not list(study.glob("runs/*/metrics.json"))
    assert "nothing to fit" in out
    # a run killed after its first checkpoint resumes; the other starts
    first = study / "runs" / "dnn-hidden_units=4-s1"
    assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(first), *FAST,
                 "hidden_units=[4]", "seed=1"]) == 0
    (first / "metrics.json").unlink()
    assert main(cmd) == 0
    assert "resuming" in capsys.readouterr().out
    assert len(list(study.glob("runs/*/metrics.json"))) == 2


def test_scale_refuses_a_bad_setting_before_training(tiny_data, tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["scale", "--data", str(tiny_data), "--out", str(study), "--model", "dnn",
                 "--grid", "hiden_units=[4],[8]", *FAST]) == 2
    assert "did you mean 'hidden_units'?" in capsys.readouterr().err
    assert not study.exists()
