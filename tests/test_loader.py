import threading

import numpy as np
import pytest
import torch

from loopctr.data.batch import gather_jagged
from loopctr.data.loader import BatchLoader, LoaderConfig


def all_rows(loader, epoch=0):
    return np.concatenate(loader.rank_rows(epoch))


def test_shuffle_covers_every_row_once_and_is_seeded(tiny_dataset):
    split = tiny_dataset.split("train")
    loader = BatchLoader(split, 50, shuffle=True, seed=3)
    rows = all_rows(loader)
    assert np.array_equal(np.sort(rows), np.arange(split.rows))
    again = BatchLoader(split, 50, shuffle=True, seed=3)
    assert np.array_equal(all_rows(again), rows)
    assert not np.array_equal(all_rows(loader, epoch=1), rows)


def test_block_shuffle_and_length_buckets_keep_the_row_set(tiny_dataset):
    split = tiny_dataset.split("train")
    for cfg in (LoaderConfig(shuffle_block=16), LoaderConfig(length_buckets=4)):
        loader = BatchLoader(split, 32, cfg, shuffle=True, seed=0)
        assert np.array_equal(np.sort(all_rows(loader)), np.arange(split.rows))
    bucketed = BatchLoader(split, 32, LoaderConfig(length_buckets=8), shuffle=True, seed=0)
    plain = BatchLoader(split, 32, shuffle=True, seed=0)
    width = lambda ld: np.mean([b.jagged("item_history").width for b in ld.batches()])  # noqa: E731
    assert width(bucketed) < width(plain)  # rows of similar length: narrower padded views


def test_ranks_split_each_global_batch(tiny_dataset):
    split = tiny_dataset.split("train")
    world = 3
    single = BatchLoader(split, 64, shuffle=True, seed=1)
    ranks = [BatchLoader(split, 64, shuffle=True, seed=1, rank=r, world_size=world) for r in range(world)]
    per_rank = [r.rank_rows(0) for r in ranks]
    assert len({len(p) for p in per_rank}) == 1  # every rank steps the same number of times
    for i, global_rows in enumerate(single.rank_rows(0)[:len(per_rank[0])]):
        assert np.array_equal(np.sort(np.concatenate([p[i] for p in per_rank])), np.sort(global_rows))
    # evaluation: contiguous shards in rank order reassemble the split
    evals = [BatchLoader(split, 40, rank=r, world_size=world) for r in range(world)]
    assert np.array_equal(np.concatenate([all_rows(e) for e in evals]), np.arange(split.rows))


def test_batches_match_the_stored_columns(tiny_dataset):
    split = tiny_dataset.split("valid")
    loader = BatchLoader(split, 16, LoaderConfig(prefetch=0), with_groups=True)
    batch = next(iter(loader.batches()))
    assert batch.label.dtype == torch.float32 and batch.group is not None and batch.size == 16
    assert batch.features["item_id"].tolist() == np.asarray(split.column("item_id"))[:16].tolist()
    offsets = np.asarray(split.column("item_history.offsets"))
    flat = np.asarray(split.column("item_history"))
    history = batch.jagged("item_history")
    values = history.values["item_history"].numpy()
    for i in range(16):
        start, end = history.offsets[i:i + 2].tolist()
        assert values[start:end].tolist() == flat[offsets[i]:offsets[i + 1]].tolist()  # oldest first, no padding
    assert history.lengths.tolist() == np.diff(offsets[:17]).tolist()
    assert history.width == np.diff(offsets[:17]).max()  # the batch's longest row


def test_prefetch_gives_identical_batches(tiny_dataset):
    split = tiny_dataset.split("train")
    a = list(BatchLoader(split, 64, LoaderConfig(prefetch=0), shuffle=True, seed=5).batches(2))
    b = list(BatchLoader(split, 64, LoaderConfig(prefetch=3), shuffle=True, seed=5).batches(2, start=1))
    assert len(b) == len(a) - 1
    for x, y in zip(a[1:], b):
        assert torch.equal(x.label, y.label) and all(torch.equal(x.features[k], y.features[k]) for k in x.features)
        assert all(torch.equal(p.values[k], q.values[k]) and torch.equal(p.offsets, q.offsets)
                   for p, q in zip(x.sequences, y.sequences) for k in p.values)


def test_a_consumer_that_stops_early_leaves_no_prefetch_thread(tiny_dataset):
    before = set(threading.enumerate())
    batches = BatchLoader(tiny_dataset.split("train"), 16, LoaderConfig(prefetch=2)).batches()
    next(batches)
    started = set(threading.enumerate()) - before
    assert len(started) == 1  # the prefetch worker
    batches.close()  # what an exception in the training step does to the loop over batches
    assert not any(t.is_alive() for t in started)


def test_a_group_gathers_the_newest_events_and_aligns_fields_at_the_newest():
    flat = np.arange(1, 11, dtype=np.int32)  # one row of 6 events (1..6) and one of 4 (7..10)
    start, count = np.array([3, 8]), np.array([3, 2])  # newest 3 and newest 2
    jag = gather_jagged({"a": flat}, {"a": start}, {"a": count})
    assert jag.values["a"].tolist() == [4, 5, 6, 9, 10] and jag.lengths.tolist() == [3, 2]
    assert jag.offsets.tolist() == [0, 3, 5] and jag.width == 3
    dense = jag.to_dense(jag.values["a"])
    assert dense.tolist() == [[4, 5, 6], [0, 9, 10]]
    assert jag.to_dense(jag.values["a"], 4, side="post").tolist() == [[4, 5, 6, 0], [9, 10, 0, 0]]
    # a field of the group with fewer events in a row is padded at the row's old end
    jag = gather_jagged({"a": flat, "b": flat + 100}, {"a": start, "b": np.array([4, 8])}, {"a": count, "b": np.array([2, 2])})
    assert jag.lengths.tolist() == [3, 2]
    assert jag.values["b"].tolist() == [0, 105, 106, 109, 110]


def test_max_len_override_truncates(tiny_dataset):
    loader = BatchLoader(tiny_dataset.split("train"), 256, LoaderConfig(max_len=2), shuffle=True)
    for batch in loader.batches():
        assert int(batch.jagged("item_history").lengths.max()) <= 2


def test_invalid_loader_settings():
    from loopctr.errors import UserError

    with pytest.raises(UserError):
        LoaderConfig(shuffle_block=0).validate()


def test_a_train_fraction_keeps_every_row_of_a_seeded_share_of_the_users(tiny_dataset):
    from loopctr.data.loader import sample_rows

    split = tiny_dataset.split("train")
    groups = np.asarray(split.groups)
    users = np.unique(groups)
    rows = sample_rows(split, 0.3, seed=5)
    chosen = np.unique(groups[rows])
    assert len(chosen) == round(0.3 * len(users))
    assert np.array_equal(rows, np.flatnonzero(np.isin(groups, chosen)))  # all their rows, in row order
    assert np.array_equal(sample_rows(split, 0.3, seed=5), rows)
    assert not np.array_equal(sample_rows(split, 0.3, seed=6), rows)
    assert sample_rows(split, 1.0, seed=5) is None
    for cfg in (LoaderConfig(), LoaderConfig(shuffle_block=8)):
        loader = BatchLoader(split, 32, cfg, shuffle=True, seed=0, rows=rows)
        assert np.array_equal(np.sort(all_rows(loader)), rows)
        assert np.array_equal(np.concatenate(BatchLoader(split, 32, cfg, rows=rows).rank_rows()), rows)


def test_train_fraction_trains_on_fewer_rows_and_evaluates_on_all(tiny_data, tmp_path):
    import json

    from loopctr.cli.main import main

    reports = {}
    for fraction in (1.0, 0.5):
        out = tmp_path / f"f{fraction}"
        assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(out), "epochs=1", "threads=1",
                     "hidden_units=[8]", "batch_size=256", f"train_fraction={fraction}"]) == 0
        reports[fraction] = json.loads((out / "metrics.json").read_text())
    full, half = reports[1.0], reports[0.5]
    assert full["rows_train_used"] == full["rows_train"] and 0.3 < half["rows_train_used"] / half["rows_train"] < 0.7
    assert half["rows_test"] == full["rows_test"]
    assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(tmp_path / "bad"),
                 "train_fraction=0"]) == 2
