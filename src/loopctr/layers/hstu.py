"""HSTU's pointwise attention layer (Zhai et al., ICML'24, "Actions Speak Louder than Words"), with the pieces
HSTU, MTGR and SUAN share: a learned relative-position attention bias and a group LayerNorm.

One layer on tokens X (B, N, d) [S: facebookresearch/generative-recommenders, modeling/sequential/hstu.py]:
    U, Q, V, K = split(SiLU(Linear(LN(X))))
    A = SiLU(Q K^T + rab) / N_max * mask         (per head; pointwise, no softmax)
    Y = X + W_o(Dropout(U * LN(A V)))
rab[i, j] = w[j - i + N_max - 1], a (2 N_max - 1) table, N(0, 0.02) (RelativePositionalBias; our datasets carry
no timestamps, so the time-bucket term is left out). The divisor N_max is the model's maximum token count, a
constant, so that a batch's scores do not depend on how far it happens to be padded.
Choices here [I]: the projection is an nn.Linear with bias (the newer ranking STU; the older code has a
bias-free N(0, 0.02) matrix), and the LayerNorms are affine-free unless `affine` (MTGR's group LayerNorm:
one gain and bias per token group).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelativePositionBias(nn.Module):
    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(2 * max_positions - 1))
        self.reset_own_parameters()

    def reset_own_parameters(self):
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, n: int, query: slice | None = None) -> torch.Tensor:
        """(N_q, n) bias for token positions 0..n-1 (queries restricted to `query`)."""
        pos = torch.arange(n, device=self.weight.device)
        q = pos[query] if query is not None else pos
        rel = (pos[None, :] - q[:, None]).clamp(-(self.max_positions - 1), self.max_positions - 1)
        return self.weight[rel + self.max_positions - 1]

    def by_offset(self, offsets: torch.Tensor) -> torch.Tensor:
        """The bias of a key `offsets` positions before its query (j - i = -offset)."""
        return self.weight[self.max_positions - 1 - offsets.clamp_max(self.max_positions - 1)]


class GroupLayerNorm(nn.Module):
    """LayerNorm over the last dim whose gain and bias depend on each token's group (MTGR's GLN).

    groups=1 is a plain LayerNorm; affine=False has no parameters at all.
    """

    def __init__(self, dim: int, groups: int = 1, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(groups, dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(groups, dim)) if affine else None

    def reset_own_parameters(self):
        if self.weight is not None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, d); groups (N,) long token groups (None: group 0 everywhere)."""
        y = F.layer_norm(x, (self.dim,), eps=self.eps)
        if self.weight is None:
            return y
        if groups is None:
            return y * self.weight[0] + self.bias[0]
        return y * self.weight[groups] + self.bias[groups]


class HSTULayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_dim: int, v_dim: int, max_positions: int, dropout: float = 0.0,
                 groups: int = 1, affine: bool = False, eps: float = 1e-6):
        super().__init__()
        self.h, self.dqk, self.dv = num_heads, qk_dim, v_dim
        self.max_positions = max_positions
        self.norm_in = GroupLayerNorm(dim, groups, affine, eps)
        self.norm_attn = GroupLayerNorm(num_heads * v_dim, groups, affine, eps)
        # rows ordered [U, Q | V, K]: the query side and the key side are contiguous, so a layer restricted to
        # some query positions projects only those for U and Q
        self.uqvk = nn.Linear(dim, 2 * num_heads * (qk_dim + v_dim))
        self.rab = RelativePositionBias(max_positions)
        self.out = nn.Linear(num_heads * v_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def attention_scores(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                         query: slice | None) -> torch.Tensor:
        """(B, H, N_q, N) pointwise attention weights: SiLU(QK^T + rab) / N_max, zero where `mask` is False."""
        scores = q @ k.transpose(-1, -2) + self.rab(k.shape[2], query)
        weights = F.silu(scores) / self.max_positions
        return weights if mask is None else weights * mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                query: slice | None = None) -> torch.Tensor:
        """x (B, N, d); mask bool broadcastable to (B, H, N_q, N); groups (N,) token groups; query: positions
        to compute (default all). Returns (B, N_q, d)."""
        b, n, _ = x.shape
        normed = self.norm_in(x, groups)
        side = self.h * (self.dqk + self.dv)
        w, bias = self.uqvk.weight, self.uqvk.bias
        xq = normed if query is None else normed[:, query]
        u, q = F.silu(F.linear(xq, w[:side], bias[:side])).split([self.h * self.dv, self.h * self.dqk], dim=-1)
        v, k = F.silu(F.linear(normed, w[side:], bias[side:])).split([self.h * self.dv, self.h * self.dqk], dim=-1)
        nq = xq.shape[1]
        heads = lambda t, m, d: t.view(b, m, self.h, d).transpose(1, 2)  # noqa: E731
        weights = self.attention_scores(heads(q, nq, self.dqk), heads(k, n, self.dqk), mask, query)
        attended = (weights @ heads(v, n, self.dv)).transpose(1, 2).reshape(b, nq, self.h * self.dv)
        q_groups = groups if (groups is None or query is None) else groups[query]
        y = self.out(self.dropout(u * self.norm_attn(attended, q_groups)))
        return (x if query is None else x[:, query]) + y
