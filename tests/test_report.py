"""`loopctr report` end to end on tiny runs and on results rows: sections per dataset, rows per label and settings,
the paired test, depth tables, figures that are real PNGs, and run directories written out as rows and read back."""

from __future__ import annotations

import json
import shutil

import pytest

from loopctr.cli.main import main
from loopctr.report import paired_t_test

FAST = ["epochs=1", "batch_size=64", "threads=1", "embedding_dim=8"]


def test_paired_t_test_matches_the_textbook_value():
    diff, p = paired_t_test([0.81, 0.82, 0.815, 0.83], [0.80, 0.815, 0.81, 0.818])
    assert diff == pytest.approx(0.008) and p == pytest.approx(0.0205442097, rel=1e-6)  # scipy.stats.ttest_rel
    assert paired_t_test([0.8], [0.7])[1] != paired_t_test([0.8], [0.7])[1]  # one pair: no test (nan)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for seed in (1, 2):
        for label, model, extra in (("dnn", "dnn", ["hidden_units=[16]"]),
                                    ("loop", "loopctr", ["d_model=16", "n_heads=2", "ffn_hidden=16",
                                                         "head_hidden_units=[16]", "train_loops=2"])):
            run = root / "study" / f"{label}-s{seed}"
            assert main(["train", "--data", str(tiny_data), "--model", model, "--out", str(run), *FAST, *extra,
                         f"seed={seed}"]) == 0
            if model == "loopctr":
                assert main(["evaluate", "--run", str(run), "--depths", "all"]) == 0
    for seed in (1, 2):  # the same names in another sweep with another setting: rows of their own
        assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(root / "other" / f"dnn-s{seed}"),
                     *FAST, "hidden_units=[16]", "lr=0.01", f"seed={seed}"]) == 0
    return root


def test_report_tables_tests_and_figures(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(runs / "study"), str(runs / "other"), "--out", str(out)]) == 0
    page = (out / "report.md").read_text()
    assert page.count("\n## ") == 1  # one dataset, one section
    for row in ("| loop | loopctr | 1, 2 |", "| dnn [lr=0.0005] | dnn | 1, 2 |", "| dnn [lr=0.01] | dnn | 1, 2 |"):
        assert row in page
    paired = page.split("Paired over seeds against")[1].split("Test AUC by inference depth")[0]
    assert len([line for line in paired.splitlines() if line.startswith("| ") and " | 2 | " in line]) == 2
    assert "| loop | 2 | " in page.split("Test AUC by inference depth")[1] and "| oracle AUC |" in page
    for name in ("leaderboard-0.png", "curves-0.png", "calibration-0.png", "depths-0.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000 and f"]({name})" in page
    assert page in capsys.readouterr().out


def test_report_keeps_datasets_apart_and_refuses_ambiguous_runs(runs, tmp_path, capsys):
    from conftest import TINY_SYNTHETIC
    from loopctr.data.prepare import prepare_dataset

    smaller = [s if not s.startswith("users=") else "users=100" for s in TINY_SYNTHETIC]
    prepare_dataset("synthetic", tmp_path / "data", synthetic_overrides=smaller, log=lambda *a: None)
    other = tmp_path / "other" / "dnn-s1"
    assert main(["train", "--data", str(tmp_path / "data"), "--model", "dnn", "--out", str(other), *FAST,
                 "hidden_units=[16]", "seed=1"]) == 0
    assert main(["report", str(runs / "study"), str(other), "--out", str(tmp_path / "two")]) == 0
    page = (tmp_path / "two" / "report.md").read_text()
    assert page.count("\n## ") == 2 and (tmp_path / "two" / "leaderboard-1.png").is_file()
    copy = tmp_path / "copy" / "dnn-s1"
    shutil.copytree(runs / "study" / "dnn-s1", copy)
    assert main(["report", str(runs / "study"), str(copy), "--out", str(tmp_path / "dup")]) == 2
    assert "repeat a seed with the same settings" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "none")]) == 2


def test_results_rows_round_trip_to_the_same_page(runs, tmp_path, capsys):
    rows = tmp_path / "results.jsonl"
    assert main(["report", str(runs / "study"), str(runs / "other"), "--results-out", str(rows),
                 "--out", str(tmp_path / "from-runs")]) == 0
    assert len(rows.read_text().splitlines()) == 6 and "data_dir" not in rows.read_text()
    assert main(["report", str(rows), "--out", str(tmp_path / "from-rows")]) == 0
    from_runs, from_rows = ((tmp_path / d / "report.md").read_text() for d in ("from-runs", "from-rows"))
    assert from_rows == from_runs and "Dates: " in from_rows
    assert sorted(p.name for p in (tmp_path / "from-rows").iterdir()) == sorted(
        p.name for p in (tmp_path / "from-runs").iterdir())
    capsys.readouterr()
    # rows of a run and the run itself are one run twice: refused as two runs repeating a seed
    assert main(["report", str(rows), str(runs / "study"), "--out", str(tmp_path / "both")]) == 2
    assert "repeat a seed with the same settings" in capsys.readouterr().err


def _row(**fields) -> str:
    row = {"dataset": "beauty", "label": "DIN", "model": "din", "seed": 1, "settings": {}, "metrics": {"auc": 0.81}}
    return json.dumps(row | fields)


def test_hand_written_rows_give_narrow_tables_and_a_figure(tmp_path):
    rows = tmp_path / "beauty.jsonl"
    rows.write_text("\n".join([
        _row(), _row(seed=2, metrics={"auc": 0.82}),
        _row(label="LoopCTR(1/3)", model="loopctr", metrics={"auc": 0.83, "best_epoch": 6}, date="2026-11-22",
             machine="2-core AMD EPYC, no GPU"),
        _row(label="LoopCTR(1/3)", model="loopctr", seed=2, metrics={"auc": 0.80, "best_epoch": 5}),
        _row(dataset="sports", label="DNN", model="dnn", evaluation={"slices": {
            "cold": {"rule": "item_id seen fewer than 5 times", "rows": 310, "auc": 0.6, "logloss": 0.72},
            "warm": {"rule": "the other rows", "rows": 9690, "auc": 0.7, "logloss": 0.67}}})]) + "\n\n")
    out = tmp_path / "report"
    assert main(["report", str(rows), "--out", str(out)]) == 0
    page = (out / "report.md").read_text()
    assert page.count("\n## ") == 2  # datasets of rows are kept apart too
    assert "| label | model | seeds | test AUC | best epoch / run |" in page and "gAUC" not in page
    assert "| LoopCTR(1/3) | loopctr | 1, 2 | 0.8150 ± 0.0212 | 6, 5 |" in page and "| DIN | din | 1, 2 | " in page
    assert "Dates: 2026-11-22. Machines: 2-core AMD EPYC, no GPU." in page
    assert "| DNN | 1 | 310 | 0.6000 | 0.7200 | 9,690 | 0.7000 | 0.6700 |" in page  # cold and warm rows
    data = (out / "leaderboard-0.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    assert not (out / "curves-0.png").exists()  # no validation curve in these rows


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not a JSON object"),
    (_row(seed="1"), "seed must be an integer"),
    (json.dumps({"dataset": "beauty", "label": "DIN", "seed": 1, "metrics": {"auc": 0.8}}), "needs model"),
    (_row(metrics={"logloss": 0.5}), "metrics need the test auc"),
    (_row(setting={}), "unknown field setting"),
    (_row(evaluation={"by_depth": [{"depth": 1}]}), "evaluation.by_depth"),
])
def test_a_malformed_row_is_a_one_line_error_naming_file_and_line(tmp_path, capsys, line, problem):
    rows = tmp_path / "bad.jsonl"
    rows.write_text(_row() + "\n" + line + "\n")
    assert main(["report", str(rows), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{rows}:2: " in err and problem in err
