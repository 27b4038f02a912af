"""The packed layout of a batch of token sequences: one row per real token, and attention over padded grids.

Models that run their per-token layers (FFNs, experts, residual mixing) on real tokens only keep their state
packed, (rows, d), and lay it out in a padded grid for attention alone. `PackedBatch` is that layout, built once
per batch from the tokenizer's output (`layers.tokenizer.Tokens`) and shared by every layer; with several
`AttentionGroup`s, samples of similar length share a grid of their own width. Used by LoopCTR.
"""

from __future__ import annotations

import torch

from loopctr.layers.transformer import MultiHeadAttention, attention_mask


class PaddedGrid:
    """A padded (b, n) token grid that attention runs on: `key_mask` (b, n) True at real tokens (None: no
    padding), `history` (n,) True at S-token columns, the read-out tokens in the last `n_readout` columns. Its
    masks (all queries, or the read-out queries only) are built once and reused by every layer. Subclasses say
    where their packed rows sit in it: `index`, the rows' flat grid positions (None: one row per cell), and
    `readout_index`, the rows of the read-out tokens."""

    def __init__(self, shape: tuple[int, int], key_mask, history, n_readout: int, kind: str):
        self.shape, self.key_mask, self.history, self.kind = shape, key_mask, history, kind
        self.readout = slice(shape[1] - n_readout, shape[1])
        self._masks = {}

    def attn_mask(self, readout_only: bool):
        if readout_only not in self._masks:
            self._masks[readout_only] = attention_mask(
                self.key_mask, self.kind, blocked_keys=~self.history, blocked_queries=self.history,
                query=self.readout if readout_only else None, n_tokens=self.shape[1])
        return self._masks[readout_only]


class AttentionGroup(PaddedGrid):
    """Samples that attend in a (b, n) grid of their own: the columns of the batch's grid in which any of them
    has a real token (a contiguous run of history columns, then the fixed tokens), so short samples are not
    padded to the longest sample of the batch. `rows`: the group's packed rows, sample by sample; `index`: their
    flat positions in the group's grid (None: the grid has no padding); `readout_index`: the rows of the group's
    read-out tokens within `rows`; `readout_rows`: where those go in the batch's read-out order."""

    def __init__(self, samples, counts, starts, tok, batch_index, n_readout: int, kind: str):
        n = tok.mask.shape[1]
        device = counts.device
        cols = tok.mask.index_select(0, samples).any(0).nonzero().squeeze(-1)
        key_mask = tok.mask.index_select(0, samples).index_select(1, cols)
        no_padding = bool(key_mask.all())
        super().__init__((samples.numel(), cols.numel()), None if no_padding else key_mask, tok.history[cols],
                         n_readout, kind)
        local_start = counts.cumsum(0) - counts
        self.rows = (starts.repeat_interleave(counts)
                     + torch.arange(int(counts.sum()), device=device) - local_start.repeat_interleave(counts))
        if no_padding:
            self.index = None
        else:
            column = torch.full((n,), -1, dtype=torch.long, device=device)
            column[cols] = torch.arange(cols.numel(), device=device)
            local_sample = torch.arange(samples.numel(), device=device).repeat_interleave(counts)
            self.index = local_sample * self.shape[1] + column[batch_index.index_select(0, self.rows) % n]
        readout = torch.arange(n_readout, device=device)
        self.readout_index = ((local_start + counts - n_readout)[:, None] + readout).reshape(-1)
        self.readout_rows = (samples[:, None] * n_readout + readout).reshape(-1)


class PackedBatch(PaddedGrid):
    """Per-batch layout and masks, built once and shared by every layer and loop pass.

    The model's state is *packed*: one row per real token of the (B, N) token grid (row-major), padding events
    dropped (`pack_tokens=false` keeps all B * N rows, the plain reference layout). `index` holds the flat
    (B * N) positions of the rows (None: every position is a row); `readout_index` the rows of the read-out
    tokens (the last `n_readout` positions of every sample), in (sample, token) order. Attention runs on a
    padded grid: the whole (B, N) one, or with `groups` > 1 one grid per group of samples of similar length
    (`AttentionGroup`; sorting by length takes most of the padding out of a batch of mixed lengths).
    """

    MIN_GROUP = 64  # samples per attention group, at least: smaller groups cost more in operators than they save

    def __init__(self, tok, kind: str, pack: bool, groups: int = 1):
        b, n = tok.mask.shape
        device = tok.mask.device
        super().__init__((b, n), tok.mask if tok.has_padding else None, tok.history, tok.n_readout, kind)
        flat_mask = tok.mask.reshape(-1)
        read_flat = (torch.arange(b, device=device)[:, None] * n
                     + torch.arange(n - tok.n_readout, n, device=device)[None]).reshape(-1)
        if pack and tok.has_padding:
            self.index = flat_mask.nonzero().squeeze(-1)
            self.readout_index = (flat_mask.long().cumsum(0) - 1)[read_flat]
            self.weight = None
        else:
            self.index = None
            self.readout_index = read_flat
            self.weight = flat_mask if tok.has_padding else None
        self.groups = None
        groups = min(groups, b // self.MIN_GROUP)
        if self.index is not None and groups > 1:
            counts = tok.mask.sum(1)
            starts = counts.cumsum(0) - counts
            self.groups = [AttentionGroup(samples, counts[samples], starts[samples], tok, self.index,
                                          tok.n_readout, kind)
                           for samples in torch.argsort(counts, stable=True).tensor_split(groups)]
            # the groups' outputs, concatenated, back in the batch's order
            self.ungroup = torch.argsort(torch.cat([g.rows for g in self.groups]))
            self.ungroup_readout = torch.argsort(torch.cat([g.readout_rows for g in self.groups]))

    def pack(self, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(-1, tokens.shape[-1])
        return flat if self.index is None else flat.index_select(0, self.index)

    def attend(self, attn: MultiHeadAttention, x: torch.Tensor, readout_only: bool) -> torch.Tensor:
        """Attention over the packed rows x (rows, d): (rows, d) out, or (B * n_readout, d) for the read-out
        tokens only (in `readout_index` order)."""
        def on(grid: PaddedGrid, rows: torch.Tensor):
            return attn.forward_packed(rows, grid.index, grid.shape, grid.attn_mask(readout_only),
                                       grid.readout if readout_only else None,
                                       grid.readout_index if readout_only else None)

        if self.groups is None:
            return on(self, x)
        outs = [on(g, x.index_select(0, g.rows)) for g in self.groups]
        return torch.cat(outs).index_select(0, self.ungroup_readout if readout_only else self.ungroup)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of every sample's real-token rows: (rows, d) -> (B, d)."""
        b, n = self.shape
        rows = (self.index // n if self.index is not None
                else torch.arange(b, device=x.device).repeat_interleave(n))  # the sample of every row
        w = torch.ones(x.shape[0], dtype=x.dtype, device=x.device) if self.weight is None else self.weight.to(x.dtype)
        total = x.new_zeros(b, x.shape[-1]).index_add(0, rows, x * w.unsqueeze(-1))
        count = x.new_zeros(b).index_add(0, rows, w)
        return total / count.clamp_min(1.0).unsqueeze(-1)
