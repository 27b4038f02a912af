"""HSTU (Zhai et al., Meta, ICML'24, "Actions Speak Louder than Words"), used as a CTR ranker.

Tokens: the behaviour events (concatenated embeddings of the paired sequence fields, e.g. item + category),
then the target item (the target fields, same layout), all projected by one Linear to `model_dim`. Stacked
HSTU layers (layers/hstu.py: pointwise SiLU attention without softmax, divided by the maximum token count,
U-gating, a learned relative-position bias) run under the target-aware mask: the target sees the whole
history and itself, history tokens see only earlier history (causal), padding is never attended.
The logit comes from the target token's final output, concatenated with the embeddings of all fields outside
the paired sequences, through an MLP head. [S: generative-recommenders hstu.py for the layer]
Inferred [I]: the tokenisation (concatenate, then one shared projection), no absolute position embedding (the
relative bias alone carries order; there are no timestamps, so no time bias), the read-out and the head
(ReLU MLP [1024, 512, 256] with batch norm), and the sizes (2 layers, 2 heads of 32). With one target the
target-aware mask equals the causal mask. The last layer computes the target query only (exact: nothing
else is read). Needs a sequence field paired with a target field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.hstu import HSTULayer
from loopctr.layers.transformer import attention_mask
from loopctr.models.base import CTRModel, SequenceEncoderConfig
from loopctr.models.registry import register
from loopctr.models.target_sequence import (context_vectors, in_length_groups, max_events, require_pairs,
                                            target_and_history)


@dataclass
class HSTUConfig(SequenceEncoderConfig):
    model_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    qk_dim: int = 32  # per head
    v_dim: int = 32  # per head
    dropout: float = 0.1  # on U * LN(AV), as the reference code

    def validate(self):
        super().validate()
        if min(self.model_dim, self.num_layers, self.num_heads, self.qk_dim, self.v_dim) < 1:
            raise UserError("model.model_dim, num_layers, num_heads, qk_dim and v_dim must be >= 1")


@register("hstu")
class HSTU(CTRModel):
    config_class = HSTUConfig

    def __init__(self, schema, vocab_sizes, config: HSTUConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        self.pairs = require_pairs(schema, "HSTU")
        self.project = nn.Linear(d * len(self.pairs), c.model_dim)
        n_max = max_events(schema) + 1
        self.layers = nn.ModuleList(HSTULayer(c.model_dim, c.num_heads, c.qk_dim, c.v_dim, n_max, c.dropout)
                                    for _ in range(c.num_layers))
        n_context = len(schema.fields) - len(self.pairs)
        self.head = self.mlp_head(c.model_dim + d * n_context)

    def encode(self, history: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """history (b, L, k*d) with its mask, target (b, k*d) -> the target token's final output (b, D)."""
        x = self.project(torch.cat([history, target.unsqueeze(1)], dim=1))  # (b, L + 1, D), target last
        n = x.shape[1]
        mask = attention_mask(torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1), "causal")
        for layer in self.layers[:-1]:
            x = layer(x, mask)
        return self.layers[-1](x, mask[..., n - 1:, :], query=slice(n - 1, n))[:, 0]

    def forward(self, batch):
        emb = self.embedding(batch, fields=[f for pair in self.pairs for f in pair])
        target, history, events = target_and_history(emb, batch, self.pairs)
        out = in_length_groups(self.encode, history, events, self.config.length_chunks, target)
        readout = torch.cat([out] + context_vectors(self, batch, self.pairs), dim=-1)
        return {"logits": self.head(readout, self.apg_condition(batch)).squeeze(-1)}
