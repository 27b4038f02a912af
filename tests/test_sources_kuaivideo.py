"""KuaiVideo_x1: no sample exists, so the fixture is written here in the documented format."""

import numpy as np
import pytest

from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_dataset
from loopctr.errors import UserError

quiet = dict(log=lambda *a: None)
HEADER = "timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items"


def write_fixture(d, rows=80, items=15, users=4, seed=0):
    """train.csv / test.csv sorted by timestamp, as reczoo's convert_kuaivideo_x1.py writes them."""
    rng = np.random.default_rng(seed)
    lines = []
    for t in range(rows):
        pos = "^".join(map(str, rng.integers(0, items, int(rng.integers(1, 5)))))
        neg = "" if t % 5 == 0 else "^".join(map(str, rng.integers(0, items, 2)))
        lines.append(f"{t},{t % users},{int(rng.integers(0, items))},{int(rng.random() < 0.3)},0,0,{pos},{neg}")
    d.mkdir(parents=True, exist_ok=True)
    cut = int(rows * 0.8)
    (d / "train.csv").write_text("\n".join([HEADER] + lines[:cut]) + "\n")
    (d / "test.csv").write_text("\n".join([HEADER] + lines[cut:]) + "\n")
    return rng.normal(size=(items, 64)).astype(np.float32)


def check_pretrained(out, vectors):
    ds = PreparedDataset(out)
    meta = ds.meta["pretrained"]["item_emb"]
    assert meta["dim"] == 64 and meta["freeze"] is True
    matrix = np.load(out / meta["file"])
    vocab = ds.vocabularies["item_emb"]
    assert matrix.shape == (len(vocab) + 2, 64)
    assert not matrix[:2].any()  # padding and OOV rows are zeros
    for k, token in enumerate(vocab):
        np.testing.assert_array_equal(matrix[k + 2], vectors[int(token)])
    # the copies carry the same ids as their originals' tokens
    train = ds.split("train")
    items = np.asarray(train.column("item_id"))
    item_emb = np.asarray(train.column("item_emb"))
    assert [ds.vocabularies["item_id"][i - 2] for i in items if i >= 2][:5] == \
        [vocab[i - 2] for i, j in zip(item_emb, items) if j >= 2][:5]


def test_npz_embeddings_and_time_holdout(tmp_path):
    vectors = write_fixture(tmp_path / "src")
    np.savez(tmp_path / "src" / "item_visual_emb_dim64.npz", key=np.arange(15), value=vectors)
    meta = prepare_dataset("kuaivideo-x1", tmp_path / "out", source_dir=tmp_path / "src", **quiet)
    assert meta["splits"]["test"]["rows"] == 16
    assert meta["splits"]["train"]["rows"] + meta["splits"]["valid"]["rows"] == 64
    assert meta["source"]["valid"].startswith("the newest")
    check_pretrained(tmp_path / "out", vectors)


def test_h5_embeddings(tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py is an optional extra (pip install 'loopctr[h5]')")
    vectors = write_fixture(tmp_path / "src")
    with h5py.File(tmp_path / "src" / "item_visual_emb_dim64.h5", "w") as hf:  # as convert_kuaivideo_x1.py
        hf.create_dataset("key", data=list(range(len(vectors))))
        hf.create_dataset("value", data=vectors)
    prepare_dataset("kuaivideo-x1", tmp_path / "out", source_dir=tmp_path / "src", test_as_valid=True, **quiet)
    check_pretrained(tmp_path / "out", vectors)


def test_missing_or_bad_embeddings_are_loud(tmp_path):
    write_fixture(tmp_path / "src")
    with pytest.raises(UserError, match="item_visual_emb_dim64.h5 or item_visual_emb_dim64.npz not found"):
        prepare_dataset("kuaivideo-x1", tmp_path / "out", source_dir=tmp_path / "src", **quiet)
    meta = prepare_dataset("kuaivideo-x1", tmp_path / "out", source_dir=tmp_path / "src",
                           synthetic_overrides=["embeddings=optional"], **quiet)
    assert "pretrained" not in meta
    np.savez(tmp_path / "src" / "item_visual_emb_dim64.npz", key=np.arange(3), value=np.zeros((2, 64)))
    with pytest.raises(UserError, match=r"the vectors must be \[len\(ids\), dim\]"):
        prepare_dataset("kuaivideo-x1", tmp_path / "out2", source_dir=tmp_path / "src", **quiet)
    (tmp_path / "src" / "item_visual_emb_dim64.npz").unlink()
    (tmp_path / "src" / "item_visual_emb_dim64.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="h5py|HDF5"):
        prepare_dataset("kuaivideo-x1", tmp_path / "out2", source_dir=tmp_path / "src", **quiet)
    assert not (tmp_path / "out2").exists()


def test_bad_sequence_names_line_before_the_holdout(tmp_path):
    vectors = write_fixture(tmp_path / "src")
    np.savez(tmp_path / "src" / "item_visual_emb_dim64.npz", key=np.arange(15), value=vectors)
    lines = (tmp_path / "src" / "train.csv").read_text().splitlines()
    parts = lines[60].split(",")
    parts[6] = "1^^2"
    lines[60] = ",".join(parts)
    (tmp_path / "src" / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"train.csv:61, column 'pos_items': malformed sequence"):
        prepare_dataset("kuaivideo-x1", tmp_path / "out", source_dir=tmp_path / "src", **quiet)


# -- the models read the prepared vectors ---------------------------------------------------------------
@pytest.mark.parametrize("usage,trainable", [("init", 0), ("sum", 1), ("concat", 1)])
def test_pretrained_table_usages(usage, trainable):
    import torch

    from loopctr.layers.embedding import PretrainedTable

    table = PretrainedTable(10, 6, 4, usage, freeze=True)
    ids = torch.tensor([[0, 3, 9]])
    assert table(ids).shape == (1, 3, 4)
    assert not table.vectors.weight.requires_grad
    table(ids).sum().backward()
    assert table.vectors.weight.grad is None
    assert (table.id_table is not None) == bool(trainable)
    same_size = PretrainedTable(10, 4, 4, "init")
    same_size.vectors.weight.data.normal_()
    torch.testing.assert_close(same_size(ids), same_size.vectors.weight[ids])  # no projection needed


def test_training_uses_the_pretrained_vectors_and_runs_serve_them(tmp_path):
    import torch

    from loopctr.cli.main import main
    from loopctr.serve.predictor import Predictor

    vectors = write_fixture(tmp_path / "src", rows=200)
    np.savez(tmp_path / "src" / "item_visual_emb_dim64.npz", key=np.arange(15), value=vectors)
    prepare_dataset("kuaivideo-x1", tmp_path / "data", source_dir=tmp_path / "src", **quiet)
    prepared = np.load(tmp_path / "data" / "pretrained" / "item_emb.npy")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--model", "dnn", "--out", str(run), "epochs=1",
                 "batch_size=32", "threads=1", "embedding_dim=8", "hidden_units=[8]", "monitor=auc"]) == 0
    model = Predictor(run).model
    table = model.embedding.tables["item_emb"]
    torch.testing.assert_close(table.vectors.weight, torch.from_numpy(prepared))  # frozen: still the vectors
    assert table.proj.in_features == 64 and table.proj.out_features == 8
    assert main(["evaluate", "--run", str(run), "--data", str(tmp_path / "data")]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--model", "dnn", "--out", str(tmp_path / "none"),
                 "epochs=1", "batch_size=32", "threads=1", "embedding_dim=8", "hidden_units=[8]",
                 "monitor=auc", "pretrained_usage=none"]) == 0
    assert isinstance(Predictor(tmp_path / "none").model.embedding.tables["item_emb"], torch.nn.Embedding)
