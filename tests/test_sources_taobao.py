"""TaobaoAd_x1: the x1 CSVs and the converter from the 267-column DMR layout (real rows in format_samples)."""

import numpy as np
import pytest

from conftest import shared_data
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import prepare_dataset
from loopctr.data.sources.taobao import DMR_COLUMNS, read_dmr
from loopctr.data import catalog
from loopctr.errors import UserError

quiet = dict(log=lambda *a: None)
SAMPLES = ("format_samples", "taobao_ad_samples")


def dmr_row(btag, cate, brand, user="7", label="1", price="0.5"):
    """One 267-column DMR row: 50-wide btag/cate/brand/mask/match-mask blocks (0 = padding), profile, label."""
    def block(values):
        return ["0"] * (50 - len(values)) + list(values)
    mask = block(["1"] * len(cate))
    profile = [user, "3", "4", "2", "5", "", "3", "0", "2", "ad1", "c9", "camp", "cust", "b9", price, "430548_1007"]
    return ",".join(block(btag) + block(cate) + block(brand) + mask + mask + profile + [label])


def test_converter_follows_reczoo(tmp_path):
    path = tmp_path / "train_sorted.csv"
    path.write_text(dmr_row(["1", "2"], ["c1", "c2"], ["b1", "b2"]) + "\n" + dmr_row([], [], [], label="0") + "\n")
    table = read_dmr(path, catalog.resolve("taobao-ad-x1"))
    assert table.num_rows == 2
    assert table["btag_his"].to_pylist() == [["1", "2"], []]
    assert table["cate_his"].to_pylist()[0] == ["c1", "c2"]
    assert table["pvalue_level"].to_pylist() == ["0", "0"]  # missing -> "0", as reczoo's fillna("0")
    assert table["adgroup_id"].to_pylist()[0] == "ad1" and table["btag"].to_pylist() == ["1", "1"]
    assert table["clk"].to_pylist() == [1.0, 0.0] and table["price"].to_pylist() == [0.5, 0.5]


@pytest.mark.parametrize("sample,header", [("paddlerec_dmr_alimama_sampled_train.txt", False),
                                           ("deepctr_alimama_sample.txt", True)])
def test_real_dmr_samples_prepare(tmp_path, sample, header):
    path = shared_data(*SAMPLES, sample)
    src = tmp_path / "src"
    src.mkdir()
    (src / "train_sorted.csv").symlink_to(path)
    (src / "test.csv").symlink_to(path)
    meta = prepare_dataset("taobao-ad-x1", tmp_path / "out", source_dir=src, **quiet)
    lines = len(path.read_text().splitlines()) - (1 if header else 0)
    assert meta["splits"]["test"]["rows"] == lines
    assert meta["splits"]["train"]["rows"] + meta["splits"]["valid"]["rows"] == lines
    assert meta["source"]["formats"] == {"train": "dmr", "test": "dmr"}
    ds = PreparedDataset(tmp_path / "out")
    offsets = np.asarray(ds.split("test").column("cate_his.offsets"))
    assert np.diff(offsets).max() <= 50 and ds.vocab_sizes["btag"] >= 3


def test_x1_csv_and_bars_protocol(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    header = ("clk,btag_his,cate_his,brand_his,userid,cms_segid,cms_group_id,final_gender_code,age_level,"
              "pvalue_level,shopping_level,occupation,new_user_class_level,adgroup_id,cate_id,campaign_id,customer,"
              "brand,price,pid,btag")
    rows = [f"{k % 2},1^2,c{k % 3}^c1,b{k % 4}^b1,u{k % 5},1,2,1,3,0,3,0,2,a{k},c{k % 3},p{k},q{k},b{k % 4},0.{k},pid1,1"
            for k in range(30)]
    (src / "train.csv").write_text("\n".join([header] + rows[:24]) + "\n")
    (src / "test.csv").write_text("\n".join([header] + rows[24:]) + "\n")
    meta = prepare_dataset("taobao-ad-x1", tmp_path / "out", source_dir=src, test_as_valid=True, **quiet)
    assert meta["protocol"]["valid_is_test"] and meta["splits"]["valid"]["rows"] == 6
    assert meta["splits"]["train"]["rows"] == 24
    meta = prepare_dataset("taobao-ad-x1", tmp_path / "out2", source_dir=src, **quiet)
    assert meta["splits"]["valid"]["rows"] == 2 and meta["splits"]["train"]["rows"] == 22  # the last 10% of train


def test_bad_dmr_rows_name_file_line_and_field(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = dmr_row(["1"], ["c1"], ["b1"])
    (src / "test.csv").write_text(good + "\n")
    cases = [
        (good + "\n" + good.rsplit(",", 1)[0] + "\n", ["train_sorted.csv:2", f"expected {DMR_COLUMNS}", "found 266"]),
        (good + "\n" + dmr_row([], [], [], label="2") + "\n", ["train_sorted.csv:2", "clk", "0 or 1"]),
        (dmr_row([], [], [], price="cheap") + "\n", ["train_sorted.csv:1", "price", "not a number"]),
    ]
    for text, fragments in cases:
        (src / "train_sorted.csv").write_text(text)
        with pytest.raises(UserError) as err:
            prepare_dataset("taobao-ad-x1", tmp_path / "out", source_dir=src, **quiet)
        for fragment in fragments:
            assert fragment in str(err.value)
        assert not (tmp_path / "out").exists()
