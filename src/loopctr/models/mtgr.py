"""MTGR (Han et al., Meituan, arXiv 2505.18654, "Industrial-Scale Generative Recommendation Framework in Meituan").

HSTU layers over one user's tokens, "retaining the original DLRM features, including cross features", with
Group LayerNorm (each token type has its own LayerNorm gain and bias, in both of the layer's norms) and a
dynamic mask against leakage [S: abstract and write-ups, see the reference notes]. For one candidate per
sample the tokens are [behaviour events | profile tokens | candidate]:
- events: the paired sequence fields' concatenated embeddings, projected to `model_dim` (type 0);
- profile: one token per field outside the paired sequences and the target fields, each with its own
  projection (type 1);
- candidate: a projection of all non-sequence fields together: the target item and every cross/context
  feature, as DLRM sees them (type 2).
Mask: static tokens (events and profile) attend to each other bidirectionally (the lifelong sequence of
MTGR; `sequence_causal=true` makes events causal among themselves, as its real-time sequence), the
candidate attends to everything and itself, static tokens never attend to the candidate; padding is never
attended. The candidate's final output goes through an MLP head.
Inferred [I] (the paper body could not be read): which fields form profile tokens vs. the candidate (a
schema does not say which fields describe the user, so every non-sequence field feeds the candidate and
the non-target ones also get profile tokens), the token order (profile after events, which keeps the
left-padded layout), the layer (layers/hstu.py with affine group norms), the head (ReLU MLP [1024, 512, 256]
with batch norm) and the sizes. Needs a sequence field paired with a target field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loopctr.layers.hstu import HSTULayer
from loopctr.layers.tokenwise import TokenwiseLinear
from loopctr.layers.transformer import attention_mask
from loopctr.models.base import CTRModel
from loopctr.models.hstu import HSTUConfig
from loopctr.models.registry import register
from loopctr.models.target_sequence import (context_vectors, in_length_groups, max_events, require_pairs,
                                            target_and_history)

EVENT, PROFILE, CANDIDATE = 0, 1, 2


@dataclass
class MTGRConfig(HSTUConfig):
    sequence_causal: bool = False  # events causal among themselves (MTGR's real-time sequence)


@register("mtgr")
class MTGR(CTRModel):
    config_class = MTGRConfig

    def __init__(self, schema, vocab_sizes, config: MTGRConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        self.pairs = require_pairs(schema, "MTGR")
        paired = {s for _, s in self.pairs}
        self.context = [f.name for f in schema.fields if f.name not in paired]
        targets = {t for t, _ in self.pairs}
        self.profile_index = [i for i, name in enumerate(self.context) if name not in targets]
        self.event_proj = nn.Linear(d * len(self.pairs), c.model_dim)
        self.profile_proj = TokenwiseLinear(len(self.profile_index), d, c.model_dim) if self.profile_index else None
        self.candidate_proj = nn.Linear(d * len(self.context), c.model_dim)
        n_max = max_events(schema) + len(self.profile_index) + 1
        self.layers = nn.ModuleList(HSTULayer(c.model_dim, c.num_heads, c.qk_dim, c.v_dim, n_max, c.dropout,
                                              groups=3, affine=True) for _ in range(c.num_layers))
        self.head = self.mlp_head(c.model_dim)

    def mask(self, event_mask: torch.Tensor, n_profile: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = event_mask.shape[0]
        key_mask = torch.cat([event_mask, event_mask.new_ones(b, n_profile + 1)], dim=1)
        # built from the mask, not from its width as a Python number: an export then follows any history width
        types = torch.cat([torch.full_like(event_mask[0], EVENT, dtype=torch.long),
                           torch.tensor([PROFILE] * n_profile + [CANDIDATE], device=event_mask.device)])
        is_candidate = types == CANDIDATE
        allowed = attention_mask(key_mask, "target_aware", blocked_keys=is_candidate, blocked_queries=~is_candidate)
        if self.config.sequence_causal:
            pos = torch.arange(types.shape[0], device=types.device)
            is_event = types == EVENT
            later = is_event[:, None] & is_event[None, :] & (pos[None, :] > pos[:, None])
            allowed = allowed & ~later
        return allowed, types

    def encode(self, history: torch.Tensor, event_mask: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """history (b, L, k*d) with its mask, context (b, n_context, d) -> the candidate's final output (b, D)."""
        tokens = [self.event_proj(history)]
        if self.profile_proj is not None:
            tokens.append(self.profile_proj(context[:, self.profile_index]))
        tokens.append(self.candidate_proj(context.flatten(1)).unsqueeze(1))
        x = torch.cat(tokens, dim=1)
        mask, types = self.mask(event_mask, len(self.profile_index))
        for layer in self.layers[:-1]:
            x = layer(x, mask, groups=types)
        return self.layers[-1](x, mask[..., -1:, :], groups=types, query=slice(-1, None))[:, 0]

    def forward(self, batch):
        emb = self.embedding(batch, fields=[f for pair in self.pairs for f in pair])
        _, history, events = target_and_history(emb, batch, self.pairs)
        context = torch.stack(context_vectors(self, batch, self.pairs), dim=1)
        out = in_length_groups(self.encode, history, events, self.config.length_chunks, context)
        return {"logits": self.head(out, self.apg_condition(batch)).squeeze(-1)}
