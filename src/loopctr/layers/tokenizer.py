"""Unified tokenizer: turns any schema's fields into one token sequence for a Transformer (OneTrans-style).

Token order, left to right (fixed per schema; the sequence part's length is the batch's):
    [S-tokens of sequence group 1] ... [S-tokens of group G] [NS-tokens] [target tokens] [CLS]

- S-tokens: per behaviour event, the concatenated embeddings of the group's sequence fields (e.g. item and
  category of the event) through the group's shared projection Linear(k*e -> d), plus a learned *recency*
  position embedding (0 = newest event, counted over real events, so pre- and post-padding give the same
  positions). `seq_grouping="aligned"` puts all sequence fields in one group (they describe the same events,
  as in every x1 dataset); `"separate"` makes one group (and projection) per sequence field.
- target tokens: per group, the embeddings of the categorical fields that share the group's vocabularies
  (`schema.sequence_targets()`, e.g. item_id and cate_id for item_history and cate_history) concatenated in
  the same order and passed through the *same* projection, so that target and history share one space
  (a sequence field without a target field contributes zeros). No position embedding.
- NS-tokens: the remaining non-sequence fields (categorical or numeric). `ns_tokenizer="field"`: one token
  per field, each through its own Linear(e -> d); `"auto_split"` (OneTrans): all their embeddings concatenated,
  one Linear to `ns_tokens * d`, split into `ns_tokens` tokens (0: as many as fields).
- CLS: a learned token, added when `cls_token` is set or when nothing else would be read out (a dataset without
  behaviour sequences, read out at its target tokens).
- token types: a learned embedding per kind (each sequence group, target, each NS token, CLS).
- `embedding_norm`: RMS-normalise every categorical and sequence embedding (no gain) before its projection.
  Embeddings start at N(0, 1e-4) (FuxiCTR's init), so without it a token's content is about 1e-3 of the
  projection bias and the position and type embeddings added to it, and the model learns which item a token
  is only as its embeddings grow. Numeric fields keep their scale (it is their value).

`forward(batch, embeddings)` returns a `Tokens` record: tokens (B, N, d), token mask (B, N) (False at
padding events), the (N,) flags of history positions, and `n_readout`: the read-out tokens are the last
`n_readout` positions: the target tokens and CLS (`readout="target"`), or every non-sequence token, NS-tokens
included (`readout="non_sequence"`, as OneTrans reads out its final NS-tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from loopctr.data.schema import Schema
from loopctr.layers.transformer import apply_packed, rms_norm


@dataclass
class Tokens:
    tokens: torch.Tensor  # (B, N, d)
    mask: torch.Tensor  # (B, N) bool, True at real tokens
    history: torch.Tensor  # (N,) bool, True at S-token positions
    n_readout: int  # the read-out tokens are the last n_readout positions
    has_padding: bool  # whether any position is padding (else the mask is all True)


class UnifiedTokenizer(nn.Module):
    def __init__(self, schema: Schema, embedding_dim: int, d_model: int,
                 seq_grouping: Literal["aligned", "separate"] = "aligned",
                 ns_tokenizer: Literal["field", "auto_split"] = "field", ns_tokens: int = 0,
                 position_embedding: bool = True, type_embedding: bool = True, cls_token: bool = False,
                 readout: Literal["target", "non_sequence"] = "target", embedding_norm: bool = False):
        super().__init__()
        self.normalised = {f.name for f in schema.fields if f.type != "numeric"} if embedding_norm else set()
        e, d = embedding_dim, d_model
        self.embedding_dim, self.d_model = e, d
        sequences = schema.of_type("sequence")
        if seq_grouping == "aligned":
            self.groups = [[f.name for f in sequences]] if sequences else []
        elif seq_grouping == "separate":
            self.groups = [[f.name] for f in sequences]
        else:
            raise ValueError(f"unknown seq_grouping '{seq_grouping}'")
        target_of = {s: t for t, s in schema.sequence_targets()}
        self.group_targets = [[target_of.get(s) for s in g] for g in self.groups]
        self.target_groups = [i for i, ts in enumerate(self.group_targets) if any(t is not None for t in ts)]
        used = {t for ts in self.group_targets for t in ts if t is not None}
        self.ns_fields = [f.name for f in schema.fields if f.type != "sequence" and f.name not in used]
        self.projections = nn.ModuleList([nn.Linear(len(g) * e, d) for g in self.groups])
        self.max_positions = max((f.max_len for f in sequences), default=0)
        self.position_emb = nn.Parameter(torch.empty(self.max_positions, d)) if position_embedding and sequences else None

        self.ns_mode = ns_tokenizer
        n_fields = len(self.ns_fields)
        if ns_tokenizer == "field":
            self.n_ns = n_fields
            self.ns_weight = nn.Parameter(torch.empty(n_fields, e, d)) if n_fields else None
            self.ns_bias = nn.Parameter(torch.empty(n_fields, d)) if n_fields else None
        elif ns_tokenizer == "auto_split":
            self.n_ns = (ns_tokens or n_fields) if n_fields else 0
            self.ns_split = nn.Linear(n_fields * e, self.n_ns * d) if n_fields else None
        else:
            raise ValueError(f"unknown ns_tokenizer '{ns_tokenizer}'")

        if readout not in ("target", "non_sequence"):
            raise ValueError(f"unknown readout '{readout}'")
        read_ns = readout == "non_sequence"
        self.use_cls = cls_token or not (self.target_groups or (read_ns and self.n_ns))
        self.cls = nn.Parameter(torch.empty(1, d)) if self.use_cls else None
        self.n_readout = len(self.target_groups) + int(self.use_cls) + (self.n_ns if read_ns else 0)
        # token types: each group's S-tokens, target, each NS token, CLS
        self.n_types = len(self.groups) + 1 + self.n_ns + 1
        self.type_emb = nn.Parameter(torch.empty(self.n_types, d)) if type_embedding else None
        self.reset_own_parameters()

    def reset_own_parameters(self):
        """Position/type/CLS embeddings N(0, 0.02); per-field NS projections Xavier-normal, zero bias."""
        for p in (self.position_emb, self.type_emb, self.cls):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        if self.ns_mode == "field" and self.ns_weight is not None:
            nn.init.normal_(self.ns_weight, std=math.sqrt(2.0 / (self.embedding_dim + self.d_model)))
            nn.init.zeros_(self.ns_bias)

    @staticmethod
    def recency(mask: torch.Tensor) -> torch.Tensor:
        """(B, L) bool -> (B, L) long: the number of real events after each position (0 = newest)."""
        after = mask.flip(-1).long().cumsum(-1).flip(-1)
        return (after - 1).clamp_min(0)

    def forward(self, batch: dict[str, torch.Tensor], emb: dict[str, torch.Tensor]) -> Tokens:
        b = batch["_label"].shape[0] if "_label" in batch else next(iter(emb.values())).shape[0]
        if self.normalised:  # eps far below the init's mean square (1e-8); padding rows are zero and stay zero
            emb = {name: rms_norm(x, eps=1e-12) if name in self.normalised else x for name, x in emb.items()}
        parts, masks, history = [], [], []
        any_padding = False
        zeros = None
        for gi, (group, proj) in enumerate(zip(self.groups, self.projections)):
            mask = batch[group[0]] != 0
            for name in group[1:]:
                mask = mask | (batch[name] != 0)
            padded = not bool(mask.all())
            # projected at real events only (most of a padded batch is padding); zeros at padding
            x = apply_packed(proj, torch.cat([emb[name] for name in group], dim=-1), mask if padded else None)
            if self.position_emb is not None:  # without padding the recency positions are simply L-1 .. 0
                positions = (self.recency(mask) if padded
                             else torch.arange(x.shape[1] - 1, -1, -1, device=x.device))
                x = x + self.position_emb[positions.clamp_max(self.max_positions - 1)]
            if self.type_emb is not None:
                x = x + self.type_emb[gi]
            parts.append(x)
            masks.append(mask)
            history.append(torch.ones(x.shape[1], dtype=torch.bool, device=x.device))
            any_padding = any_padding or padded
        fixed = []
        if self.n_ns:
            stacked = torch.stack([emb[name] for name in self.ns_fields], dim=1)  # (B, F, e)
            if self.ns_mode == "field":
                ns = torch.einsum("bfe,fed->bfd", stacked, self.ns_weight) + self.ns_bias
            else:
                ns = self.ns_split(stacked.flatten(1)).view(b, self.n_ns, self.d_model)
            if self.type_emb is not None:
                first = len(self.groups) + 1
                ns = ns + self.type_emb[first:first + self.n_ns]
            fixed.append(ns)
        for gi in self.target_groups:
            cols = []
            for name, target in zip(self.groups[gi], self.group_targets[gi]):
                if target is not None:
                    cols.append(emb[target])
                else:
                    zeros = zeros if zeros is not None else emb[name].new_zeros(b, self.embedding_dim)
                    cols.append(zeros)
            t = self.projections[gi](torch.cat(cols, dim=-1)).unsqueeze(1)
            if self.type_emb is not None:
                t = t + self.type_emb[len(self.groups)]
            fixed.append(t)
        if self.use_cls:
            c = self.cls.expand(b, 1, self.d_model)
            if self.type_emb is not None:
                c = c + self.type_emb[-1]
            fixed.append(c)
        fixed_tokens = torch.cat(fixed, dim=1)
        parts.append(fixed_tokens)
        masks.append(torch.ones(b, fixed_tokens.shape[1], dtype=torch.bool, device=fixed_tokens.device))
        history.append(torch.zeros(fixed_tokens.shape[1], dtype=torch.bool, device=fixed_tokens.device))
        return Tokens(torch.cat(parts, dim=1), torch.cat(masks, dim=1), torch.cat(history), self.n_readout,
                      any_padding)
