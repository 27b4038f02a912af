"""LightSUAN's sparse self-attention: each token attends to a local window of the tokens just before it and to
every `dilation`-th token further back (causal), instead of to all earlier tokens.

Computed sparse: the keys of every query are gathered at the K fixed offsets (K = window + about N / dilation),
so the score and value work is O(N K) rather than O(N^2). The dense reference with the equivalent mask is
`layers.reference.local_dilated_attention_reference`; with window >= N the pattern is full causal attention and
the layer equals SUAN's (same weights, same outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from loopctr.layers.hstu import RelativePositionBias
from loopctr.layers.transformer import MultiHeadAttention


def local_dilated_offsets(n: int, window: int, dilation: int, device=None) -> torch.Tensor:
    """How far back a token looks, for tokens 0..n-1: 0 (itself) .. window-1, then every multiple of
    `dilation` (0: none) below n. Tensor ops only, so that a traced export follows the token count."""
    back = torch.arange(n, device=device)
    keep = back < window
    if dilation > 0:
        keep = keep | (back % dilation == 0)
    return back[keep]


class SparsePattern(NamedTuple):
    """Which keys each query of a (B, N) batch sees: the key of query i at slot s is token index[i, s]."""
    index: torch.Tensor  # (N, K) long, i - offset (clamped to 0 where it falls before the sequence)
    valid: torch.Tensor  # (B, N, K) bool: the key exists and is a real token (a token always sees itself)
    bias: torch.Tensor  # (K,) relative-position bias of each offset


def sparse_pattern(token_mask: torch.Tensor, window: int, dilation: int,
                   rab: RelativePositionBias | None = None) -> SparsePattern:
    """The pattern for tokens with `token_mask` (B, N) (True at real tokens, padding first)."""
    n, device = token_mask.shape[1], token_mask.device
    offsets = local_dilated_offsets(n, window, dilation, device)
    back = torch.arange(n, device=device).unsqueeze(1) - offsets  # (N, K)
    index = back.clamp_min(0)
    valid = (back >= 0) & token_mask[:, index]
    valid[..., 0] = True  # offset 0: no row is empty (an empty row would give NaN through the padding)
    bias = rab.by_offset(offsets) if rab is not None else offsets.new_zeros(offsets.shape, dtype=torch.float)
    return SparsePattern(index, valid, bias)


class LocalDilatedAttention(MultiHeadAttention):
    """Multi-head softmax self-attention over a `SparsePattern` (the projections of MultiHeadAttention, so
    weights move freely between the two)."""

    def forward(self, x: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, N, d_h)
        k, v = k[:, :, pattern.index], v[:, :, pattern.index]  # (B, H, N, K, d_h)
        scores = torch.einsum("bhnd,bhnkd->bhnk", q, k) / self.head_dim ** 0.5 + pattern.bias
        weights = scores.masked_fill(~pattern.valid.unsqueeze(1), float("-inf")).softmax(dim=-1)
        if self.training and self.dropout:
            weights = torch.nn.functional.dropout(weights, self.dropout)
        y = torch.einsum("bhnk,bhnkd->bhnd", weights, v)
        return self.out(y.transpose(1, 2).reshape(b, n, self.dim))
