"""Every registered model exports to TorchScript and scores as the eager model does, at several batch sizes and
with empty, full-length and mixed histories (issue 33): a model registered without export coverage fails here."""

from __future__ import annotations

import pytest
import torch

from helpers import raw_rows
from loopctr.cli.main import main
from loopctr.models import MODELS
from loopctr.serve.predictor import Predictor, program_inputs

SMALL = {
    "dnn": ["hidden_units=[16]"], "din": ["dnn_hidden_units=[16]", "attention_hidden_units=[8]"],
    "dcnv2": ["parallel_dnn_hidden_units=[16]"], "dlrm": ["bottom_mlp_units=[16]", "top_mlp_units=[16]"],
    "wukong": ["fmb_hidden_units=[16]", "fmb_tokens=4", "lcb_tokens=4", "dnn_hidden_units=[16]"],
    "fat": ["ffn_hidden_dim=16", "dnn_hidden_units=[16]"], "bst": ["num_heads=2", "dnn_hidden_units=[16]"],
    "onetrans": ["model_dim=16", "num_heads=2", "dnn_hidden_units=[16]"],
    "hstu": ["model_dim=16", "qk_dim=8", "v_dim=8", "dnn_hidden_units=[16]"],
    "mtgr": ["model_dim=16", "qk_dim=8", "v_dim=8", "dnn_hidden_units=[16]"],
    "suan": ["dnn_hidden_units=[16]"], "lightsuan": ["dnn_hidden_units=[16]", "window=3", "dilation=2"],
    "loopctr": ["d_model=16", "n_heads=2", "ffn_hidden=16", "head_hidden_units=[16]", "train_loops=2"],
}


def test_every_registered_model_has_export_coverage():
    assert set(MODELS) == set(SMALL)


def rows_of_every_history_width(tiny_data, predictor, n: int) -> list[dict]:
    rows = raw_rows(tiny_data, n=max(n, 3))[:n]
    longest = predictor.sequence_limit
    for i, row in enumerate(rows):
        width = (0, longest, 1 + i % longest)[i % 3]  # empty, full length, in between
        for name in ("item_history", "cate_history"):
            tokens = (row[name].split("^") if row[name] else []) or ["1"]
            row[name] = "^".join((tokens * longest)[:width])
    return rows


@pytest.mark.parametrize("name", sorted(SMALL))
def test_torchscript_export_scores_as_the_model(name, tiny_data, tmp_path):
    run = tmp_path / name
    assert main(["train", "--data", str(tiny_data), "--model", name, "--out", str(run), "epochs=1",
                 "batch_size=64", "threads=1", "embedding_dim=8", *SMALL[name]]) == 0
    assert main(["export", "--run", str(run)]) == 0
    program = torch.jit.load(str(run / "export-torchscript" / "model.pt"))
    predictor = Predictor(run)
    for n in (1, 7, 40, 300):
        rows = rows_of_every_history_width(tiny_data, predictor, n)
        batch = predictor.encode(predictor.validate(rows))
        with torch.no_grad():
            eager = torch.sigmoid(predictor.model(batch)["logits"])
            exported = program(program_inputs(batch, predictor.schema))
        assert (exported - eager).abs().max() <= 1e-5, f"{name} at {n} rows"
