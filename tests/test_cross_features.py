"""Pre-trained explicit cross features (`loopctr pretrain-cross`, layers/cross_features.py, PCF-GNN-style)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch

from helpers import field_moves_scores, raw_rows
from loopctr.cli.main import main
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_frames
from loopctr.data.schema import schema_from_dict
from loopctr.errors import UserError
from loopctr.layers.cross_features import CROSS_FOLDS, CrossGNN, PairCrossFeatures, cross_logit, row_fold
from loopctr.layers.reference import cross_gnn_states_reference
from loopctr.serve.predictor import Predictor, program_inputs
from loopctr.train.pretrain_cross import pair_statistics, pretrain_cross

PAIRS = ["user:item", "user:hour"]
SCHEMA = {"name": "pairs", "label": "label", "group": "user",
          "fields": [{"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
                     {"name": "hour", "type": "categorical"},
                     {"name": "item_history", "type": "sequence", "share_vocab": "item", "max_len": 5}]}


def pair_rows(rows: int, seed: int) -> pa.Table:
    """Users and items in 4 groups each: a row is clicked with probability 0.8 when the two groups match,
    0.2 otherwise, so a pair's rate is predictable from its two values (of rank 4), seen together or not."""
    rng = np.random.default_rng(seed)
    user, item, hour = rng.integers(0, 20, rows), rng.integers(0, 24, rows), rng.integers(0, 24, rows)
    label = (rng.random(rows) < np.where(user % 4 == item % 4, 0.8, 0.2)).astype(np.int64)
    history = ["^".join(str(i) for i in rng.integers(0, 24, rng.integers(0, 6))) for _ in range(rows)]
    return pa.table({"label": label, "user": user.astype(str), "item": item.astype(str),
                     "hour": hour.astype(str), "item_history": history})


@pytest.fixture(scope="module")
def cross_data(tmp_path_factory):
    """A small prepared dataset of user, item, hour and a history, with the cross features of two pairs
    pre-trained into it, and the pre-training report."""
    path = tmp_path_factory.mktemp("cross") / "pairs"
    frames = {"train": pair_rows(3000, 0), "valid": pair_rows(400, 1), "test": pair_rows(400, 2)}
    prepare_frames(schema_from_dict(SCHEMA), frames, path, log=lambda *a: None)
    report = pretrain_cross(path, PAIRS, ["steps=200", "threads=1"], log=lambda *a: None)
    return path, report


def test_pair_statistics_count_every_pair():
    rng = np.random.default_rng(0)
    left, right, labels = rng.integers(0, 7, 500), rng.integers(0, 5, 500), rng.integers(0, 2, 500)
    got = pair_statistics(left, right, labels, right_size=5)
    impressions, clicks = Counter(zip(left, right)), Counter(p for p, y in zip(zip(left, right), labels) if y)
    assert sorted(zip(*got[:2])) == sorted(impressions)
    for a, b, n, c in zip(*got):
        assert (n, c) == (impressions[(a, b)], clicks[(a, b)])


@pytest.mark.parametrize("seed", range(3))
def test_message_passing_equals_the_dense_reference(seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sizes = {"u": int(rng.integers(3, 12)), "i": int(rng.integers(3, 12)), "c": int(rng.integers(2, 6))}
    pairs = [("u:i", "u", "i"), ("u:c", "u", "c"), ("i:c", "i", "c")]
    model = CrossGNN(sizes, pairs, dim=4, layers=int(rng.integers(1, 3)))
    edges = {name: (torch.as_tensor(rng.integers(0, sizes[a], 20)), torch.as_tensor(rng.integers(0, sizes[b], 20)))
             for name, a, b in pairs}  # repeated edges count twice in either version
    fast, reference = model.node_states(edges), cross_gnn_states_reference(model, edges)
    for vocab in sizes:
        torch.testing.assert_close(fast[vocab], reference[vocab])
    weights = {v: torch.randn_like(x) for v, x in fast.items()}
    used = [p for n, p in model.named_parameters() if not n.startswith("heads")]  # the decoder comes after
    grads = [torch.autograd.grad(sum((states[v] * weights[v]).sum() for v in sizes), used)
             for states in (fast, reference)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_pretraining_generalises_to_pairs_it_never_saw(cross_data):
    """The rate of a (user, item) pair is predictable from its two values here: on the held-out pairs the network
    beats the statistics table, which knows nothing of an unseen pair. The hour carries no signal: there the
    network may not do worse than the table (the kept step is chosen on the held-out pairs, step 0 included)."""
    path, report = cross_data
    meta = json.loads((path / "schema.json").read_text())
    data = PreparedDataset(path)
    assert report["user:item"]["held_out_error"] < 0.9 * report["user:item"]["held_out_error_of_table"]
    assert report["user:item"]["fold_error"] < 0.95 * report["user:item"]["fold_error_of_table"]
    for pair in PAIRS:
        r = report[pair]
        assert meta["cross"][pair] == r
        assert r["held_out_error"] <= r["held_out_error_of_table"] + 1e-6, pair
        assert 0 < r["held_out_pairs"] < r["seen_pairs"]
        left, right, left_folds, right_folds = (np.load(path / r["files"][side]) for side in PairCrossFeatures.SIDES)
        fields = pair.split(":")
        assert left.shape == (data.vocab_sizes[data.schema.field(fields[0]).vocab], r["dim"])
        assert right.shape == (data.vocab_sizes[data.schema.field(fields[1]).vocab], r["dim"])
        assert left_folds.shape == (CROSS_FOLDS, *left.shape) and right_folds.shape == (CROSS_FOLDS, *right.shape)
        assert r["stored_bytes"] == left.nbytes + right.nbytes and r["table_bytes"] == 12 * r["seen_pairs"]
        assert r["stored_bytes_with_folds"] == (1 + CROSS_FOLDS) * r["stored_bytes"]


def test_the_cross_feature_follows_the_pairs_rate(cross_data):
    """Seen pairs with a higher smoothed rate get a higher predicted log-odds (a rank correlation well above 0)."""
    path, report = cross_data
    data = PreparedDataset(path)
    train = data.split("train")
    left, right, n, c = pair_statistics(np.asarray(train.column("user")), np.asarray(train.column("item")),
                                        np.asarray(train.labels), data.vocab_sizes["item"])
    files = report["user:item"]["files"]
    a, b = (torch.from_numpy(np.load(path / files[s])) for s in ("left", "right"))
    predicted = cross_logit(a[torch.as_tensor(left)], b[torch.as_tensor(right)]).numpy()
    rate = (c + 10 * report["user:item"]["rate"]) / (n + 10)
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(ranks(predicted), ranks(rate))[0, 1] > 0.3


def test_row_folds_are_balanced_and_fixed():
    left, right = torch.meshgrid(torch.arange(2, 202), torch.arange(2, 302), indexing="ij")
    folds = row_fold([left.flatten(), right.flatten(), torch.ones(left.numel(), dtype=torch.long)])
    shares = torch.bincount(folds, minlength=CROSS_FOLDS) / folds.numel()
    assert folds.min() >= 0 and folds.max() < CROSS_FOLDS
    assert torch.allclose(shares, torch.full((CROSS_FOLDS,), 1 / CROSS_FOLDS), atol=0.01)
    big = [torch.tensor([2**31 - 1, 17]), torch.tensor([2**31 - 2, 2**31 - 1])]  # the largest ids: no overflow
    assert torch.equal(row_fold(big), row_fold([b.clone() for b in big])) and row_fold(big).min() >= 0
    assert not torch.equal(row_fold(big), row_fold(big[::-1]))  # the order of the fields counts


def test_a_training_rows_feature_never_saw_its_own_label(cross_data, tmp_path):
    """Swap the labels of a clicked and an unclicked row of one fold (the click rate unchanged): the network
    without that fold, which gives those rows their training features, stays exactly the same; the network of
    all rows (evaluation, serving) moves."""
    path, report = cross_data
    copy = tmp_path / "swapped"
    shutil.copytree(path, copy)
    train = PreparedDataset(copy).split("train")
    labels = np.array(train.labels)
    fold = row_fold([torch.as_tensor(np.asarray(train.column(f))) for f in ("user", "item", "hour")]).numpy()
    k = int(fold[0])
    clicked = int(np.flatnonzero((fold == k) & (labels == 1))[0])
    unclicked = int(np.flatnonzero((fold == k) & (labels == 0))[0])
    labels[[clicked, unclicked]] = labels[[unclicked, clicked]]
    np.save(copy / "train" / "_label.npy", labels)
    assert np.asarray(PreparedDataset(copy).split("train").labels)[clicked] == 0
    swapped = pretrain_cross(copy, PAIRS, ["steps=200", "threads=1"], log=lambda *a: None)
    for pair in PAIRS:
        before_files, after_files = report[pair]["files"], swapped[pair]["files"]
        for side in ("left_folds", "right_folds"):
            before, after = np.load(path / before_files[side]), np.load(copy / after_files[side])
            np.testing.assert_array_equal(after[k], before[k])
    # user:item's network of all rows moves (user:hour's kept step 0: its hour carries nothing)
    files = report["user:item"]["files"], swapped["user:item"]["files"]
    assert not np.array_equal(np.load(path / files[0]["left"]), np.load(copy / files[1]["left"]))


def test_training_reads_the_out_of_fold_matrices_and_inference_the_full_ones(cross_data):
    path, _ = cross_data
    data = PreparedDataset(path)
    module = PairCrossFeatures(["user:item"], ["user", "item", "hour"])
    files = data.meta["cross"]["user:item"]["files"]
    matrices = {side: np.load(path / files[side]) for side in module.SIDES}
    module.attach("user:item", matrices["left"].shape, matrices["right"].shape)
    module.load("user:item", matrices)
    from loopctr.data.loader import BatchLoader

    batch = next(iter(BatchLoader(data.split("train"), 64).batches()))
    u, i = batch.features["user"], batch.features["item"]
    m = {side: torch.from_numpy(a) for side, a in matrices.items()}
    fold = row_fold([u, i, batch.features["hour"]])
    torch.testing.assert_close(module.train()(batch)["user:item"],
                               cross_logit(m["left_folds"][fold, u], m["right_folds"][fold, i]))
    torch.testing.assert_close(module.eval()(batch)["user:item"], cross_logit(m["left"][u], m["right"][i]))


@pytest.mark.parametrize("name", ["dnn", "dlrm", "din", "loopctr"])
def test_models_read_cross_features_serve_and_export_them(name, cross_data, tmp_path):
    path, _ = cross_data
    run = tmp_path / name
    assert main(["train", "--data", str(path), "--model", name, "--out", str(run), "epochs=1", "batch_size=64",
                 "threads=1", "embedding_dim=8", f"model.cross_features=[{','.join(PAIRS)}]"]) == 0
    predictor = Predictor(run)
    cross = predictor.model.embedding.cross
    assert sorted(cross.pairs) == sorted(PAIRS)
    prepared = np.load(path / json.loads((path / "schema.json").read_text())["cross"][PAIRS[0]]["files"]["left"])
    torch.testing.assert_close(getattr(cross, cross._buffer(PAIRS[0], "left")), torch.from_numpy(prepared))
    # requests carry no cross fields: the model computes them from the ids
    batch = predictor.encode(predictor.validate(raw_rows(path, n=50)))
    assert not set(PAIRS) & set(batch.features)
    assert main(["export", "--run", str(run)]) == 0
    program = torch.jit.load(str(run / "export-torchscript" / "model.pt"))
    with torch.no_grad():
        eager = torch.sigmoid(predictor.model(batch)["logits"])
        torch.testing.assert_close(program(program_inputs(batch, predictor.schema)), eager, atol=1e-5, rtol=0)
        for pair in PAIRS:  # every pair's feature is used: shifting its value changes the scores
            getattr(cross, cross._buffer(pair, "right"))[:, -1].add_(1.0)
            moved = torch.sigmoid(predictor.model(batch)["logits"])
            assert not torch.allclose(moved, eager, rtol=0, atol=1e-7), pair
            eager = moved


def test_served_scores_equal_evaluated_ones_and_follow_the_pair(cross_data, tmp_path):
    path, _ = cross_data
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--model", "dnn", "--out", str(run), "epochs=1", "threads=1",
                 "embedding_dim=8", "model.cross_features=[user:item]"]) == 0
    assert main(["evaluate", "--run", str(run), "--split", "test"]) == 0
    evaluated = json.loads((run / "eval.json").read_text())["auc"]
    from loopctr.metrics import auc

    data = PreparedDataset(path)
    rows = raw_rows(path, n=data.split("test").rows)
    served = Predictor(run).predict(rows)
    assert auc(np.asarray(data.split("test").labels), served) == pytest.approx(evaluated, abs=1e-6)
    assert field_moves_scores(run, path, "user")


def test_asking_for_missing_cross_features_says_how_to_make_them(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(tmp_path / "r"), "epochs=1",
                 "threads=1", "model.cross_features=[item_id:cate_id]"]) == 2
    assert "loopctr pretrain-cross" in capsys.readouterr().err


@pytest.mark.parametrize("pair, message", [("user", "not a pair of two fields"),
                                           ("user:user", "not a pair of two fields"),
                                           ("user:item_history", "not a categorical field"),
                                           ("user:nope", "not a categorical field")])
def test_bad_pairs_are_refused(cross_data, pair, message):
    path, _ = cross_data
    with pytest.raises(UserError, match=message):
        pretrain_cross(path, [pair], ["steps=1"], log=lambda *a: None)
    with pytest.raises(UserError, match=message):
        PreparedDataset(path).schema.with_cross_features([pair])


def test_cross_fields_cannot_be_declared_in_a_schema():
    raw = {"name": "x", "label": "y", "fields": [{"name": "a", "type": "numeric", "cross": True}]}
    with pytest.raises(UserError, match="cross"):
        schema_from_dict(raw)


def test_the_cli_writes_the_matrices_and_prints_the_comparison(tiny_data, tmp_path, capsys):
    path = tmp_path / "data"
    shutil.copytree(tiny_data, path)
    assert main(["pretrain-cross", str(path), "--pairs", "item_id:cate_id", "steps=20", "threads=1"]) == 0
    out = capsys.readouterr().out
    assert "held_out_error" in out and "item_id:cate_id" in out
    assert (path / "cross" / "item_id-cate_id.left.npy").is_file()
    assert "item_id:cate_id" in PreparedDataset(path).meta["cross"]
