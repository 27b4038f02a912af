"""FAT, the Field-Aware Transformer (Yan et al., Alibaba, arXiv 2511.12081).

Every field is one token (categorical embeddings, numeric value-times-vector embeddings, sequences
mean-pooled over valid events). Attention decomposes into field-aware content alignment and a learned
cross-field modulation: token i of field f_i has its own query projection W_Q^{f_i}, token j its own key
projection W_K^{f_j}, and per head

    s_ij = (x_i W_Q^{f_i}) . (x_j W_K^{f_j}) / sqrt(d_h) * g_{f_i f_j} + b_{f_i f_j},   softmax over j,

with g (init 1) and b (init 0) learned, asymmetric (F x F) per head. `num_bases` > 0 composes the
field-specific Q/K weights from shared bases (the v2 basis-composed hypernetwork). The flattened final tokens
go through an MLP head. Needs no sequence.
Inferred [I] (the paper's exact equations could not be read): the form of s_ij above (multiplicative gate
plus additive bias), a shared value/output projection, pre-LayerNorm blocks with a GELU FFN, the flattened
read-out, the head (ReLU MLP [1024, 512, 256] with batch norm) and the sizes (2 layers, 2 heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.mlp import MLP
from loopctr.layers.tokenwise import TokenwiseLinear
from loopctr.models.base import CTRModel, MLPHeadConfig
from loopctr.models.registry import register


@dataclass
class FATConfig(MLPHeadConfig):
    num_layers: int = 2
    num_heads: int = 2
    ffn_hidden_dim: int = 256
    attention_dropout: float = 0.0
    dropout: float = 0.1  # on the attention and FFN outputs
    num_bases: int = 0  # > 0: basis-composed field-specific Q/K weights

    def validate(self):
        super().validate()
        if self.num_layers < 1 or self.num_heads < 1 or self.embedding_dim % self.num_heads:
            raise UserError("model.num_layers and model.num_heads must be >= 1, and num_heads must divide "
                            f"embedding_dim ({self.embedding_dim})")


class FieldAwareAttention(nn.Module):
    def __init__(self, num_fields: int, dim: int, num_heads: int, dropout: float, num_bases: int):
        super().__init__()
        self.h, self.dh = num_heads, dim // num_heads
        self.q = TokenwiseLinear(num_fields, dim, dim, num_bases=num_bases)
        self.k = TokenwiseLinear(num_fields, dim, dim, num_bases=num_bases)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.ones(num_heads, num_fields, num_fields))
        self.bias = nn.Parameter(torch.zeros(num_heads, num_fields, num_fields))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, d = x.shape
        split = lambda t: t.view(b, f, self.h, self.dh).transpose(1, 2)  # noqa: E731  (B, H, F, dh)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) * self.gate + self.bias
        out = self.dropout(scores.softmax(dim=-1)) @ v
        return self.o(out.transpose(1, 2).reshape(b, f, d))


class FATBlock(nn.Module):
    def __init__(self, num_fields: int, dim: int, c: FATConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = FieldAwareAttention(num_fields, dim, c.num_heads, c.attention_dropout, c.num_bases)
        self.ffn = MLP(dim, [c.ffn_hidden_dim], "gelu", output_dim=dim)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x)))
        return x + self.dropout(self.ffn(self.norm2(x)))


@register("fat")
class FAT(CTRModel):
    config_class = FATConfig

    def __init__(self, schema, vocab_sizes, config: FATConfig):
        super().__init__(schema, vocab_sizes, config)
        n, d = len(schema.fields), config.embedding_dim
        self.blocks = nn.Sequential(*(FATBlock(n, d, config) for _ in range(config.num_layers)))
        self.head = self.mlp_head(n * d)

    def forward(self, batch):
        x = self.blocks(torch.stack(self.embedding.pooled(batch), dim=1))
        return {"logits": self.head(x.flatten(1), self.apg_condition(batch)).squeeze(-1)}
