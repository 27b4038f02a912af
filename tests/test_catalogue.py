"""The catalogue: every entry loads strictly, prepares through its layout, and `loopctr data` works."""

import json

import numpy as np
import pytest

from helpers import X1_TRAIN, write_x1
from loopctr.cli.main import main
from loopctr.data import catalog
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_dataset
from loopctr.data.sources import registry
from loopctr.errors import UserError

quiet = dict(log=lambda *a: None)
ENTRIES = ["amazon-electronics-x1", "avazu", "criteo", "frappe", "interactions", "kuaivideo-x1", "movielens",
           "taobao-ad-x1"]


def test_every_entry_loads_with_its_layout_and_defaults():
    assert set(ENTRIES) | {"synthetic"} <= set(catalog.names())
    for name in ENTRIES:
        e = catalog.entry(name)
        layout = registry.get(e.layout)
        registry.make_options(layout, e.options, [], name)  # the entry's options are valid
        assert e.defaults.get("model.embedding_dim") and e.defaults.get("train.batch_size"), name
        assert e.about.get("licence") and e.about.get("size"), name
        assert catalog.resolve(name) == e.schema


def test_catalogue_sections_do_not_loosen_the_schema(tmp_path):
    spec = tmp_path / "own.yaml"
    spec.write_text("name: own\nlabel: y\nfields:\n  - {name: a, type: categorical, maxlen: 3}\ndefaults: {x: 1}\n")
    with pytest.raises(UserError, match="unknown key 'maxlen'; did you mean 'max_len'"):
        catalog.entry(str(spec))
    spec.write_text("name: own\nlabel: y\nfields:\n  - {name: a, type: categorical}\nsource: {layuot: csv}\n")
    with pytest.raises(UserError, match=r"source: unknown key\(s\) \['layuot'\]"):
        catalog.entry(str(spec))


def test_unknown_source_option_names_the_closest(tmp_path):
    src = write_x1(tmp_path / "src")
    with pytest.raises(UserError, match="unknown key 'holdot'; did you mean 'holdout'"):
        prepare_dataset("amazon-electronics-x1", tmp_path / "out", source_dir=src, synthetic_overrides=["holdot=tail"],
                        **quiet)


def test_x1_without_valid_file_holds_out_each_users_newest_pair(tmp_path):
    src = write_x1(tmp_path / "src")
    (src / "valid.csv").unlink()
    with pytest.raises(UserError, match="holdout=last_per_user or holdout=tail"):  # never silently
        prepare_dataset("amazon-electronics-x1", tmp_path / "none", source_dir=src, **quiet)
    meta = prepare_dataset("amazon-electronics-x1", tmp_path / "out", source_dir=src,
                           synthetic_overrides=["holdout=last_per_user"], **quiet)
    # each user's longest-history rows (its newest interaction: a pos/neg pair) move to valid
    assert meta["splits"]["train"]["rows"] == 4 and meta["splits"]["valid"]["rows"] == 4
    assert meta["source"]["valid"] == "held out of train (last_per_user)"
    ds = PreparedDataset(tmp_path / "out")
    # vocabularies are fitted on what is left of train: the held-out targets i3, i8, i6 are not in them
    assert set(ds.vocabularies["item_id"]) == {"i1", "i2", "i4", "i5", "i7", "i9"}
    offsets = np.asarray(ds.split("valid").column("item_history.offsets"))
    assert np.diff(offsets).tolist() == [2, 2, 2, 2]
    # BARS protocol: the test split doubles as validation, recorded so that results can be labelled
    meta = prepare_dataset("amazon-electronics-x1", tmp_path / "bars", source_dir=src, test_as_valid=True, **quiet)
    assert meta["protocol"]["valid_is_test"] is True and meta["splits"]["valid"] == meta["splits"]["test"]
    saved = json.loads((tmp_path / "bars" / "schema.json").read_text())
    assert saved["protocol"]["valid_is_test"] and saved["defaults"]["model.embedding_dim"] == 64


def test_own_parquet_splits_described_by_a_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = tmp_path / "own.yaml"
    spec.write_text("name: own\nlabel: clicked\nsplits: {train: train.parquet, test: test.parquet}\n"
                    "fields:\n  - {name: shop, type: categorical}\n  - {name: price, type: numeric, normalize: log1p}\n"
                    "about: {title: my shop logs}\n")
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"clicked": [1, 0, 1], "shop": [3, 4, 3], "price": [1.5, 2.0, 9.0]}), src / "train.parquet")
    pq.write_table(pa.table({"clicked": [1], "shop": [5], "price": [1.0]}), src / "test.parquet")
    meta = prepare_dataset(str(spec), tmp_path / "out", source_dir=src, **quiet)
    assert meta["splits"]["train"] == {"rows": 3, "positives": 2}
    assert PreparedDataset(tmp_path / "out").vocabularies["shop"] == ["3", "4"]
    pq.write_table(pa.table({"clicked": [1, 2], "shop": [3, 4], "price": [1.0, 2.0]}), src / "train.parquet")
    with pytest.raises(UserError, match=r"train.parquet \(parquet row numbers\):2, column 'clicked'"):
        prepare_dataset(str(spec), tmp_path / "out2", source_dir=src, **quiet)


def test_prepared_cache_for_layouts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toy.txt").write_text("1 1 2 3 4\n2 5 6 7 8\n3 2 4 6 8\n")
    messages = []
    prepare_dataset("interactions", tmp_path / "out", source_dir=src, log=messages.append)
    prepare_dataset("interactions", tmp_path / "out", source_dir=src, log=messages.append)
    assert "up to date" in messages[-1]
    with pytest.raises(UserError, match="--overwrite"):  # other settings: not silently replaced
        prepare_dataset("interactions", tmp_path / "out", source_dir=src, synthetic_overrides=["seed=3"], **quiet)


def test_data_cli_list_info_and_prepare_flags(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ENTRIES:
        assert name in out
    assert main(["data", "info", "kuaivideo-x1"]) == 0
    out = capsys.readouterr().out
    assert "pos_items: sequence, max_len 100, shares item_id" in out and "model.embedding_dim=64" in out
    src = write_x1(tmp_path / "src", train=X1_TRAIN)
    assert main(["prepare", "--dataset", "amazon-electronics-x1", "--source", str(src), "--out",
                 str(tmp_path / "out"), "--test-as-valid"]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "item_history len p50/p90/p99/max" in out and "BARS" in out and "users" in out
    assert main(["data", "info", "criteo-x"]) == 2
    assert "unknown dataset 'criteo-x'; did you mean 'criteo'" in capsys.readouterr().err
