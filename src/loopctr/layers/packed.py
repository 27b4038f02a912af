"""Attention over packed tokens: one row per real token, laid out in padded grids for attention alone.

Models that run their per-token layers (FFNs, experts, residual mixing) on real tokens only keep their state
packed, (R, d), every batch row's tokens back to back (`layers.tokenizer.Tokens`). `PackedTokens` is built once
per batch and shared by every layer: it splits the rows into length groups (`data.batch.length_groups`), lays
each group out in a (b, w) grid of its own width (the group's longest row; tokens at the right end, the fixed
tokens in the last `n_fixed` columns) and keeps the grid positions and attention masks. Used by LoopCTR.
"""

from __future__ import annotations

import torch

from loopctr.data.batch import MIN_GROUP_ROWS, Jagged, length_groups
from loopctr.layers.transformer import MultiHeadAttention, attention_mask


class TokenGrid:
    """Some batch rows' tokens in a padded (b, w) grid: `tokens` (their packed rows, row by row; None: every
    token of the batch, in order), `index` (those tokens' flat grid positions; None: the grid has no padding),
    `readout_index` (the read-out tokens among `tokens`, row by row) and the masks of the two query sets (all
    tokens, or the read-out ones), built once."""

    def __init__(self, layout: Jagged, tokens: torch.Tensor | None, n_fixed: int, n_readout: int, kind: str):
        b, w = layout.rows, layout.width
        self.shape, self.tokens, self.kind = (b, w), tokens, kind
        padded = bool((layout.lengths != w).any())
        self.index = layout.dense_index() if padded else None
        self.key_mask = layout.mask() if padded else None
        self.readout = slice(w - n_readout, w)
        self.readout_index = (layout.offsets[1:, None] - n_readout
                              + torch.arange(n_readout, device=layout.offsets.device)).reshape(-1)
        self.history = torch.arange(w, device=layout.offsets.device) < w - n_fixed  # event columns
        self._masks = {}

    def attn_mask(self, readout_only: bool):
        if readout_only not in self._masks:
            self._masks[readout_only] = attention_mask(
                self.key_mask, self.kind, blocked_keys=~self.history, blocked_queries=self.history,
                query=self.readout if readout_only else None, n_tokens=self.shape[1])
        return self._masks[readout_only]

    def attend(self, attn: MultiHeadAttention, x: torch.Tensor, readout_only: bool) -> torch.Tensor:
        rows = x if self.tokens is None else x.index_select(0, self.tokens)
        return attn.forward_packed(rows, self.index, self.shape, self.attn_mask(readout_only),
                                   self.readout if readout_only else None,
                                   self.readout_index if readout_only else None)


class PackedTokens:
    """The per-batch layout of packed tokens (see the module docstring): `readout_index`, the rows of every
    batch row's read-out tokens (row by row), and attention in up to `groups` grids of rows of similar length
    (one grid when the batch is too small for groups of MIN_GROUP_ROWS rows)."""

    def __init__(self, layout: Jagged, n_fixed: int, n_readout: int, kind: str, groups: int = 1):
        self.layout, self.rows = layout, layout.rows
        self.settings = (n_fixed, n_readout, kind, groups)
        self.readout_index = (layout.offsets[1:, None] - n_readout
                              + torch.arange(n_readout, device=layout.offsets.device)).reshape(-1)
        split = length_groups(layout.lengths, groups, MIN_GROUP_ROWS) if groups > 1 else None
        if split is None or len(split) == 1:
            self.grids = [TokenGrid(layout, None, n_fixed, n_readout, kind)]
            self.ungroup = self.ungroup_readout = None
            return
        self.grids = []
        for rows in split:
            sub, tokens = layout.select(rows)
            self.grids.append(TokenGrid(sub, tokens, n_fixed, n_readout, kind))
        # the grids' outputs, concatenated, back in the batch's order
        self.ungroup = torch.argsort(torch.cat([g.tokens for g in self.grids]))
        readout_rows = torch.cat([(rows[:, None] * n_readout + torch.arange(n_readout, device=rows.device)).reshape(-1)
                                  for rows in split])
        self.ungroup_readout = torch.argsort(readout_rows)

    def attend(self, attn: MultiHeadAttention, x: torch.Tensor, readout_only: bool) -> torch.Tensor:
        """Attention over the packed tokens x (R, d): (R, d) out, or (B * n_readout, d) for the read-out tokens
        only (in `readout_index` order)."""
        outs = [g.attend(attn, x, readout_only) for g in self.grids]
        if len(outs) == 1:
            return outs[0]
        return torch.cat(outs).index_select(0, self.ungroup_readout if readout_only else self.ungroup)

    def select(self, rows: torch.Tensor) -> tuple[PackedTokens, torch.Tensor]:
        """The layout of `rows` alone (regrouped by length), and the positions of their tokens here."""
        sub, tokens = self.layout.select(rows)
        return PackedTokens(sub, *self.settings), tokens

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of every batch row's tokens: (R, d) -> (B, d)."""
        return self.layout.segment_mean(x)
