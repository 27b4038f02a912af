"""SUAN, stacked Unified Attention Blocks (Lai et al., RecSys'25, arXiv 2508.15326; code laiweijiang/SUAN, TF1).

Tokens: each behaviour event is the concatenation of its paired sequence fields' embeddings (width
W = pairs * d, no projection); the candidate is a Linear projection of the target fields to W, appended last;
a learned absolute position embedding (positions counted back from the candidate) is added. Each UAB, as in
the released `SUAN_Block` [S: handle_rec_unit.py]:

    x = RMSNorm1(x)
    x = RMSNorm2(x + Dropout(SelfAttn(x)))     bias-free q/k/v/o, softmax(QK^T/sqrt(d_h) + rab), causal + padding
    c = CrossAttn(query=x, key/value=profile)  bias-free softmax attention to the profile embeddings
    x = RMSNorm3(x + Dropout(Gate(x, c)))      s = mean_t(x + c) -> Dense(W/4, relu) -> two Dense(W)
                                               -> softmax over the two branches -> w1 * x + w2 * c
    x = x + Dropout(SwiGLU(x))                 hidden 3W

rab is HSTU's learned relative-position bias (layers/hstu.py). Blocks stack (the "grade" grows with depth,
width and sequence length). Head: the candidate's final output with the flattened profile embeddings ->
DNN [1024, 512, 256] with Dice -> logit. Defaults follow the released configs (2 blocks, 2 heads, dropout 0).
Inferred [I]: "profile" is every field outside the paired sequences (a schema does not say which fields
describe the user; this includes the target fields), the time-difference bias and time embedding are left
out (no timestamps here), the gate's mean runs over real tokens only and the position table is initialised
N(0, 0.02). Needs a sequence field paired with a target field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.embedding import masked_mean
from loopctr.layers.hstu import RelativePositionBias
from loopctr.layers.transformer import MultiHeadAttention, RMSNorm, SwiGLU, attention_mask
from loopctr.models.base import CTRModel, SequenceEncoderConfig
from loopctr.models.registry import register
from loopctr.models.target_sequence import (context_vectors, in_length_groups, max_events, require_pairs,
                                            target_and_history)


@dataclass
class SUANConfig(SequenceEncoderConfig):
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.0
    ffn_multiplier: int = 3
    dnn_activation: str = "dice"
    dnn_dropout: float = 0.0
    batch_norm: bool = False

    def validate(self):
        super().validate()
        if min(self.num_layers, self.num_heads, self.ffn_multiplier) < 1:
            raise UserError("model.num_layers, num_heads and ffn_multiplier must be >= 1")


class CrossAttention(nn.Module):
    """Bias-free multi-head softmax attention from the tokens (B, N, W) to the profile (B, P, d_p)."""

    def __init__(self, dim: int, profile_dim: int, num_heads: int):
        super().__init__()
        self.h = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(profile_dim, 2 * dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        heads = lambda t: t.view(b, t.shape[1], self.h, w // self.h).transpose(1, 2)  # noqa: E731
        k, v = self.kv(profile).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(k), heads(v))
        return self.o(y.transpose(1, 2).reshape(b, n, w))


class UnifiedAttentionBlock(nn.Module):
    """One UAB; `self_attention(x, pattern)` is SUAN's dense attention (pattern: a float bias mask) or
    LightSUAN's sparse one (pattern: a SparsePattern)."""

    def __init__(self, dim: int, profile_dim: int, c: SUANConfig, self_attention: nn.Module):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)
        self.self_attention = self_attention
        self.cross_attention = CrossAttention(dim, profile_dim, c.num_heads)
        self.squeeze = nn.Sequential(nn.Linear(dim, max(dim // 4, 1)), nn.ReLU())
        self.excite = nn.Linear(max(dim // 4, 1), 2 * dim)
        self.ffn = SwiGLU(dim, c.ffn_multiplier * dim)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x, pattern, token_mask, profile):
        x = self.norm1(x)
        x = self.norm2(x + self.dropout(self.self_attention(x, pattern)))
        c = self.cross_attention(x, profile)
        s = self.excite(self.squeeze(masked_mean(x + c, token_mask)))  # (B, 2W)
        w = s.view(s.shape[0], 2, -1).softmax(dim=1).unsqueeze(2)  # (B, 2, 1, W)
        x = self.norm3(x + self.dropout(w[:, 0] * x + w[:, 1] * c))
        return x + self.dropout(self.ffn(x))


@register("suan")
class SUAN(CTRModel):
    config_class = SUANConfig

    def __init__(self, schema, vocab_sizes, config: SUANConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        self.pairs = require_pairs(schema, "SUAN")
        self.dim = d * len(self.pairs)
        if self.dim % c.num_heads:
            raise UserError(f"SUAN: the token width {self.dim} is not divisible by model.num_heads={c.num_heads}")
        n_max = max_events(schema) + 1
        self.candidate = nn.Linear(self.dim, self.dim)
        self.position = nn.Parameter(torch.randn(n_max, self.dim) * 0.02)
        self.rab = RelativePositionBias(n_max)
        self.blocks = nn.ModuleList(UnifiedAttentionBlock(self.dim, d, c, self.new_self_attention())
                                    for _ in range(c.num_layers))
        n_profile = len(schema.fields) - len(self.pairs)
        self.head = self.mlp_head(self.dim + d * n_profile)

    def new_self_attention(self) -> nn.Module:
        return MultiHeadAttention(self.dim, self.config.num_heads)

    def attention_pattern(self, token_mask: torch.Tensor):
        """What every block's self-attention reads: causal + padding, with the relative-position bias."""
        allowed = attention_mask(token_mask, "causal")  # (b, 1, N, N)
        return self.rab(token_mask.shape[1]).masked_fill(~allowed, float("-inf"))

    def encode(self, history: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
               profile: torch.Tensor) -> torch.Tensor:
        """history (b, L, W) with its mask, target (b, W), profile (b, P, d) -> the candidate's output (b, W)."""
        x = torch.cat([history, self.candidate(target).unsqueeze(1)], dim=1)
        b, n, _ = x.shape
        x = x + self.position[-n:]
        token_mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        pattern = self.attention_pattern(token_mask)
        for block in self.blocks:
            x = block(x, pattern, token_mask, profile)
        return x[:, -1]

    def forward(self, batch):
        emb = self.embedding(batch, fields=[f for pair in self.pairs for f in pair])
        target, history, events = target_and_history(emb, batch, self.pairs)
        profile = torch.stack(context_vectors(self, batch, self.pairs), dim=1)  # (B, P, d)
        out = in_length_groups(self.encode, history, events, self.config.length_chunks, target, profile)
        x = torch.cat([out, profile.flatten(1)], dim=-1)
        return {"logits": self.head(x, self.apg_condition(batch)).squeeze(-1)}
