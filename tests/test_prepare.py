import json
import os

import numpy as np
import pytest

from helpers import X1_HEADER, X1_TRAIN, write_x1
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import OOV, TokenIndex, _encode, prepare_dataset, truncate_ragged
from loopctr.errors import UserError

X1 = "amazon-electronics-x1"
quiet = dict(log=lambda *a: None)


def test_prepare_fits_vocab_on_train_only(tmp_path):
    src = write_x1(tmp_path / "src")
    prepare_dataset(X1, tmp_path / "out", source_dir=src, **quiet)
    ds = PreparedDataset(tmp_path / "out")
    items = ds.vocabularies["item_id"]
    assert "i99" not in items  # only in test
    assert set(items) == {"i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"}
    test_items = np.asarray(ds.split("test").column("item_id"))
    assert test_items[0] == OOV
    # item_history shares item_id's vocabulary (one table): "i4" from valid's history is in train's item_id
    assert ds.vocab_sizes == {"item_id": 11, "cate_id": 5}
    meta = json.loads((tmp_path / "out" / "schema.json").read_text())
    assert meta["splits"]["train"] == {"rows": 8, "positives": 4}


def test_sequences_are_stored_ragged_keeping_the_newest_events(tmp_path):
    src = write_x1(tmp_path / "src")
    prepare_dataset(X1, tmp_path / "out", source_dir=src, **quiet)
    ds = PreparedDataset(tmp_path / "out")
    test = ds.split("test")
    vocab = ds.vocabularies["item_id"]
    offsets = np.asarray(test.column("item_history.offsets"))
    first = np.asarray(test.column("item_history"))[offsets[0]:offsets[1]]
    assert [vocab[i - 2] if i >= 2 else "OOV" for i in first] == ["i1", "i2", "i3", "i4"]


def test_truncate_ragged_keeps_last_events():
    ids = np.array([1, 2, 3, 4, 5, 6, 7])
    flat, offsets = truncate_ragged(ids, np.array([5, 0, 2]), max_len=3)
    assert offsets.tolist() == [0, 3, 3, 5]
    assert flat.tolist() == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("n", [7, TokenIndex.SMALL + 5])
def test_token_index_encodes_like_the_vectorised_path(n):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(50)]
    tokens = pa.array([f"t{i}" for i in rng.integers(0, 80, size=n)], type=pa.string())  # about 40% unseen
    expected = _encode(tokens, pa.array(vocab, type=pa.string()))
    got = TokenIndex(vocab).encode(tokens)
    assert got.dtype == np.int32 and np.array_equal(got, expected)
    assert (expected == OOV).any() and (expected >= 2).any()


def test_prepare_is_cached_and_atomic(tmp_path):
    src = write_x1(tmp_path / "src")
    out = tmp_path / "out"
    prepare_dataset(X1, out, source_dir=src, **quiet)
    stamp = (out / "schema.json").stat().st_mtime_ns
    messages = []
    prepare_dataset(X1, out, source_dir=src, log=messages.append)
    assert "up to date" in messages[0]
    assert (out / "schema.json").stat().st_mtime_ns == stamp
    # a copy with fresh modification times and the same bytes is the same source
    train = src / "train.csv"
    os.utime(train, ns=(stamp + 10**9, stamp + 10**9))
    messages.clear()
    prepare_dataset(X1, out, source_dir=src, log=messages.append)
    assert "new modification time, same contents" in messages[0] and "up to date" in messages[1]
    # same size, other bytes: refused, naming the file, before the (here unparsable) sources are read
    text = train.read_text()
    train.write_text(text.replace("1,", "x,", 1))
    with pytest.raises(UserError, match=r"train.csv changed since it was prepared.*--overwrite"):
        prepare_dataset(X1, out, source_dir=src, **quiet)
    # a directory prepared before source digests were recorded
    meta = json.loads((out / "schema.json").read_text())
    (out / "schema.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "source_files"}))
    with pytest.raises(UserError, match="older loopctr.*--overwrite"):
        prepare_dataset(X1, out, source_dir=src, **quiet)
    (out / "schema.json").write_text(json.dumps(meta))
    # changed sources: refuse to replace silently, replace with --overwrite
    train.write_text("\n".join([X1_HEADER, *X1_TRAIN[:4]]) + "\n")
    with pytest.raises(UserError, match="other source files or settings.*--overwrite"):
        prepare_dataset(X1, out, source_dir=src, **quiet)
    prepare_dataset(X1, out, source_dir=src, overwrite=True, **quiet)
    assert PreparedDataset(out).meta["splits"]["train"]["rows"] == 4
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


BAD_INPUTS = [
    # (file to damage, new content lines after header, expected message fragments)
    ("train", ["1,u1,i2,c1,i1"], ["train.csv:2", "expected 6 columns", "found 5"]),
    ("valid", ["1,u1,i2,c1,i1,c1", "1,u1,i2,c1,i1,c1,extra"], ["valid.csv:3", "found 7"]),
    ("train", ["2,u1,i2,c1,i1,c1"], ["train.csv:2", "label", "0 or 1"]),
    ("train", ["1,u1,i2,c1,i1,c1", "yes,u1,i2,c1,i1,c1"], ["train.csv:3", "label", "not a number"]),
    ("test", ["1,u1,i2,c1,i1^^i3,c1^c1^c1"], ["test.csv:2", "item_history", "malformed sequence"]),
    ("train", ["1,u1,i2,c1,i1^,c1^"], ["train.csv:2", "malformed sequence"]),
    ("train", ["1,u1,i2,c1,i1,c1", "nan,u1,i2,c1,i1,c1"], ["train.csv:3", "label"]),
]


@pytest.mark.parametrize("split,rows,fragments", BAD_INPUTS)
def test_bad_rows_name_file_line_and_column(tmp_path, split, rows, fragments):
    src = write_x1(tmp_path / "src", **{split: rows})
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        prepare_dataset(X1, out, source_dir=src, **quiet)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]  # nothing half-written


def test_missing_file_column_and_empty_file(tmp_path):
    src = write_x1(tmp_path / "src")
    (src / "valid.csv").unlink()
    with pytest.raises(UserError, match=r"valid.csv: file not found"):
        prepare_dataset(X1, tmp_path / "out", source_dir=src, **quiet)
    write_x1(src, header="label,user_id,item_id,cate_id,item_history,cate_hist")
    with pytest.raises(UserError, match=r"train.csv:1: missing column\(s\) \['cate_history'\]"):
        prepare_dataset(X1, tmp_path / "out", source_dir=src, **quiet)
    write_x1(src)
    (src / "test.csv").write_text("")
    with pytest.raises(UserError, match="test.csv:1: the file is empty"):
        prepare_dataset(X1, tmp_path / "out", source_dir=src, **quiet)
    (src / "test.csv").write_text(X1_HEADER + "\n")
    with pytest.raises(UserError, match="test.csv:2: the file has a header but no data rows"):
        prepare_dataset(X1, tmp_path / "out", source_dir=src, **quiet)
    assert not (tmp_path / "out").exists()


def test_numeric_fields_reject_nan_inf_and_text(tmp_path):
    schema = tmp_path / "s.yaml"
    schema.write_text(
        "name: own\nlabel: clicked\nsplits: {train: train.csv, test: test.csv}\n"
        "fields:\n  - {name: price, type: numeric, normalize: standard}\n  - {name: shop, type: categorical}\n"
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "test.csv").write_text("clicked,price,shop\n1,2.5,a\n")
    for bad, message in (("inf", "infinite"), ("nan", "NaN"), ("", "missing"), ("cheap", "not a number")):
        (src / "train.csv").write_text(f"clicked,price,shop\n1,1.0,a\n0,{bad},b\n")
        with pytest.raises(UserError, match=message) as err:
            prepare_dataset(str(schema), tmp_path / "out", source_dir=src, **quiet)
        assert "train.csv:3, column 'price'" in str(err.value)
    (src / "train.csv").write_text("clicked,price,shop\n1,1.0,a\n0,3.0,b\n")
    prepare_dataset(str(schema), tmp_path / "out", source_dir=src, **quiet)
    price = np.asarray(PreparedDataset(tmp_path / "out").split("train").column("price"))
    assert price.tolist() == pytest.approx([-1.0, 1.0])  # standardised with train statistics


def test_real_benchmark_split_prepares(tmp_path):
    from conftest import shared_data

    src = shared_data("benchmark_splits", "amazon_beauty")
    meta = prepare_dataset(X1, tmp_path / "beauty", source_dir=src, **quiet)
    assert meta["splits"]["train"]["rows"] == 262826
    assert meta["splits"]["test"]["rows"] == 44726
    ds = PreparedDataset(tmp_path / "beauty")
    offsets = np.asarray(ds.split("train").column("item_history.offsets"))
    assert np.diff(offsets).max() <= 100 and np.diff(offsets).min() >= 1


def test_byte_order_mark_non_utf8_duplicate_columns_and_unequal_histories(tmp_path):
    src = tmp_path / "src"
    write_x1(src)
    train = src / "train.csv"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())  # a spreadsheet export's byte-order mark: read as utf-8-sig
    meta = prepare_dataset(X1, tmp_path / "bom", source_dir=src, **quiet)
    assert meta["splits"]["train"]["rows"] == len(X1_TRAIN)
    rows = list(X1_TRAIN)
    rows[2] = rows[2].replace("i3", "caf\xe9")
    write_x1(src, train=rows)
    train.write_bytes(train.read_bytes().replace("caf\xe9".encode(), b"caf\xe9"))  # latin-1, not UTF-8
    with pytest.raises(UserError, match=r"train.csv:4, column 'item_id': byte 0xe9 is not UTF-8"):
        prepare_dataset(X1, tmp_path / "latin1", source_dir=src, **quiet)
    write_x1(src, header=X1_HEADER + ",item_id", train=[r + ",i9" for r in X1_TRAIN])
    with pytest.raises(UserError, match=r"train.csv:1: column\(s\) \['item_id'\] appear more than once"):
        prepare_dataset(X1, tmp_path / "dup", source_dir=src, **quiet)
    rows = list(X1_TRAIN)
    rows[3] = "0,u1,i8,c2,i1^i2,c1"  # two items, one category
    write_x1(src, train=rows)
    with pytest.raises(UserError, match=r"train.csv:5, column 'cate_history': 1 events, but 'item_history' has 2"):
        prepare_dataset(X1, tmp_path / "unequal", source_dir=src, **quiet)
    assert not any(p.name.startswith(("latin1", "dup", "unequal")) for p in tmp_path.iterdir())


def test_leakage_checks_find_repeated_rows_and_histories_that_hold_their_target(tmp_path, capsys):
    from loopctr.cli.main import main
    from loopctr.data.leakage import leakage_report

    src = tmp_path / "src"
    write_x1(src)
    prepare_dataset(X1, tmp_path / "clean", source_dir=src, **quiet)
    clean = leakage_report(PreparedDataset(tmp_path / "clean"))
    assert [row.get("repeats train", 0) for row in clean] == [0, 0, 0]
    # test repeats two training rows exactly (one with the other label); positives' histories end with the target
    leaky = ["1,u1,i4,c2,i1^i2^i3^i4,c1^c1^c1^c2", "0,u1,i7,c3,i1^i2^i3,c1^c1^c1"]
    write_x1(src, valid=leaky, test=[X1_TRAIN[0], X1_TRAIN[1].replace("0,", "1,", 1), *leaky])
    assert main(["prepare", "--dataset", X1, "--source", str(src), "--out", str(tmp_path / "leaky")]) == 0
    logged = capsys.readouterr().out.splitlines()
    report = {row["split"]: row for row in leakage_report(PreparedDataset(tmp_path / "leaky"))}
    assert (report["test"]["repeats train"], report["test"]["with its label"]) == (2, 1)
    assert report["valid"]["item_id newest event: positives"] == 1.0
    assert report["valid"]["item_id newest event: negatives"] == 0.0
    warnings = [line for line in logged if line.startswith("warning:")]
    assert any("test: 2 of 4 rows repeat a training row in every feature (1 with its label too)" in w for w in warnings)
    assert any("valid: the history of 100% of the positives" in w and "target item_id" in w for w in warnings)
    assert main(["data", "info", str(tmp_path / "leaky")]) == 0
    assert "repeat a training row" in capsys.readouterr().out
