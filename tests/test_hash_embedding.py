"""Binary-code hash embedding (issue 32): the block layout meets the requested compression, every id keeps
its own vector, padding stays zero, and `model.hash_embedding` works for every model and through the CLI."""

from __future__ import annotations

import math

import pytest
import torch

from loopctr.cli.main import main
from loopctr.config import apply_overrides
from loopctr.errors import UserError
from loopctr.layers.hash_embedding import BinaryCodeEmbedding, block_widths
from loopctr.models import build_model, model_class


@pytest.mark.parametrize("num_ids,compression", [(60_000, 10), (60_000, 100), (60_000, 1000), (4_082, 10),
                                                 (300, 2), (17, 1000)])
def test_block_layout_fits_the_budget_and_covers_every_bit(num_ids, compression):
    widths = block_widths(num_ids, compression)
    bits, width = math.ceil(math.log2(num_ids)), widths[0]
    assert sum(widths) == bits and set(widths[:-1]) <= {width} and widths[-1] <= width  # each bit in one block
    rows = lambda ws: sum(2 ** w for w in ws)  # noqa: E731
    assert rows(widths) <= num_ids / compression or width == 1
    if width < bits:  # the next wider blocks would not fit
        wider = [width + 1] * (bits // (width + 1)) + ([bits % (width + 1)] if bits % (width + 1) else [])
        assert rows(wider) > num_ids / compression


def test_blocks_are_the_bits_of_the_id_and_distinct_ids_get_distinct_vectors():
    torch.manual_seed(0)
    table = BinaryCodeEmbedding(1000, 4, compression=10)  # 10 bits, 100 rows: blocks of 6 and 4 bits, 64 + 16 rows
    assert (table.widths, table.table.num_embeddings) == ([6, 4], 80)
    assert table.compression == pytest.approx(1000 / 80)
    ids = torch.tensor([[0b1001_100101, 7]])
    assert table.rows(ids).tolist() == [[[0b100101, 64 + 0b1001], [7, 64]]]
    table.reset_parameters(1.0)
    vectors = table(torch.arange(1000))
    assert torch.equal(vectors[0], torch.zeros(4))  # the padding id
    assert torch.unique(vectors[1:].round(decimals=5), dim=0).shape[0] == 999  # no two ids collapse
    torch.testing.assert_close(vectors[0b1001_100101], table.table.weight[0b100101] + table.table.weight[64 + 0b1001])


@pytest.mark.parametrize("name", ["dnn", "din", "dcnv2", "loopctr", "suan"])
def test_every_model_takes_hashed_vocabularies(name, tiny_dataset, tiny_batch):
    small = {"dnn": ["hidden_units=[16]"], "din": ["dnn_hidden_units=[16]", "attention_hidden_units=[8]"],
             "dcnv2": ["parallel_dnn_hidden_units=[16]"], "suan": ["dnn_hidden_units=[16]"],
             "loopctr": ["d_model=16", "n_heads=2", "ffn_hidden=16", "head_hidden_units=[16]"]}[name]
    config = apply_overrides(model_class(name).config_class(embedding_dim=8),
                             [*small, "hash_embedding=[item_id]", "hash_compression=10"], "test")
    torch.manual_seed(0)
    model = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, config)
    full = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes,
                       apply_overrides(config, ["hash_embedding=[]"], "test"))
    table = model.embedding.tables["item_id"]
    assert isinstance(table, BinaryCodeEmbedding)
    saved = (tiny_dataset.vocab_sizes["item_id"] - table.table.num_embeddings) * 8
    assert full.parameter_counts()["embedding"] - model.parameter_counts()["embedding"] == saved > 0
    out = model(tiny_batch)
    model.loss(out, tiny_batch.label)[0].backward()
    assert table.table.weight.grad is not None and table.table.weight.grad.abs().sum() > 0


def test_hash_settings_are_checked(tiny_dataset):
    cls = model_class("dnn").config_class
    with pytest.raises(UserError, match="not vocabularies of the schema"):
        build_model("dnn", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                    apply_overrides(cls(), ["hash_embedding=[item_history]"], "test"))
    with pytest.raises(UserError, match="hash_compression must be >= 1"):
        apply_overrides(cls(), ["hash_compression=0.5"], "test")


def test_a_hashed_model_resumed_at_its_budget_equals_the_longer_run(tiny_data, tmp_path):
    settings = ["--data", str(tiny_data), "--model", "dnn", "batch_size=64", "threads=1", "embedding_dim=8",
                "hidden_units=[16]", "hash_embedding=[item_id,cate_id]", "hash_compression=4",
                "early_stop_patience=0"]
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    assert main(["train", "--out", str(straight), *settings, "epochs=2"]) == 0
    assert main(["train", "--out", str(extended), *settings, "epochs=1"]) == 0
    assert main(["train", "--out", str(extended), "--resume", "epochs=2"]) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(extended / "checkpoint.pt", weights_only=True)["model"]
    assert "embedding.tables.item_id.table.weight" in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- hashed vocabularies: no token list, a token never seen in training keeps an id and a vector of its own ---
HASHED_SCHEMA = """name: own
label: clicked
splits: {train: train.csv, valid: valid.csv, test: test.csv}
fields:
  - {name: user, type: categorical, hashed: true}
  - {name: item, type: categorical, hashed: true}
  - {name: shop, type: categorical}
  - {name: history, type: sequence, share_vocab: item, max_len: 4}
"""


def _hashed_dataset(tmp_path):
    from loopctr.data.prepare import prepare_dataset

    (tmp_path / "s.yaml").write_text(HASHED_SCHEMA)
    src = tmp_path / "src"
    src.mkdir()
    rows = [f"{i % 2},u{i % 7},i{i % 13},s{i % 3},i{(i + 1) % 13}^i{(i + 2) % 13}" for i in range(200)]
    (src / "train.csv").write_text("clicked,user,item,shop,history\n" + "\n".join(rows) + "\n")
    unseen = "1,u-new,i-new,s9,i-other^i1\n0,u1,i-other,s1,i-new\n"
    for split in ("valid", "test"):
        (src / f"{split}.csv").write_text("clicked,user,item,shop,history\n" + "\n".join(rows[:20]) + "\n" + unseen)
    prepare_dataset(str(tmp_path / "s.yaml"), tmp_path / "data", source_dir=src, log=lambda *a: None)
    return tmp_path / "data"


def test_token_codes_are_stable_and_never_the_reserved_ids():
    from loopctr.data.prepare import token_code

    assert (token_code("i1"), token_code("shop-42")) == (710570396, 2073836949)  # the same in every process
    assert all(2 <= token_code(f"t{i}") < 2 ** 31 for i in range(1000))


def test_a_hashed_vocabulary_gives_unseen_tokens_their_own_ids_and_predictions(tmp_path):
    import numpy as np

    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.prepare import token_code
    from loopctr.data.schema import OOV
    from loopctr.serve.predictor import Predictor

    data = _hashed_dataset(tmp_path)
    ds = PreparedDataset(data)
    assert ds.vocab_sizes == {"user": 7 + 2, "item": 13 + 2, "shop": 3 + 2}  # distinct training tokens + 2
    assert sorted(p.name for p in (data / "vocab").iterdir()) == ["shop.json"]  # hashed: no token list
    test = ds.split("test")
    items = np.asarray(test.column("item"))
    assert items[-2:].tolist() == [token_code("i-new"), token_code("i-other")]  # unseen, yet not OOV
    assert np.asarray(test.column("shop"))[-2] == OOV  # the ordinary vocabulary still maps unseen to OOV
    history = np.asarray(test.column("history"))
    assert history[-1] == token_code("i-new")  # shared by the sequence field

    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "dnn", "--out", str(run), "epochs=2", "batch_size=32",
                 "threads=1", "embedding_dim=8", "hidden_units=[16]", "hash_compression=2"]) == 0
    predictor = Predictor(run)
    table = predictor.model.embedding.tables["item"]
    # 31-bit codes in 1-bit blocks: the smallest table a hashed vocabulary has (2 rows per bit)
    assert isinstance(table, BinaryCodeEmbedding) and (table.widths, table.table.num_embeddings) == ([1] * 31, 62)
    row = {"user": "u1", "shop": "s1", "history": "i1^i2"}
    first, second, seen = predictor.predict([{**row, "item": "never-1"}, {**row, "item": "never-2"},
                                             {**row, "item": "i3"}])
    assert len({first, second, seen}) == 3  # two unseen items do not collapse onto one vector
    many = [{**row, "item": f"new-{i}"} for i in range(20)]  # the vectorised path encodes as the small one does
    assert predictor.predict(many)[:3] == pytest.approx(predictor.predict(many[:3]), abs=1e-6)
    assert main(["evaluate", "--run", str(run)]) == 0


def test_only_a_vocabulary_owner_can_be_hashed(tmp_path):
    from loopctr.data.schema import schema_from_dict
    import yaml

    raw = yaml.safe_load(HASHED_SCHEMA)
    raw["fields"][3]["hashed"] = True
    with pytest.raises(UserError, match="field 'history' cannot be hashed"):
        schema_from_dict(raw)
