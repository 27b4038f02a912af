import threading

import numpy as np
import pytest
import torch

from loopctr.data.loader import BatchLoader, LoaderConfig, _pad


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
    width = lambda ld: np.mean([b["item_history"].shape[1] for b in ld.batches()])  # noqa: E731
    assert width(bucketed) < width(plain)  # less padding


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
    assert batch["_label"].dtype == torch.float32 and "_group" in batch
    offsets = np.asarray(split.column("item_history.offsets"))
    flat = np.asarray(split.column("item_history"))
    seq = batch["item_history"].numpy()
    for i in range(16):
        events = flat[offsets[i]:offsets[i + 1]]
        assert seq[i, seq.shape[1] - len(events):].tolist() == events.tolist()  # pre padding, newest last
        assert (seq[i, :seq.shape[1] - len(events)] == 0).all()
    assert seq.shape[1] == np.diff(offsets[:17]).max()  # cut to the batch's longest row


def test_prefetch_gives_identical_batches(tiny_dataset):
    split = tiny_dataset.split("train")
    a = list(BatchLoader(split, 64, LoaderConfig(prefetch=0), shuffle=True, seed=5).batches(2))
    b = list(BatchLoader(split, 64, LoaderConfig(prefetch=3), shuffle=True, seed=5).batches(2, start=1))
    assert len(b) == len(a) - 1
    for x, y in zip(a[1:], b):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_a_consumer_that_stops_early_leaves_no_prefetch_thread(tiny_dataset):
    before = set(threading.enumerate())
    batches = BatchLoader(tiny_dataset.split("train"), 16, LoaderConfig(prefetch=2)).batches()
    next(batches)
    started = set(threading.enumerate()) - before
    assert len(started) == 1  # the prefetch worker
    batches.close()  # what an exception in the training step does to the loop over batches
    assert not any(t.is_alive() for t in started)


def test_max_len_keeps_newest_events_both_padding_sides():
    flat = np.arange(1, 11, dtype=np.int32)  # one row of 6 events (1..6) and one of 4 (7..10)
    start, count = np.array([3, 8]), np.array([3, 2])  # newest 3 and newest 2
    assert _pad(flat, start, count, 3, "pre").tolist() == [[4, 5, 6], [0, 9, 10]]
    assert _pad(flat, start, count, 4, "post").tolist() == [[4, 5, 6, 0], [9, 10, 0, 0]]


def test_max_len_override_truncates(tiny_dataset):
    loader = BatchLoader(tiny_dataset.split("train"), 256, LoaderConfig(max_len=2), shuffle=True)
    for batch in loader.batches():
        assert batch["item_history"].shape[1] <= 2


def test_invalid_loader_settings():
    from loopctr.errors import UserError

    with pytest.raises(UserError):
        LoaderConfig(shuffle_block=0).validate()
