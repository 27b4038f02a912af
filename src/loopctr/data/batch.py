"""The batch every model reads: non-sequence fields as (B,) tensors, behaviour sequences as jagged tensors.

A *sequence group* (`Schema.sequence_groups`) is a set of sequence fields that describe the same events (the
item and the category of every reviewed item). The loader gives each group one `Jagged`: its rows' events back
to back, oldest first, with `offsets` (B + 1,) and `lengths` (B,) computed once, and one (T,) values tensor per
field. Nothing is padded between the loader and the models; two primitives serve every model:

- token packing: per-event (per-token) work runs on the (T, ...) values directly; `row_index` (the row of each
  event) and `recency` (0 = newest event of its row) are derived once per Jagged;
- length grouping: `length_groups(lengths, groups, min_rows)`, rows of similar length in balanced groups,
  each of which a model may pad to its own longest row (`Jagged.select` + `to_dense`). The loader's length
  buckets and the serving chunks use the same function.

`to_dense(x, width)` is the padded view (newest event last, whatever the schema's padding side): for reference
ops and for the baselines' dense layers, which stay faithful to their papers. `Batch.from_padded` builds a
batch from the padded dict layout (tests, goldens, exported programs' wire format).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch

from loopctr.data.schema import PAD

MIN_GROUP_ROWS = 64  # rows per length group, at least: smaller groups cost more in operators than they save


def length_groups(lengths, groups: int, min_rows: int = 1) -> list:
    """Row indices sorted by length (stable) and split into at most `groups` balanced runs of at least
    `min_rows` rows (fewer groups when the rows are too few; one group when `groups` <= 1). Works on a numpy
    array (loader, serving) or a torch tensor (models) and returns the same kind."""
    n = lengths.shape[0]
    groups = max(1, min(groups, n // max(min_rows, 1)))
    if isinstance(lengths, np.ndarray):
        order = np.argsort(lengths, kind="stable")
        return np.array_split(order, groups) if groups > 1 else [order]
    order = torch.argsort(lengths, stable=True)
    return list(order.tensor_split(groups)) if groups > 1 else [order]


@dataclass
class Jagged:
    """Events of B rows back to back: row b's events are positions offsets[b]:offsets[b + 1] of every values
    tensor, oldest first. `width`: at least the longest row (the padded width of `to_dense`; exported programs
    set it from their padded input, whose width a trace keeps symbolic)."""

    values: dict[str, torch.Tensor]  # field -> (T,) ids
    offsets: torch.Tensor  # (B + 1,) int64
    lengths: torch.Tensor  # (B,) int64
    width: int

    @classmethod
    def from_lengths(cls, values: dict[str, torch.Tensor], lengths: torch.Tensor, width: int | None = None):
        lengths = lengths.long()
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        if width is None:  # at least one column: a dense layer over an all-empty group still has a position
            width = max(int(lengths.max()), 1) if lengths.numel() else 1
        return cls(values, offsets, lengths, width)

    @property
    def rows(self) -> int:
        return self.lengths.shape[0]

    # (no Python ints are taken from tensor values here: a trace of a model, `loopctr export`, keeps every
    # size below symbolic, so that the program serves any batch)
    @cached_property
    def row_index(self) -> torch.Tensor:
        """(T,) the row of every event."""
        return torch.arange(self.rows, device=self.lengths.device).repeat_interleave(self.lengths)

    @cached_property
    def position(self) -> torch.Tensor:
        """(T,) every event's index within its row (0 = oldest)."""
        rows = self.row_index
        return torch.arange(rows.shape[0], device=rows.device) - self.offsets[:-1].index_select(0, rows)

    @cached_property
    def recency(self) -> torch.Tensor:
        """(T,) how many events of its row come after each event (0 = newest)."""
        return self.lengths.index_select(0, self.row_index) - 1 - self.position

    def dense_index(self, width: int | None = None, side: str = "pre") -> torch.Tensor:
        """(T,) every event's flat position in a (B, width) grid: events at the right end ("pre": padding
        first, newest event last) or at the left ("post")."""
        width = self.width if width is None else width
        start = self.row_index * width + self.position
        return start + (width - self.lengths).index_select(0, self.row_index) if side == "pre" else start

    def to_dense(self, x: torch.Tensor, width: int | None = None, side: str = "pre") -> torch.Tensor:
        """(T, ...) per-event values -> (B, width, ...), zeros at padding (`dense_index` places the events)."""
        width = self.width if width is None else width
        grid = x.new_zeros(self.rows * width, *x.shape[1:])
        return grid.index_copy(0, self.dense_index(width, side), x).view(self.rows, width, *x.shape[1:])

    def mask(self, width: int | None = None) -> torch.Tensor:
        """(B, width) bool, True at the positions `to_dense` fills (side "pre")."""
        width = self.width if width is None else width
        return torch.arange(width, device=self.lengths.device) >= (width - self.lengths).unsqueeze(1)

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, ...): the sum over each row's events."""
        return x.new_zeros(self.rows, *x.shape[1:]).index_add(0, self.row_index, x)

    def segment_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, ...): the mean over each row's events (zeros for an empty row)."""
        count = self.lengths.clamp_min(1).to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return self.segment_sum(x) / count

    def segment_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """(T,) scores -> (T,) their softmax over each row's events (the max taken out first, for stability)."""
        rows = self.row_index
        row_max = scores.new_full((self.rows,), float("-inf")).scatter_reduce(
            0, rows, scores.detach(), "amax", include_self=True)
        weights = (scores - row_max.index_select(0, rows)).exp()
        return weights / self.segment_sum(weights).index_select(0, rows)

    def event_index(self, rows: torch.Tensor) -> torch.Tensor:
        """The positions of the events of `rows`, row by row."""
        counts = self.lengths.index_select(0, rows)
        start = self.offsets.index_select(0, rows).repeat_interleave(counts)  # per event: its row's start here
        local_start = (counts.cumsum(0) - counts).repeat_interleave(counts)  # ... and in the selection
        return start + torch.arange(start.shape[0], device=counts.device) - local_start

    def select(self, rows: torch.Tensor, width: int | None = None) -> tuple[Jagged, torch.Tensor]:
        """The Jagged of `rows` (padded width: their longest row, or `width`) and the positions of their events
        here (to gather per-event tensors: `x.index_select(0, index)`)."""
        index = self.event_index(rows)
        lengths = self.lengths.index_select(0, rows)
        sub = Jagged.from_lengths({k: v.index_select(0, index) for k, v in self.values.items()}, lengths, width)
        return sub, index

    def to(self, device) -> Jagged:
        return Jagged({k: v.to(device, non_blocking=True) for k, v in self.values.items()},
                      self.offsets.to(device, non_blocking=True), self.lengths.to(device, non_blocking=True),
                      self.width)


@dataclass
class Batch:
    """One batch: `label` (B,) float, `features` (non-sequence fields, (B,) ids or values), `sequences` (one
    Jagged per sequence group, in `Schema.sequence_groups` order) and `group` (the gAUC group ids, or None)."""

    label: torch.Tensor
    features: dict[str, torch.Tensor]
    sequences: list[Jagged] = field(default_factory=list)
    group: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.label.shape[0]

    def jagged(self, name: str) -> Jagged:
        """The Jagged holding sequence field `name`."""
        for jag in self.sequences:
            if name in jag.values:
                return jag
        raise KeyError(name)

    def to(self, device) -> Batch:
        if torch.device(device).type == "cpu" and self.label.device.type == "cpu":
            return self
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.label), {k: move(v) for k, v in self.features.items()},
                     [j.to(device) for j in self.sequences], move(self.group))

    def select(self, rows: torch.Tensor) -> Batch:
        """The batch of `rows` (in that order), each sequence group padded to their own longest row."""
        pick = lambda t: None if t is None else t.index_select(0, rows)  # noqa: E731
        return replace(self, label=pick(self.label), features={k: pick(v) for k, v in self.features.items()},
                       sequences=[j.select(rows)[0] for j in self.sequences], group=pick(self.group))

    def to_padded(self, schema) -> dict[str, torch.Tensor]:
        """The padded dict layout of `from_padded` (each sequence field on its schema padding side)."""
        from loopctr.data.prepare import GROUP, LABEL

        out = {LABEL: self.label, **self.features}
        if self.group is not None:
            out[GROUP] = self.group
        for jag in self.sequences:
            for name, ids in jag.values.items():
                out[name] = jag.to_dense(ids, side=schema.field(name).padding)
        return out

    @classmethod
    def from_padded(cls, batch: dict[str, torch.Tensor], schema) -> Batch:
        """A batch of the padded dict layout (field -> (B,) or padded (B, L) ids, `_label`, `_group`): each
        group's events are the positions where any of its fields is not padding, in order. The padded width
        is kept as `width` (an exported program's trace keeps it symbolic)."""
        from loopctr.data.prepare import GROUP, LABEL

        first = next(v for k, v in batch.items() if not k.startswith("_"))
        label = batch[LABEL] if LABEL in batch else torch.zeros(first.shape[0])
        sequences = []
        for names in schema.sequence_groups():
            columns = [batch[n] for n in names]
            real = columns[0] != PAD
            for col in columns[1:]:
                real = real | (col != PAD)
            if schema.field(names[0]).padding == "post":  # count positions from the newest event either way
                real, columns = _right_aligned(real, columns)
            lengths = real.sum(1)
            flat = real.reshape(-1).nonzero().squeeze(-1)
            values = {n: c.reshape(-1).index_select(0, flat) for n, c in zip(names, columns)}
            sequences.append(Jagged.from_lengths(values, lengths, width=real.shape[1]))
        features = {f.name: batch[f.name] for f in schema.fields if f.type != "sequence" and not f.cross}
        return cls(label, features, sequences, batch.get(GROUP))


def _right_aligned(real: torch.Tensor, columns: list[torch.Tensor]):
    """Post-padded columns with every row's events moved to the right end (the order of the events kept)."""
    width = real.shape[1]
    shift = width - real.sum(1, keepdim=True)
    index = (torch.arange(width, device=real.device)[None, :] - shift) % width
    return real.gather(1, index), [c.gather(1, index) for c in columns]


def gather_jagged(flat: dict[str, np.ndarray], starts: dict[str, np.ndarray], counts: dict[str, np.ndarray]) -> Jagged:
    """The Jagged of one sequence group from stored ragged columns: field -> its flat ids, and every row's
    first stored event and event count (the newest `count` events). Fields of one group whose rows hold
    different numbers of events are aligned at their newest event (the shorter ones padded at the old end)."""
    names = list(flat)
    lengths = np.max(np.stack([counts[n] for n in names]), axis=0) if names else np.zeros(0, np.int64)
    total = int(lengths.sum())
    group_start = np.cumsum(lengths) - lengths
    values = {}
    for n in names:
        count = counts[n]
        k = int(count.sum())
        first = np.cumsum(count) - count
        j = np.arange(k) - np.repeat(first, count)
        source = np.repeat(starts[n], count) + j
        if np.array_equal(count, lengths):
            ids = flat[n][source] if k else np.zeros(0, dtype=np.int32)
        else:
            ids = np.full(total, PAD, dtype=np.int32)
            ids[np.repeat(group_start + lengths - count, count) + j] = flat[n][source]
        values[n] = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int32))
    lengths_t = torch.from_numpy(lengths.astype(np.int64))
    return Jagged.from_lengths(values, lengths_t)
