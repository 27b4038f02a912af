"""The DIN-protocol builder and the interaction-log layouts: correctness checks, formats, bad input, speed."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from conftest import shared_data
from loopctr.data.dataset import PreparedDataset
from loopctr.data.prepare import OOV, prepare_dataset
from loopctr.data.din_protocol import din_protocol, pick_categories
from loopctr.data.sources.interactions import InteractionOptions, load_log
from loopctr.errors import UserError

quiet = dict(log=lambda *a: None)


def random_log(seed=0, users=40, items=60, max_events=12, ties=True):
    """Per user: distinct items, non-decreasing times with ties (same-day reviews)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        n = int(rng.integers(2, max_events))
        its = rng.choice(items, n, replace=False)
        t = np.cumsum(rng.integers(0 if ties else 1, 3, n)) + 1000
        rows += [(f"u{u}", f"i{i}", int(tt), f"c{i % 7}") for i, tt in zip(its, t)]
    return rows


def write_table_log(path, rows, header="user_id,item_id,time,cate_id"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def reference_din(rows, max_history=100, same_time_history=True):
    """Straightforward per-sample reference: split -> list of (user, target item, history items)."""
    by_user = {}
    for u, i, t, _ in rows:
        by_user.setdefault(u, []).append((t, i))
    out = {"train": [], "valid": [], "test": []}
    for u, events in by_user.items():
        events = sorted(events, key=lambda e: e[0])  # stable: ties keep the file's order
        last = len(events) - 1
        for k in range(1, len(events)):
            split = "test" if k == last else "valid" if k == last - 1 else "train"
            hist = [i for (t, i) in events[:k] if same_time_history or t < events[k][0]][-max_history:]
            out[split].append((u, events[k][1], tuple(hist)))
    return out


def positives(table):
    pos = table.filter(pc.equal(table["label"], 1.0))
    return [(u, i, tuple(h)) for u, i, h in zip(pos["user_id"].to_pylist(), pos["item_id"].to_pylist(),
                                                 pos["item_history"].to_pylist())]


@pytest.mark.parametrize("same_time", [True, False])
def test_builder_matches_a_per_sample_reference(tmp_path, same_time):
    rows = random_log()
    write_table_log(tmp_path / "log.csv", rows)
    o = InteractionOptions(same_time_history=same_time, max_history=5)
    log, _ = load_log(tmp_path, o)
    tables = din_protocol(log, max_history=5, same_time_history=same_time)
    ref = reference_din(rows, max_history=5, same_time_history=same_time)
    for split in ("train", "valid", "test"):
        assert sorted(positives(tables[split])) == sorted(ref[split]), split


def test_correctness_checks_on_the_protocol(tmp_path):
    rows = random_log(seed=3)
    write_table_log(tmp_path / "log.csv", rows)
    times = {(u, i): t for u, i, t, _ in rows}
    items_of = {}
    for u, i, _, _ in rows:
        items_of.setdefault(u, set()).add(i)
    log, _ = load_log(tmp_path, InteractionOptions(same_time_history=False))
    tables = din_protocol(log, same_time_history=False, negatives=3, seed=1)
    for split, table in tables.items():
        labels = table["label"].to_numpy()
        assert (labels == 1).sum() * 3 == (labels == 0).sum()
        for u, i, y, hist in zip(table["user_id"].to_pylist(), table["item_id"].to_pylist(), labels,
                                 table["item_history"].to_pylist()):
            if y == 1:  # no history event at or after its target
                assert all(times[(u, h)] < times[(u, i)] for h in hist)
            else:  # a negative is never an item of that user
                assert i not in items_of[u]
    # no user's test interaction appears in train (as a target or in a history)
    test_pos = {(u, i) for u, i, _ in positives(tables["test"])}
    for u, i, hist in positives(tables["train"]):
        assert (u, i) not in test_pos
        assert all((u, h) not in test_pos for h in hist)


def test_prepare_fits_vocabularies_on_train_only(tmp_path):
    rows = random_log(seed=5, users=30)
    for k in range(40):  # users whose last (test) item nobody else interacts with: some are never a train negative
        rows += [(f"solo{k}", "i1", 5000, "c1"), (f"solo{k}", "i2", 5001, "c2"), (f"solo{k}", "i3", 5002, "c3"),
                 (f"solo{k}", f"only_in_test{k}", 5003, "c_new")]
    write_table_log(tmp_path / "src" / "log.csv", rows)
    prepare_dataset("interactions", tmp_path / "out", source_dir=tmp_path / "src", **quiet)
    ds = PreparedDataset(tmp_path / "out")
    log, _ = load_log(tmp_path / "src", InteractionOptions())
    tables = din_protocol(log)  # the same seed: the rows prepare saw
    train = tables["train"]
    train_items = set(train["item_id"].to_pylist()) | {i for h in train["item_history"].to_pylist() for i in h}
    assert set(ds.vocabularies["item_id"]) == train_items  # every token of train, nothing else
    unseen = np.array([i not in train_items for i in tables["test"]["item_id"].to_pylist()])
    assert 0 < unseen.sum() < len(unseen)  # the premise: test has items train never saw, and items it did
    items = np.asarray(ds.split("test").column("item_id"))
    np.testing.assert_array_equal(items == OOV, unseen)  # exactly those are out of vocabulary


def test_sequences_layout_with_attributes_and_categories(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toy.txt").write_text("1 1 2 3\n2 2 3 4 1\n3 4 1\n4 5 6\n")
    # [brand] + category path: 9 is a brand, 5 covers more than half of the items (a root), 6/7/8 are leaves
    attrs = {"1": [9, 5, 6], "2": [5, 7], "3": [10, 5, 6, 8], "4": [9], "5": [5, 8], "6": [5, 7]}
    (src / "Toy_item2attributes.json").write_text(json.dumps(attrs))
    assert pick_categories(attrs, "last") == {"1": "6", "2": "7", "3": "8", "4": "0", "5": "8", "6": "7"}
    assert pick_categories(attrs, "first") == {"1": "6", "2": "7", "3": "6", "4": "0", "5": "8", "6": "7"}
    meta = prepare_dataset("interactions", tmp_path / "out", source_dir=src, **quiet)
    # 2 rows per interaction after each user's first: users have 3, 4, 2 and 2 interactions
    assert sum(s["rows"] for s in meta["splits"].values()) == 2 * (2 + 3 + 1 + 1)
    assert meta["splits"]["test"]["rows"] == 8 and meta["source"]["format"] == "sequences"
    ds = PreparedDataset(tmp_path / "out")
    assert set(ds.vocabularies["cate_id"]) <= {"0", "6", "7", "8"}


def test_pairs_layout_and_time_split(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines = []
    for u in range(6):
        for k in range(5):
            lines.append(f"u{u} i{(u * 3 + k) % 17} {100 * k + u}")
    (src / "log.txt").write_text("\n".join(lines) + "\n")
    meta = prepare_dataset("interactions", tmp_path / "out", source_dir=src, **quiet)
    assert meta["source"]["format"] == "pairs" and meta["splits"]["test"]["rows"] == 12
    meta = prepare_dataset("interactions", tmp_path / "out2", source_dir=src,
                           synthetic_overrides=["split=time", "valid_fraction=0.25", "test_fraction=0.25"], **quiet)
    total = sum(s["rows"] for s in meta["splits"].values())
    assert total == 2 * 6 * 4 and meta["splits"]["test"]["rows"] > 0


def test_parquet_log_and_bars_flag_is_recorded(tmp_path):
    import pyarrow.parquet as pq

    rows = random_log(seed=2, users=10)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                             "ts": [r[2] for r in rows]}), src / "log.parquet")
    meta = prepare_dataset("interactions", tmp_path / "out", source_dir=src, test_as_valid=True,
                           synthetic_overrides=["user_col=user", "item_col=item", "time_col=ts"], **quiet)
    assert meta["protocol"]["valid_is_test"] is True
    assert meta["splits"]["valid"] == meta["splits"]["test"]
    n_after_first = len(rows) - 10
    assert sum(meta["splits"][s]["rows"] for s in ("train", "test")) == 2 * n_after_first


def test_mcauley_reviews_real_sample_with_meta_fixture(tmp_path):
    import zlib

    sample = shared_data("format_samples", "amazon_electronics_samples", "paddlerec_reviews_Electronics_5.TRUNCATED.json.gz")
    src = tmp_path / "src"
    src.mkdir()
    (src / "reviews_Electronics_5.json.gz").symlink_to(sample)
    with pytest.raises(UserError, match="truncated"):  # the sample is a cut-off gzip: loud by default
        prepare_dataset("interactions", tmp_path / "out", source_dir=src, **quiet)
    text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(sample.read_bytes()).decode()
    reviews = [json.loads(line) for line in text.split("\n")[:-1]]
    asins = sorted({r["asin"] for r in reviews})
    # the 2014 metadata format: one Python-literal dict per line (not JSON)
    meta_lines = [repr({"asin": a, "categories": [["Electronics", "GPS", f"leaf{k % 3}"]]}) for k, a in enumerate(asins)]
    (src / "meta_Electronics.json").write_text("\n".join(meta_lines) + "\n")
    log, info = load_log(src, InteractionOptions(truncated_ok=True))
    assert log.user.shape[0] == len(reviews) and info["meta"] == "meta_Electronics.json"
    assert set(log.cate_tokens.to_pylist()) == {"leaf0", "leaf1", "leaf2"}
    tables = din_protocol(log)  # the sample holds one user with two reviews: one test pair
    assert tables["test"].num_rows == 2 and tables["train"].num_rows == 0
    # a full preparation in the same format, written here: users with several reviews each
    fixture = tmp_path / "fixture"
    fixture.mkdir()
    rows = random_log(seed=9, users=25)
    with gzip.open(fixture / "reviews_Toys_5.json.gz", "wt") as fh:
        for u, i, t, _ in rows:
            fh.write(json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t}) + "\n")
    meta = prepare_dataset("interactions", tmp_path / "out", source_dir=fixture, **quiet)
    assert meta["source"]["format"] == "mcauley"
    assert sum(s["rows"] for s in meta["splits"].values()) == 2 * (len(rows) - 25)


def test_raw_user_item_time_cate_sample(tmp_path):
    sample = shared_data("format_samples", "amazon_electronics_samples", "torchrechub_amazon_electronics_sample.csv")
    src = tmp_path / "src"
    src.mkdir()
    (src / "sample.csv").symlink_to(sample)
    meta = prepare_dataset("interactions", tmp_path / "out", source_dir=src, **quiet)
    table = pacsv.read_csv(sample)
    users = pc.count_distinct(table["user_id"]).as_py()
    assert sum(s["rows"] for s in meta["splits"].values()) == 2 * (table.num_rows - users)


BAD = [
    ("Toy.txt", "1 1 2 3\n2,2,3,4\n", None, ["Toy.txt:2", "separated by spaces"]),
    ("Toy.txt", "1 1 2 3\n2\n", None, ["Toy.txt:2", "has no items"]),
    ("Toy.txt", "1 1 2\n2 5 6\n1 3 4\n", None, ["Toy.txt:3", "user '1'", "grouped by user"]),
    ("Toy.txt", "1 1 2 3\n2 2 3\n", '{"1": [5, 6],\n"77": [5]}', ["Toy_item2attributes.json:2", "item '77'", "unknown id"]),
    ("Toy.txt", "1 1 2 3\n2 2 3\n", '{"1": 5}', ["Toy_item2attributes.json:1", "item '1'", "list of attribute ids"]),
    ("log.txt", "u1 i1\nu2 i2\nu1 i3\n", None, ["log.txt:3", "grouped by user"]),
    ("log.txt", "u1 i1 10\nu1 i2 5\n", None, ["log.txt:2", "time order"]),
    ("log.csv", "user_id,item,time\nu1,i1,1\n", None, ["log.csv:1", "missing column(s) ['item_id']"]),
    ("log.csv", "user_id,item_id,time\nu1,i1,1\nu1,i2,soon\n", None, ["log.csv:3", "column 'time'", "not a number"]),
    ("log.csv", "user_id,item_id,time,cate_id\nu1,i1,1,a\nu1,i1,2,b\n", None, ["log.csv:3", "column 'cate_id'", "one category"]),
]


@pytest.mark.parametrize("name,text,attrs,fragments", BAD)
def test_bad_logs_name_file_line_and_field(tmp_path, name, text, attrs, fragments):
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text(text)
    if attrs is not None:
        (src / "Toy_item2attributes.json").write_text(attrs)
    with pytest.raises(UserError) as err:
        prepare_dataset("interactions", tmp_path / "out", source_dir=src, **quiet)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing half-written


def test_same_time_history_off_needs_times(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toy.txt").write_text("1 1 2 3 4\n2 2 3 4 5\n3 6 7\n")
    with pytest.raises(UserError, match="time_org_rank"):
        prepare_dataset("interactions", tmp_path / "out", source_dir=src, synthetic_overrides=["same_time_history=false"],
                        **quiet)
    # times aligned position by position; the same day for items 1 and 2 of user 1
    (src / "Toy_time_org_rank.txt").write_text("1 100 100 200 300\n2 10 20 30 40\n3 5 6\n")
    meta = prepare_dataset("interactions", tmp_path / "out", source_dir=src,
                           synthetic_overrides=["same_time_history=false"], **quiet)
    assert meta["source"]["times"].startswith("from")
    ds = PreparedDataset(tmp_path / "out")
    train = ds.split("train")  # user 1's second event (item 2, day 100): no strictly earlier event
    lengths = np.diff(np.asarray(train.column("item_history.offsets"))).tolist()
    assert lengths == [0, 0, 1, 1]  # user 1: items 2 (day 100, nothing earlier), 3; user 2: item 3


def test_real_amazon_beauty_matches_the_benchmark_split(tmp_path):
    src = shared_data("amazon_beauty")
    meta = prepare_dataset("interactions", tmp_path / "beauty", source_dir=src, **quiet)
    # 198,502 interactions of 22,363 users: 2 rows per interaction after each user's first
    assert {s: v["rows"] for s, v in meta["splits"].items()} == {"train": 262826, "valid": 44726, "test": 44726}
    log, _ = load_log(src, InteractionOptions())
    tables = din_protocol(log)
    bench = shared_data("benchmark_splits", "amazon_beauty", "test.csv")
    ref = pacsv.read_csv(bench, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ("user_id", "item_id", "cate_id", "item_history", "cate_history")}))
    ref_pos = ref.filter(pc.equal(ref["label"], 1))
    mine = tables["test"].filter(pc.equal(tables["test"]["label"], 1.0))
    assert mine["item_id"].to_pylist() == ref_pos["item_id"].to_pylist()
    assert mine["cate_id"].to_pylist() == ref_pos["cate_id"].to_pylist()  # the leaf-category rule
    assert ["^".join(h) for h in mine["item_history"].to_pylist()] == ref_pos["item_history"].to_pylist()


def test_real_amazon_sports_builds_clean():  # its build time is reported in BENCHMARKS.md, not asserted here
    src = shared_data("amazon_sports")
    log, _ = load_log(src, InteractionOptions())
    tables = din_protocol(log)
    assert sum(t.num_rows for t in tables.values()) == 2 * (296337 - 35598)
    # negatives are never items of their user
    user_items = set(zip(log.user.tolist(), log.item.tolist()))
    item_index = {tok: k for k, tok in enumerate(log.item_tokens.to_pylist())}
    user_index = {tok: k for k, tok in enumerate(log.user_tokens.to_pylist())}
    test = tables["test"]
    neg = test.filter(pc.equal(test["label"], 0.0))
    for u, i in zip(neg["user_id"].to_pylist(), neg["item_id"].to_pylist()):
        assert (user_index[u], item_index[i]) not in user_items


def test_synthetic_generator_shares_the_builder():
    from loopctr.data.synthetic import SyntheticConfig, din_samples, generate_logs

    cfg = SyntheticConfig(users=30, items=200, categories=5, cluster_size=4, min_events=4, max_events=8)
    sequences, item_cate = generate_logs(cfg)
    tables = din_samples(sequences, item_cate, cfg.seed)
    rows = [(str(u + 1), str(i), k, "") for u, seq in enumerate(sequences) for k, i in enumerate(seq.tolist())]
    ref = reference_din(rows)
    for split in ("train", "valid", "test"):
        assert sorted(positives(tables[split])) == sorted((u, i, tuple(str(x) for x in h)) for u, i, h in ref[split])
