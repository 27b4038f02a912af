"""Unified tokenizer: turns any schema's fields into one token sequence for a Transformer (OneTrans-style).

Token order of every row, left to right (the sequence part's length is the row's own):
    [S-tokens of sequence group 1] ... [S-tokens of group G] [NS-tokens] [target tokens] [CLS]

- S-tokens: per behaviour event, the concatenated embeddings of the group's sequence fields (e.g. item and
  category of the event) through the group's shared projection Linear(k*e -> d), plus a learned *recency*
  position embedding (0 = newest event, counted over real events, so pre- and post-padding give the same
  positions). `seq_grouping="aligned"` makes one group of the fields that describe the same events (the
  schema's sequence groups: the histories paired with a target field, as in every x1 dataset; each bag
  field, such as a movie's genres, alone); `"separate"` makes one group (and projection) per sequence field.
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

`forward(batch, embeddings)` returns a `Tokens` record: every row's tokens back to back, (R, d) (one row per
real token: there is no padding), the Jagged `layout` of those token rows (lengths, offsets), the number of
fixed tokens (everything but the S-tokens, the last `n_fixed` of every row) and `n_readout`: the read-out
tokens are the last `n_readout` of every row: the target tokens and CLS (`readout="target"`), or every
non-sequence token, NS-tokens included (`readout="non_sequence"`, as OneTrans reads out its final NS-tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from loopctr.data.batch import Batch, Jagged
from loopctr.data.schema import Schema
from loopctr.layers.transformer import rms_norm


@dataclass
class Tokens:
    x: torch.Tensor  # (R, d): every row's tokens, row after row
    layout: Jagged  # the token rows of every batch row (no values; lengths and offsets)
    n_fixed: int  # the last n_fixed tokens of every row are not behaviour events
    n_readout: int  # the read-out tokens are the last n_readout of every row


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
        schema_groups = schema.sequence_groups()
        if seq_grouping == "aligned":
            self.groups = schema_groups
        elif seq_grouping == "separate":
            self.groups = [[name] for g in schema_groups for name in g]
        else:
            raise ValueError(f"unknown seq_grouping '{seq_grouping}'")
        # every S-token group reads the Jagged of the schema group its fields belong to
        self.jagged_of = [next(i for i, g in enumerate(schema_groups) if names[0] in g) for names in self.groups]
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

    def forward(self, batch: Batch, emb: dict[str, torch.Tensor]) -> Tokens:
        if self.normalised:  # eps far below the init's mean square (1e-8)
            emb = {name: rms_norm(x, eps=1e-12) if name in self.normalised else x for name, x in emb.items()}
        return self.pack(batch, self.event_tokens(batch, emb), self.fixed_tokens(batch.size, emb))

    def event_tokens(self, batch: Batch, emb: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, Jagged]]:
        """Per S-token group: its (T_g, d) tokens and the Jagged they follow."""
        out = []
        for gi, (group, proj) in enumerate(zip(self.groups, self.projections)):
            jag = batch.sequences[self.jagged_of[gi]]
            x = proj(torch.cat([emb[name] for name in group], dim=-1))
            if self.position_emb is not None:
                x = x + self.position_emb[jag.recency.clamp_max(self.max_positions - 1)]
            if self.type_emb is not None:
                x = x + self.type_emb[gi]
            out.append((x, jag))
        return out

    def fixed_tokens(self, b: int, emb: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, F, d): every row's NS-tokens, target tokens and CLS."""
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
            cols = [emb[target] if target is not None else emb[name].new_zeros(b, self.embedding_dim)
                    for name, target in zip(self.groups[gi], self.group_targets[gi])]
            t = self.projections[gi](torch.cat(cols, dim=-1)).unsqueeze(1)
            if self.type_emb is not None:
                t = t + self.type_emb[len(self.groups)]
            fixed.append(t)
        if self.use_cls:
            c = self.cls.expand(b, 1, self.d_model)
            if self.type_emb is not None:
                c = c + self.type_emb[-1]
            fixed.append(c)
        return torch.cat(fixed, dim=1)

    def pack(self, batch: Batch, events: list[tuple[torch.Tensor, Jagged]], fixed: torch.Tensor) -> Tokens:
        """Every row's tokens back to back: its groups' events one group after another, then its fixed tokens."""
        b, n_fixed, _ = fixed.shape
        device = fixed.device
        per_row = sum((jag.lengths for _, jag in events), torch.zeros(b, dtype=torch.long, device=device))
        # the grid width from the groups' widths, not from the lengths' values (a trace keeps it symbolic)
        layout = Jagged.from_lengths({}, per_row + n_fixed, width=sum(jag.width for _, jag in events) + n_fixed)
        start = layout.offsets[:-1]  # where each row's next tokens go
        parts, rows = [], []
        for x, jag in events:
            parts.append(x)
            rows.append(start.index_select(0, jag.row_index) + jag.position)
            start = start + jag.lengths
        parts.append(fixed.reshape(-1, self.d_model))
        rows.append((start[:, None] + torch.arange(n_fixed, device=device)).reshape(-1))
        values = torch.cat(parts)
        packed = values.new_zeros(values.shape[0], self.d_model).index_copy(0, torch.cat(rows), values)
        return Tokens(packed, layout, n_fixed, self.n_readout)
