"""Batches as dicts of tensors, sliced from memory-mapped column arrays.

No per-row `__getitem__` and collate: a batch (`data.batch.Batch`) is one fancy-index per column, and every
sequence group stays ragged, as stored: values and offsets, no padding. Rows are shuffled by permuting blocks of consecutive rows
(block 1 = a full shuffle; larger blocks read larger-than-RAM data sequentially). Optional length bucketing
groups rows of similar length so that little padding is computed at all. Under DDP every global batch
is split across ranks, so the optimisation sees the same global batch whatever the world size.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch

from loopctr.data.batch import Batch, gather_jagged, length_groups
from loopctr.data.dataset import SplitData
from loopctr.errors import UserError


@dataclass
class LoaderConfig:
    max_len: int = 0  # keep the most recent max_len events of every sequence (0: as prepared)
    shuffle_block: int = 1  # shuffle blocks of this many consecutive rows (1: every row independently)
    length_buckets: int = 0  # sort rows by sequence length within windows of this many batches (0: off)
    prefetch: int = 2  # batches assembled ahead in a background thread (0: in the training thread)
    # train on the rows of this fraction of the training split's users (groups; rows if there is no group
    # field), drawn with `fraction_seed`; validation and test are untouched (data-size studies)
    train_fraction: float = 1.0
    fraction_seed: int = 0

    def validate(self):
        for name in ("max_len", "length_buckets", "prefetch"):
            if getattr(self, name) < 0:
                raise UserError(f"data.{name} must be >= 0")
        if self.shuffle_block < 1:
            raise UserError("data.shuffle_block must be >= 1")
        if not 0.0 < self.train_fraction <= 1.0:
            raise UserError(f"data.train_fraction must be in (0, 1], got {self.train_fraction}")


def sample_rows(split: SplitData, fraction: float, seed: int) -> np.ndarray | None:
    """The rows of a random `fraction` of the split's users (every row of a chosen user), in row order; None
    for the whole split. Without a group field, a random `fraction` of the rows."""
    if fraction >= 1.0:
        return None
    rng = np.random.default_rng(seed)
    if split.groups is None:
        keep = max(1, round(fraction * split.rows))
        return np.sort(rng.choice(split.rows, keep, replace=False))
    users, inverse = np.unique(np.asarray(split.groups), return_inverse=True)
    chosen = np.zeros(users.shape[0], dtype=bool)
    chosen[rng.choice(users.shape[0], max(1, round(fraction * users.shape[0])), replace=False)] = True
    return np.flatnonzero(chosen[inverse])


def sequence_limit(schema, config: LoaderConfig) -> int:
    """The most events of a sequence that a batch keeps (the newest): `max_len`, at most the prepared one."""
    prepared_len = max((f.max_len for f in schema.fields if f.type == "sequence"), default=0)
    return min(config.max_len or prepared_len, prepared_len)


class BatchLoader:
    def __init__(self, split: SplitData, batch_size: int, config: LoaderConfig | None = None, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False, with_groups: bool = False,
                 rows: np.ndarray | None = None):
        """`rows`: the split's rows to serve (default all of them), e.g. from `sample_rows`."""
        if batch_size < 1:
            raise UserError("batch_size must be >= 1")
        self.split = split
        self.schema = split.schema
        self.batch_size = batch_size
        self.config = config or LoaderConfig()
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.with_groups = with_groups and split.schema.group is not None
        self.row_ids = np.arange(split.rows) if rows is None else np.asarray(rows, dtype=np.int64)
        self.sequences = [f for f in self.schema.fields if f.type == "sequence"]
        self.groups = self.schema.sequence_groups()
        self.max_len = sequence_limit(self.schema, self.config)
        self.length_key = self.lengths() if (self.sequences and self.config.length_buckets) else None

    def lengths(self) -> np.ndarray:
        """Every row's longest sequence, after truncation to max_len (the width it pads a batch to)."""
        lengths = np.stack([np.diff(self.split.column(f.name + ".offsets")) for f in self.sequences]).max(0)
        return np.minimum(lengths, self.max_len)

    # -- index plans -------------------------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        n = self.row_ids.shape[0]
        if not self.shuffle:
            return self.row_ids
        rng = np.random.default_rng([self.seed, epoch])
        block = self.config.shuffle_block
        starts = rng.permutation((n + block - 1) // block) * block
        order = (starts[:, None] + np.arange(block)[None, :]).ravel()
        return self.row_ids[order[order < n] if block > 1 else order]

    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        order = self._order(epoch)
        n, b = order.shape[0], self.batch_size
        n_batches = n // b if self.drop_last else (n + b - 1) // b
        batches = [order[i * b:(i + 1) * b] for i in range(n_batches)]
        if self.world_size > 1 and batches and len(batches[-1]) < self.world_size:
            batches.pop()  # too small to give every rank a row
        if self.length_key is not None and self.shuffle:
            batches = self._bucket(batches, epoch)
        return batches

    def _bucket(self, batches: list[np.ndarray], epoch: int) -> list[np.ndarray]:
        """Within windows of `length_buckets` batches, regroup rows by length, then shuffle the batch order."""
        window = self.config.length_buckets
        rng = np.random.default_rng([self.seed, epoch, 1])
        out = []
        for w in range(0, len(batches), window):
            rows = np.concatenate(batches[w:w + window])
            out.extend(rows[g] for g in length_groups(self.length_key[rows], len(batches[w:w + window])))
        return [out[i] for i in rng.permutation(len(out))]

    def rank_rows(self, epoch: int = 0) -> list[np.ndarray]:
        """This rank's row indices, batch by batch."""
        if self.shuffle:
            return [np.sort(np.array_split(b, self.world_size)[self.rank]) for b in self._global_batches(epoch)]
        shard = np.array_split(self.row_ids, self.world_size)[self.rank]
        return [shard[i:i + self.batch_size] for i in range(0, shard.shape[0], self.batch_size)]

    def __len__(self) -> int:
        return len(self.rank_rows(0))

    # -- batch assembly ----------------------------------------------------------------------------------
    def gather(self, rows: np.ndarray) -> Batch:
        """The batch of `rows`: non-sequence columns fancy-indexed, each sequence group gathered as one Jagged
        (the newest `max_len` events of every row; nothing padded)."""
        features = {f.name: torch.from_numpy(np.asarray(self.split.column(f.name)[rows]))
                    for f in self.schema.fields if f.type != "sequence"}
        sequences = []
        for names in self.groups:
            flat, starts, counts = {}, {}, {}
            for name in names:
                offsets = self.split.column(name + ".offsets")
                end = np.asarray(offsets[rows + 1])
                counts[name] = np.minimum(end - np.asarray(offsets[rows]), self.max_len)
                starts[name] = end - counts[name]
                flat[name] = self.split.column(name)
            sequences.append(gather_jagged(flat, starts, counts))
        group = torch.from_numpy(np.asarray(self.split.groups[rows])) if self.with_groups else None
        return Batch(torch.from_numpy(np.asarray(self.split.labels[rows])), features, sequences, group)

    def batches(self, epoch: int = 0, start: int = 0):
        """Yield this rank's batches of `epoch`, skipping the first `start` (to resume mid-epoch)."""
        plan = self.rank_rows(epoch)[start:]
        if self.config.prefetch == 0:
            for rows in plan:
                yield self.gather(rows)
            return
        yield from _prefetched((self.gather(rows) for rows in plan), self.config.prefetch)


def _prefetched(iterator, depth: int):
    """Run `iterator` in a background thread, `depth` items ahead. If the consumer stops early (an error in the
    training step), the worker is stopped and joined: a thread left inside a torch op when the interpreter
    exits aborts the process."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not offer(item):
                    return
            offer(done)
        except BaseException as exc:  # surfaced in the consumer thread
            offer(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
