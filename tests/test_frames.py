"""The in-memory API: prepare from pandas DataFrames / pyarrow Tables, and score a DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from loopctr.cli.main import main
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_frames
from loopctr.errors import UserError

quiet = dict(log=lambda *a: None)


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 30, rows)
    history = ["^".join(f"i{j}" for j in rng.integers(0, 30, rng.integers(0, 6))) for _ in range(rows)]
    return pd.DataFrame({"label": (items % 3 == 0).astype(int), "user_id": [f"u{u}" for u in rng.integers(0, 20, rows)],
                         "item_id": [f"i{i}" for i in items], "cate_id": [f"c{i % 4}" for i in items],
                         "item_history": history,
                         "cate_history": ["^".join(f"c{int(t[1:]) % 4}" for t in h.split("^")) if h else ""
                                          for h in history]})


def test_dataframes_prepare_train_and_score_as_files_do(tmp_path):
    frames = {"train": frame(300, 0), "valid": frame(80, 1), "test": frame(80, 2)}
    meta = prepare_frames("amazon-electronics-x1", frames, tmp_path / "data", **quiet)
    assert {s: v["rows"] for s, v in meta["splits"].items()} == {"train": 300, "valid": 80, "test": 80}
    # a pyarrow Table of the same rows is the same preparation: reused, not redone
    again = prepare_frames("amazon-electronics-x1", {k: pa.Table.from_pandas(v) for k, v in frames.items()},
                           tmp_path / "data", **quiet)
    assert again["fingerprint"] == meta["fingerprint"] and again["prepare_seconds"] == meta["prepare_seconds"]
    with pytest.raises(UserError, match="--overwrite|overwrite"):  # other tables into the same directory
        prepare_frames("amazon-electronics-x1", {**frames, "test": frame(80, 3)}, tmp_path / "data", **quiet)

    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--model", "din", "--out", str(run), "epochs=1",
                 "threads=1", "embedding_dim=8", "dnn_hidden_units=[8]", "attention_hidden_units=[8]"]) == 0
    from loopctr.serve.predictor import Predictor

    predictor = Predictor(run)
    served = predictor.predict(PreparedDataset(tmp_path / "data").raw_rows("test", 80))
    predictor.max_rows = 30  # several chunks
    scores = predictor.predict_table(frames["test"])
    np.testing.assert_allclose(scores, served, atol=1e-6)
    assert scores.shape == (80,)


def test_bad_frames_are_named():
    good = frame(20, 0)
    for frames, message in [({"valid": good}, "needs a 'train' split"),
                            ({"train": good.drop(columns="cate_id")}, "missing column"),
                            ({"train": good.assign(item_id=[None] + ["i1"] * 19)}, r"row 1, column 'item_id'")]:
        with pytest.raises(UserError, match=message):
            prepare_frames("amazon-electronics-x1", frames, "/nonexistent/never-written", **quiet)
