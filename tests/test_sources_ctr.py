"""Criteo, Avazu, Frappe and MovieLens layouts on their real rows (format samples and shared data)."""

import numpy as np
import pyarrow.compute as pc
import pytest

from conftest import shared_data
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_dataset
from loopctr.data.sources.criteo import log_bin
from loopctr.data.sources.frappe import read_positive_logs, rebuild_from_positives
from loopctr.errors import UserError

quiet = dict(log=lambda *a: None)
OTHER = ("format_samples", "other_ctr_samples")


def link(tmp_path, sample, name):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / name).symlink_to(sample)
    return src


def total(meta):
    return sum(s["rows"] for s in meta["splits"].values())


def test_criteo_log_binning_matches_bars():
    values = np.array([np.nan, -1.0, 0.0, 1.0, 2.0, 3.0, 10.0, 260.0, 17668.0])
    # BARS convert_to_bucket: v > 2 -> floor(ln(v) ** 2), else int(v); missing filled with 0 first
    assert log_bin(values).tolist() == [0, -1, 0, 1, 2, 1, 5, 30, 95]


def test_criteo_real_sample_and_kaggle_tab_layout(tmp_path):
    sample = shared_data(*OTHER, "criteo", "deepctr_criteo_sample.txt")
    meta = prepare_dataset("criteo", tmp_path / "out", source_dir=link(tmp_path, sample, "train.csv"), **quiet)
    assert total(meta) == 200 and meta["splits"]["train"]["rows"] == 160
    # the original train.txt: tab-separated, no header; written here from the sample's rows
    rows = sample.read_text().splitlines()[1:]
    tab = tmp_path / "tab"
    tab.mkdir()
    (tab / "train.txt").write_text("\n".join(r.replace(",", "\t") for r in rows) + "\n")
    meta2 = prepare_dataset("criteo", tmp_path / "out2", source_dir=tab, **quiet)
    assert meta2["splits"] == meta["splits"] and meta2["vocab_sizes"] == meta["vocab_sizes"]
    (tab / "train.txt").write_text("\n".join(rows[:3] + [rows[3].replace(",", "\t")]) + "\n")
    with pytest.raises(UserError, match="expected 40 ','-separated columns|train.txt:1"):
        prepare_dataset("criteo", tmp_path / "out3", source_dir=tab, **quiet)
    parts = rows[5].split(",")
    parts[1] = "x"  # I1
    bad = rows[:5] + [",".join(parts)]
    (tab / "train.txt").write_text("\n".join(r.replace(",", "\t") for r in bad) + "\n")
    with pytest.raises(UserError, match=r"train.txt:6, column 'I1': 'x' is not a number"):
        prepare_dataset("criteo", tmp_path / "out3", source_dir=tab, **quiet)
    assert not (tmp_path / "out3").exists()


def test_avazu_real_sample_and_hour_features(tmp_path):
    sample = shared_data(*OTHER, "avazu", "deepctr_avazu_sample.txt")
    src = link(tmp_path, sample, "train.csv")
    meta = prepare_dataset("avazu", tmp_path / "out", source_dir=src, synthetic_overrides=["seed=1"], **quiet)
    assert total(meta) == 100
    ds = PreparedDataset(tmp_path / "out")
    assert set(ds.vocabularies["weekday"]) <= {"1"} and set(ds.vocabularies["hour"]) <= {f"{h:02d}" for h in range(24)}
    rows = sample.read_text().splitlines()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("\n".join(rows[:4] + [rows[4].replace(",14102100,", ",1410210,")]) + "\n")
    with pytest.raises(UserError, match=r"train.csv:5, column 'hour'.*YYMMDDHH"):
        prepare_dataset("avazu", tmp_path / "out2", source_dir=bad, **quiet)


def test_frappe_libfm_real_files(tmp_path):
    d = shared_data("frappe", "nfm_libfm")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("frappe.validation.libfm", "frappe.test.libfm"):
        (src / name).symlink_to(d / name)
    with pytest.raises(UserError, match="frappe.train.libfm"):  # the train split is not present here
        prepare_dataset("frappe", tmp_path / "out", source_dir=src, **quiet)
    meta = prepare_dataset("frappe", tmp_path / "out", source_dir=src, test_as_valid=True,
                           synthetic_overrides=["train_file=frappe.validation.libfm"], **quiet)
    assert meta["splits"]["train"]["rows"] == 57722 and meta["splits"]["test"]["rows"] == 28860
    assert abs(meta["splits"]["test"]["positives"] / 28860 - 1 / 3) < 0.01
    (src / "frappe.train.libfm").write_text("1 1:1 2:1 3:1\n")
    with pytest.raises(UserError, match=r"frappe.train.libfm:1: expected a label and 10"):
        prepare_dataset("frappe", tmp_path / "out2", source_dir=src, **quiet)


def test_frappe_rebuilt_from_positive_logs(tmp_path):
    d = shared_data("frappe", "ensfm_positives")
    rows, _ = read_positive_logs([d / "train.csv", d / "test.csv"])
    table = rebuild_from_positives(rows, negatives=2, seed=0)
    assert table.num_rows == 3 * len(rows)
    used = {(r[0], r[8]) for r in rows}
    labels = table["label"].to_numpy()
    neg_pairs = zip(pc.filter(table["user"], pc.equal(table["label"], 0.0)).to_pylist(),
                    pc.filter(table["item"], pc.equal(table["label"], 0.0)).to_pylist())
    assert not any(pair in used for pair in neg_pairs)  # never an item the user used
    ctx = [table[c].to_pylist() for c in ("daytime", "city")]
    assert all(ctx[0][3 * k] == ctx[0][3 * k + 1] == ctx[0][3 * k + 2] for k in range(0, len(rows), 997))
    assert labels.sum() == len(rows)
    meta = prepare_dataset("frappe", tmp_path / "out", source_dir=d, **quiet)
    assert total(meta) == 3 * len(rows) and meta["source"]["format"] == "positives"


@pytest.mark.parametrize("folder,layout", [("movielens_100k", "100k"), ("movielens_latest_small", "latest")])
def test_movielens_real_layouts(tmp_path, folder, layout):
    src = shared_data(folder)
    meta = prepare_dataset("movielens", tmp_path / "out", source_dir=src, **quiet)
    assert meta["source"]["layout"] == layout
    assert total(meta) == meta["source"]["ratings"]
    users = meta["source"]["users"]
    assert meta["splits"]["test"]["rows"] == users and meta["splits"]["valid"]["rows"] == users


def test_movielens_history_is_earlier_clicks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()  # the 1M layout ('::'-separated), written here
    ratings = ["1::10::5::100", "1::11::2::200", "1::12::4::300", "1::13::5::300", "1::14::1::400", "1::15::5::500",
               "2::10::4::100", "2::12::5::150", "2::13::3::160", "2::11::4::170"]
    (src / "ratings.dat").write_text("\n".join(ratings) + "\n")
    (src / "users.dat").write_text("1::F::25::4::12345\n2::M::35::7::54321\n")
    (src / "movies.dat").write_text("10::A (1990)::Drama\n11::B::Comedy|Drama\n12::C::Action\n13::D::Drama\n"
                                    "14::E::Horror\n15::F::Drama\n")
    prepare_dataset("movielens", tmp_path / "out", source_dir=src, **quiet)
    ds = PreparedDataset(tmp_path / "out")
    vocab = ds.vocabularies["item_id"]
    train = ds.split("train")
    offsets = np.asarray(train.column("item_history.offsets"))
    hist = np.asarray(train.column("item_history"))
    rows = [[vocab[i - 2] for i in hist[offsets[k]:offsets[k + 1]]] for k in range(train.rows)]
    # user 1 in time order: 10(5) 11(2) 12(4) 13(5, same second as 12) 14(1) 15(5, last = test)
    assert rows[:4] == [[], ["10"], ["10"], ["10"]]  # 13's history holds no click from its own second
    assert ds.split("test").rows == 2 and set(ds.vocabularies["gender"]) == {"F", "M"}
    (src / "ratings.dat").write_text("1,10,5,100\n")
    with pytest.raises(UserError, match=r"ratings.dat:1: expected 4 '::'-separated fields.*','-separated"):
        prepare_dataset("movielens", tmp_path / "out2", source_dir=src, **quiet)


def test_movielens_merged_real_sample(tmp_path):
    sample = shared_data(*OTHER, "movielens", "deepctr_movielens_sample.txt")
    src = link(tmp_path, sample, "ml1m_merged.csv")
    with pytest.raises(UserError, match="split is empty"):  # 200 random rows: users with one rating
        prepare_dataset("movielens", tmp_path / "out", source_dir=src, **quiet)
    meta = prepare_dataset("movielens", tmp_path / "out", source_dir=src, synthetic_overrides=["split=time"], **quiet)
    assert total(meta) == 200 and meta["source"]["layout"] == "merged"
    ds = PreparedDataset(tmp_path / "out")
    assert {"M", "F"} <= set(ds.vocabularies["gender"]) and "Drama" in ds.vocabularies["genres"]
