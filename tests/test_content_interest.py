"""Item content vectors (`prepare --content`) and the content interest module (layers/content_interest.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY_SYNTHETIC
from helpers import raw_rows
from loopctr.cli.main import main
from loopctr.data.batch import Jagged
from loopctr.data.content import read_item_vectors
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_dataset
from loopctr.errors import UserError
from loopctr.layers.content_interest import ContentInterest
from loopctr.layers.reference import content_interest_reference
from loopctr.serve.predictor import Predictor, program_inputs

quiet = dict(log=lambda *a: None)
ITEMS = 300  # the tiny synthetic dataset's items: tokens "0" .. "299"


def item_vectors(dim=6, items=ITEMS, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(items, dim)).astype(np.float32)


# -- reading the files -------------------------------------------------------------------------------
def test_every_format_reads_the_same_vectors(tmp_path):
    vectors = item_vectors(items=5)
    ids = np.array([10, 11, 12, 13, 14])
    np.savez(tmp_path / "v.npz", key=ids, value=vectors)
    np.save(tmp_path / "v.npy", np.column_stack([ids, vectors]))
    pq.write_table(pa.table({"item": ids, "vec": list(vectors)}), tmp_path / "list.parquet")
    pq.write_table(pa.table({"item": ids.astype(str), **{f"c{j}": vectors[:, j] for j in range(6)}}),
                   tmp_path / "columns.parquet")
    for name in ("v.npz", "v.npy", "list.parquet", "columns.parquet"):
        tokens, values = read_item_vectors(tmp_path / name)
        assert tokens.to_pylist() == ["10", "11", "12", "13", "14"], name
        np.testing.assert_allclose(values, vectors, rtol=1e-6, err_msg=name)


def test_bad_vector_files_are_named(tmp_path):
    np.savez(tmp_path / "dup.npz", key=np.array([1, 2, 1]), value=np.zeros((3, 2)))
    np.savez(tmp_path / "nan.npz", key=np.array([1, 2]), value=np.array([[0, 1], [np.nan, 0]]))
    np.save(tmp_path / "frac.npy", np.array([[1.5, 0.0], [2.0, 1.0]]))
    (tmp_path / "v.csv").write_text("1,2\n")
    for name, message in [("dup.npz", "id '1' has more than one vector"), ("nan.npz", r"id '2' \(row 1\)"),
                          ("frac.npy", "must be whole numbers"), ("v.csv", "must be one of"),
                          ("missing.npz", "not found")]:
        with pytest.raises(UserError, match=message):
            read_item_vectors(tmp_path / name)


# -- prepare -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def content_data(tmp_path_factory):
    """The tiny synthetic dataset with content vectors for every item but the last 50 (items without one) and
    for one item that no split has (a cold-start item: it joins the vocabulary)."""
    root = tmp_path_factory.mktemp("content")
    vectors = item_vectors(items=ITEMS + 1)
    keys = np.array([str(i) for i in range(ITEMS - 50)] + ["new-item"])
    np.savez(root / "items.npz", key=keys, value=np.concatenate([vectors[:ITEMS - 50], vectors[-1:]]))
    prepare_dataset("synthetic", root / "data", synthetic_overrides=TINY_SYNTHETIC,
                    content={"item_id": root / "items.npz"}, **quiet)
    return root / "data", vectors


def test_prepare_aligns_content_with_the_vocabulary(content_data):
    path, vectors = content_data
    ds = PreparedDataset(path)
    info = ds.meta["content"]["item_id"]
    assert info["dim"] == 6 and "pretrained" not in ds.meta  # content replaces no embedding table
    matrix = np.load(path / info["file"])
    tokens = ds.vocabularies["item_id"]
    assert matrix.shape == (len(tokens) + 2, 6) and not matrix[:2].any()  # padding and OOV rows are zeros
    # the file's items that training lacks (the cold-start item, and tiny items no training row has) come last
    assert tokens[-1] == "new-item" and 1 <= info["added_to_vocabulary"] < 50 and len(set(tokens)) == len(tokens)
    for i, token in enumerate(tokens[:-1]):
        expected = vectors[int(token)] if int(token) < ITEMS - 50 else np.zeros(6)
        np.testing.assert_array_equal(matrix[i + 2], expected)
    np.testing.assert_array_equal(matrix[-1], vectors[-1])
    assert info["found"] == sum(t == "new-item" or int(t) < ITEMS - 50 for t in tokens)
    assert set(ds.pretrained_vectors()) == {"content:item_id"}


def test_content_is_part_of_the_preparation_identity(content_data, tmp_path):
    path, _ = content_data
    with pytest.raises(UserError, match="--overwrite"):  # the same sources without the content file differ
        prepare_dataset("synthetic", path, synthetic_overrides=TINY_SYNTHETIC, **quiet)
    with pytest.raises(UserError, match="not a vocabulary"):
        prepare_dataset("synthetic", tmp_path / "x", synthetic_overrides=TINY_SYNTHETIC,
                        content={"movie": path / "schema.json"}, **quiet)


# -- the module --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jagged_content_interest_equals_the_padded_reference(seed):
    g = torch.Generator().manual_seed(seed)
    rows, vocab, k = 7, 20, 5
    lengths = torch.randint(0, 9, (rows,), generator=g)
    lengths[0] = 0  # an empty history
    module = ContentInterest(dim=4, event_dim=k)
    module.attach(vocab, 3, "item_id", "item_history")
    module.load(torch.randn(vocab, 3, generator=g) * torch.tensor([[0.0]] * 3 + [[1.0]] * (vocab - 3)))
    target = torch.randint(0, vocab, (rows,), generator=g)
    history = Jagged.from_lengths({"item_history": torch.randint(0, vocab, (int(lengths.sum()),), generator=g)},
                                  lengths)

    class B:  # the two attributes ContentInterest reads of a Batch
        features = {"item_id": target}

        @staticmethod
        def jagged(name):
            return history

    events = torch.randn(int(lengths.sum()), k, generator=g, requires_grad=True)
    out = module(B, events)
    padded_events = history.to_dense(events)
    ref = content_interest_reference(module, target, history.to_dense(history.values["item_history"]),
                                     padded_events, history.mask())
    torch.testing.assert_close(out, ref)
    assert out.shape == (rows, 2 * 4 + k) and not out[0, 4:].any()  # an empty row has no interest
    grads = torch.autograd.grad(out.square().sum(), [events, module.proj.weight])
    ref_grads = torch.autograd.grad(
        content_interest_reference(module, target, history.to_dense(history.values["item_history"]),
                                   history.to_dense(events), history.mask()).square().sum(),
        [events, module.proj.weight])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert "vectors" in module.state_dict() and all(p is not module.vectors for p in module.parameters())


# -- models ------------------------------------------------------------------------------------------
SMALL = {"din": ["dnn_hidden_units=[16]", "attention_hidden_units=[8]"],
         "loopctr": ["d_model=16", "n_heads=2", "ffn_hidden=16", "head_hidden_units=[16]", "train_loops=2"]}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_models_read_content_serve_it_and_export_it(name, content_data, tmp_path):
    path, _ = content_data
    run = tmp_path / name
    assert main(["train", "--data", str(path), "--model", name, "--out", str(run), "epochs=1", "batch_size=64",
                 "threads=1", "embedding_dim=8", "model.content_interest=true", *SMALL[name]]) == 0
    predictor = Predictor(run)
    module = predictor.model.content
    prepared = torch.from_numpy(np.load(path / "content" / "item_id.npy"))
    torch.testing.assert_close(module.vectors, prepared)  # frozen and carried by the checkpoint
    assert module.proj.in_features == 6 and module.proj.out_features == 8
    assert main(["export", "--run", str(run)]) == 0
    program = torch.jit.load(str(run / "export-torchscript" / "model.pt"))
    batch = predictor.encode(predictor.validate(raw_rows(path, n=50)))
    with torch.no_grad():
        eager = torch.sigmoid(predictor.model(batch)["logits"])
        torch.testing.assert_close(program(program_inputs(batch, predictor.schema)), eager, atol=1e-5, rtol=0)
        # the content path is used: other vectors change the scores
        module.vectors.mul_(-1.0)
        assert not torch.allclose(torch.sigmoid(predictor.model(batch)["logits"]), eager)


def test_content_interest_without_content_vectors_says_how_to_get_them(tiny_data, tmp_path):
    from loopctr.cli.main import main as cli

    assert cli(["train", "--data", str(tiny_data), "--model", "din", "--out", str(tmp_path / "r"), "epochs=1",
                "threads=1", "model.content_interest=true", *SMALL["din"]]) == 2


def test_models_without_content_interest_ignore_the_vectors(content_data, tmp_path):
    """The same model on the same split trains to the same scores whatever the content vectors are."""
    path, _ = content_data
    with np.load(path.parent / "items.npz") as f:
        np.savez(tmp_path / "other.npz", key=f["key"], value=-3.0 * f["value"])
    other = tmp_path / "other-data"
    prepare_dataset("synthetic", other, synthetic_overrides=TINY_SYNTHETIC,
                    content={"item_id": tmp_path / "other.npz"}, **quiet)
    scores = []
    for data, out in ((path, "with"), (other, "other")):
        assert main(["train", "--data", str(data), "--model", "din", "--out", str(tmp_path / out), "epochs=1",
                     "batch_size=64", "threads=1", "embedding_dim=8", "seed=3", *SMALL["din"]]) == 0
        lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
        scores.append([line for line in lines if '"event": "valid"' in line])  # no timings
        assert Predictor(tmp_path / out).model.content is None
    assert scores[0] and scores[0] == scores[1]


# -- cold and warm rows ------------------------------------------------------------------------------
def test_evaluate_reports_cold_and_warm_rows(tiny_data, tiny_dataset, tmp_path):
    from loopctr.metrics import auc
    from loopctr.train.evaluate import evaluate_run

    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--model", "din", "--out", str(run), "epochs=1",
                 "batch_size=64", "threads=1", "embedding_dim=8", *SMALL["din"]]) == 0
    report = evaluate_run(run, "test", cold="item_id:3")
    counts = np.bincount(np.asarray(tiny_dataset.split("train").column("item_id")))
    ids = np.asarray(tiny_dataset.split("test").column("item_id"))
    cold = (np.pad(counts, (0, 1000))[ids] < 3) | (ids <= 1)
    slices = report["slices"]
    assert slices["cold"]["rows"] == int(cold.sum()) and 0 < cold.sum() < ids.shape[0]
    assert slices["cold"]["rows"] + slices["warm"]["rows"] == report["rows"]
    labels = np.asarray(tiny_dataset.split("test").column("_label"))
    assert slices["cold"]["positives"] == int(labels[cold].sum())
    assert main(["evaluate", "--run", str(run), "--cold", "item_id:3"]) == 0
    # the warm slice's AUC is that of the served scores on the same rows
    probs = np.asarray(Predictor(run).predict(raw_rows(tiny_data, n=ids.shape[0])))
    assert abs(auc(labels[~cold], probs[~cold]) - slices["warm"]["auc"]) < 1e-4
    for bad in ("item_id", "item_history:5", "nope:5", "item_id:0"):
        with pytest.raises(UserError, match="expected FIELD:N"):
            evaluate_run(run, "test", cold=bad)


def test_cold_rows_are_counted_in_the_rows_trained_on(tiny_dataset):
    from loopctr.train.evaluate import frequency_slices

    items = np.asarray(tiny_dataset.split("train").column("item_id"))
    some = np.arange(0, items.shape[0], 4)  # a quarter of the training rows
    whole, part = frequency_slices(tiny_dataset, "test", "item_id:3"), frequency_slices(tiny_dataset, "test",
                                                                                         "item_id:3", some)
    ids = np.asarray(tiny_dataset.split("test").column("item_id"))
    counts = np.bincount(items[some], minlength=tiny_dataset.vocab_sizes["item_id"])
    np.testing.assert_array_equal(part["cold"]["mask"], (counts[ids] < 3) | (ids <= 1))
    assert part["cold"]["mask"].sum() > whole["cold"]["mask"].sum() and "rows trained on" in part["cold"]["rule"]
