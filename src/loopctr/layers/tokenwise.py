"""A Linear layer with its own weights for each token position (FAT's field-specific projections, OneTrans's
token-specific non-sequence weights), applied to all tokens in one einsum.

With `num_bases` > 0 the per-token weights are composed from shared bases, W_t = sum_b a_{t,b} B_b (FAT v2's
basis-composed hypernetwork), so the parameter count no longer grows with in*out per token.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TokenwiseLinear(nn.Module):
    def __init__(self, num_tokens: int, in_dim: int, out_dim: int, bias: bool = True, num_bases: int = 0):
        super().__init__()
        self.num_tokens, self.in_dim, self.out_dim = num_tokens, in_dim, out_dim
        std = math.sqrt(2.0 / (in_dim + out_dim))  # Xavier-normal, per token
        if num_bases > 0:
            self.bases = nn.Parameter(torch.randn(num_bases, in_dim, out_dim) * std)
            self.coeffs = nn.Parameter(torch.randn(num_tokens, num_bases) / math.sqrt(num_bases))
            self.weight = None
        else:
            self.weight = nn.Parameter(torch.randn(num_tokens, in_dim, out_dim) * std)
        self.bias = nn.Parameter(torch.zeros(num_tokens, out_dim)) if bias else None

    def token_weights(self) -> torch.Tensor:
        """(num_tokens, in_dim, out_dim)."""
        if self.weight is not None:
            return self.weight
        return torch.einsum("tb,bio->tio", self.coeffs, self.bases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., num_tokens, in_dim) -> (..., num_tokens, out_dim)."""
        out = torch.einsum("...ti,tio->...to", x, self.token_weights())
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, in_dim={self.in_dim}, out_dim={self.out_dim}"
