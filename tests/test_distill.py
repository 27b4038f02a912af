"""Distillation as a training mode (train/distill.py), through the real CLI on tiny data: online and offline
teachers, what is checkpointed, resume, DDP, and the strict errors."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import raw_rows
from loopctr.cli.main import main
from loopctr.serve.predictor import Predictor
from loopctr.train.config import DistillConfig
from loopctr.train.distill import distillation_term

FAST = ["epochs=2", "batch_size=64", "threads=1", "embedding_dim=8", "early_stop_patience=0"]
SMALL = {"dnn": ["hidden_units=[16]"], "din": ["dnn_hidden_units=[16]", "attention_hidden_units=[8]"],
         "lightsuan": ["dnn_hidden_units=[16]", "window=2", "dilation=3"]}
SUAN_TEACHER = ["distill.teacher=suan", "distill.teacher_overrides=num_layers=2 dnn_hidden_units=[16]"]


def train(data, out, model, *extra):
    return main(["train", "--data", str(data), "--model", model, "--out", str(out), *FAST, *SMALL[model], *extra])


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_distillation_terms_by_hand():
    s, t = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, -2.0, 0.0])
    assert torch.isclose(distillation_term(s, t, DistillConfig(loss="mse")), ((s - t) ** 2).mean())
    soft = torch.sigmoid(t / 2)
    by_hand = -(soft * torch.log(torch.sigmoid(s / 2)) + (1 - soft) * torch.log(1 - torch.sigmoid(s / 2))).mean()
    assert torch.isclose(distillation_term(s, t, DistillConfig(temperature=2.0)), 4 * by_hand)
    teacher = t.clone().requires_grad_(True)
    distillation_term(s.requires_grad_(True), teacher, DistillConfig()).backward()
    assert teacher.grad is None and s.grad.abs().sum() > 0  # the teacher's logits are a target, not trained by it


def test_online_teacher_trains_beside_the_student_and_only_the_student_is_kept(tiny_data, tmp_path):
    alone, taught = tmp_path / "alone", tmp_path / "taught"
    assert train(tiny_data, alone, "lightsuan") == 0
    assert train(tiny_data, taught, "lightsuan", *SUAN_TEACHER) == 0
    full, best = weights(taught / "checkpoint.pt"), weights(taught / "best.pt")
    teacher_keys = {k for k in full if k.startswith("teacher.")}
    assert teacher_keys and {k.removeprefix("student.") for k in full if k.startswith("student.")} == set(best)
    assert set(best) == set(weights(alone / "best.pt"))  # best.pt: a plain LightSUAN, ready to export and serve
    a, b = weights(alone / "best.pt"), best
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the teacher's targets change what the student learns
    report = json.loads((taught / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(taught)]) == 0
    assert json.loads((taught / "eval.json").read_text())["auc"] == pytest.approx(report["auc"], abs=1e-9)
    rows = raw_rows(tiny_data, n=20)
    assert main(["export", "--run", str(taught), "--format", "torchscript"]) == 0
    np.testing.assert_allclose(Predictor(taught / "export-torchscript").predict(rows), Predictor(taught).predict(rows),
                               rtol=1e-5, atol=1e-6)


def test_offline_teacher_is_frozen_and_not_checkpointed(tiny_data, tmp_path):
    teacher, alone, taught = tmp_path / "din", tmp_path / "alone", tmp_path / "taught"
    assert train(tiny_data, teacher, "din") == 0
    digest = hashlib.sha256((teacher / "best.pt").read_bytes()).hexdigest()
    assert train(tiny_data, alone, "dnn") == 0
    assert train(tiny_data, taught, "dnn", f"distill.teacher={teacher}", "distill.loss=mse", "distill.weight=5") == 0
    assert hashlib.sha256((teacher / "best.pt").read_bytes()).hexdigest() == digest
    saved = {k.removeprefix("student.") for k in weights(taught / "checkpoint.pt")}
    assert saved == set(weights(alone / "checkpoint.pt"))  # the student alone
    a, b = weights(alone / "best.pt"), weights(taught / "best.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_of_a_distilled_run_continues_the_teacher_too(tiny_data, tmp_path):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    assert train(tiny_data, straight, "lightsuan", *SUAN_TEACHER, "epochs=3") == 0
    assert train(tiny_data, extended, "lightsuan", *SUAN_TEACHER, "epochs=2") == 0
    assert main(["train", "--out", str(extended), "--resume", "epochs=3"]) == 0
    a, b = weights(straight / "checkpoint.pt"), weights(extended / "checkpoint.pt")
    assert any(k.startswith("teacher.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_errors_name_the_setting(tiny_data, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(tmp_path / "x"), *FAST,
                 "distill.teacher=sun"]) == 2
    assert "unknown model 'sun'; did you mean 'suan'?" in capsys.readouterr().err
    assert train(tiny_data, tmp_path / "x", "dnn", "distill.teacher=suan", "distill.teacher_overrides=num_layer=3") == 2
    assert "distill.teacher_overrides: unknown key 'num_layer'; did you mean 'num_layers'?" in capsys.readouterr().err
    assert train(tiny_data, tmp_path / "x", "dnn", f"distill.teacher={tmp_path / 'nothing'}") == 2
    assert "not a run directory (no config.yaml) nor a model name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written before the teacher is found
    assert train(tiny_data, other, "dnn") == 0
    best = torch.load(other / "best.pt", weights_only=False)
    best["data_fingerprint"] = "another-vocabulary"
    torch.save(best, other / "best.pt")
    assert train(tiny_data, tmp_path / "y", "dnn", f"distill.teacher={other}") == 2
    assert "trained on a dataset with another schema or vocabulary" in capsys.readouterr().err


def test_online_distillation_under_torchrun(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "loopctr.cli.main", "train", "--data", str(tiny_data), "--model", "lightsuan", "--out", str(run),
           *FAST, *SMALL["lightsuan"], *SUAN_TEACHER]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("world size 2") == 1 and done.stdout.count("distilling from suan") == 1
    assert any(k.startswith("teacher.") for k in weights(run / "checkpoint.pt"))
    assert json.loads((run / "metrics.json").read_text())["rows_test"] > 0
