from loopctr.cli.main import main
from loopctr.demo import demo_models


def test_quick_demo_trains_every_demo_model_and_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    table = (out / "results.md").read_text()
    for model in demo_models():
        assert f"| {model} |" in table
        assert (out / model / "metrics.json").is_file()
    assert main(["demo", "--out", str(out), "--quick"]) == 0  # a second run reuses data and runs
    assert "already trained" in capsys.readouterr().out
