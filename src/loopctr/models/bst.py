"""BST, the Behavior Sequence Transformer (Chen et al., DLP-KDD'19), as FuxiCTR defines it (model_zoo/BST).

The event tokens (concatenated embeddings of the paired sequence fields, e.g. item + category) are followed
by the target token (the target fields, same layout); a position embedding (sinusoidal init, learned,
positions counted back from the target) is concatenated to every token, so the model width is
d * (pairs + 1). Post-norm Transformer blocks (multi-head attention with biases and attention dropout,
residual, optional LayerNorm, FFN Linear-LeakyReLU-Linear of the same width, residual, optional LayerNorm)
attend over the real tokens. The pooled output (`target`: the target token's output; or `mean`/`sum` over
real tokens) replaces the sequence fields; with the other fields' embeddings it feeds the DNN.
Defaults are the BARS AmazonElectronics_x1 settings (1 layer, 8 heads, no LayerNorm, residual, target
pooling, dropout 0.1, DNN [1024, 512, 256] ReLU with batch norm). Nothing is inferred, except that we skip
the work whose result is never read: with target pooling the last block computes only the target query, and
the FFN runs on real tokens only (both exact). Needs a sequence field paired with a target field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.embedding import masked_mean
from loopctr.layers.transformer import MultiHeadAttention, attention_mask
from loopctr.models.base import CTRModel, SequenceEncoderConfig
from loopctr.models.registry import register
from loopctr.models.target_sequence import (context_vectors, in_length_groups, max_events, require_pairs,
                                            target_and_history)

POOLING = ("target", "mean", "sum")


@dataclass
class BSTConfig(SequenceEncoderConfig):
    num_layers: int = 1
    num_heads: int = 8
    attention_dropout: float = 0.1
    dropout: float = 0.1  # on the attention and FFN outputs
    layer_norm: bool = False
    use_residual: bool = True
    use_position_emb: bool = True
    use_causal_mask: bool = False
    seq_pooling_type: str = "target"

    def validate(self):
        super().validate()
        if self.num_layers < 1 or self.num_heads < 1:
            raise UserError("model.num_layers and model.num_heads must be >= 1")
        if self.seq_pooling_type not in POOLING:
            raise UserError(f"model.seq_pooling_type '{self.seq_pooling_type}' is not one of {list(POOLING)}")


class BSTBlock(nn.Module):
    def __init__(self, dim: int, c: BSTConfig):
        super().__init__()
        self.attention = MultiHeadAttention(dim, c.num_heads, c.attention_dropout, bias=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(), nn.Linear(dim, dim))
        self.norm1 = nn.LayerNorm(dim) if c.layer_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(dim) if c.layer_norm else nn.Identity()
        self.dropout1, self.dropout2 = nn.Dropout(c.dropout), nn.Dropout(c.dropout)
        self.residual = c.use_residual

    def forward(self, x, mask, query=None):
        s = self.dropout1(self.attention(x, mask, query))
        if query is not None:
            x = x[:, query]
        s = self.norm1(s + x if self.residual else s)
        out = self.dropout2(self.ffn(s))
        return self.norm2(out + s if self.residual else out)


def sinusoid(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


@register("bst")
class BST(CTRModel):
    config_class = BSTConfig

    def __init__(self, schema, vocab_sizes, config: BSTConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        self.pairs = require_pairs(schema, "BST")
        self.dim = d * (len(self.pairs) + int(c.use_position_emb))
        if self.dim % c.num_heads:
            raise UserError(f"BST: the token width {self.dim} is not divisible by model.num_heads={c.num_heads}")
        self.position = nn.Parameter(sinusoid(max_events(schema) + 1, d)) if c.use_position_emb else None
        self.blocks = nn.ModuleList(BSTBlock(self.dim, c) for _ in range(c.num_layers))
        n_context = len(schema.fields) - len(self.pairs)
        self.head = self.mlp_head(self.dim + d * n_context)

    def encode(self, history: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """history (b, L, k*d) with its mask, target (b, k*d) -> the pooled sequence output (b, width)."""
        x = torch.cat([history, target.unsqueeze(1)], dim=1)  # (b, L + 1, k*d), target last
        b, n, _ = x.shape
        if self.position is not None:
            x = torch.cat([x, self.position[-n:].expand(b, -1, -1)], dim=-1)
        token_mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        attn_mask = attention_mask(token_mask, "causal" if self.config.use_causal_mask else "full")
        target_only = self.config.seq_pooling_type == "target"
        for i, block in enumerate(self.blocks):
            if target_only and i == len(self.blocks) - 1:
                last_mask = attn_mask if attn_mask.shape[-2] == 1 else attn_mask[..., n - 1:, :]
                return block(x, last_mask, query=slice(n - 1, n))[:, 0]
            x = block(x, attn_mask)
        if self.config.seq_pooling_type == "mean":
            return masked_mean(x, token_mask)
        return (x * token_mask.unsqueeze(-1)).sum(1)

    def forward(self, batch):
        emb = self.embedding(batch, fields=[f for pair in self.pairs for f in pair])
        target, history, events = target_and_history(emb, batch, self.pairs)
        pooled = in_length_groups(self.encode, history, events, self.config.length_chunks, target)
        readout = torch.cat([pooled] + context_vectors(self, batch, self.pairs), dim=-1)
        return {"logits": self.head(readout, self.apg_condition(batch)).squeeze(-1)}
