"""Transformer building blocks: RMSNorm, SwiGLU, multi-head attention with CTR masks, a pre-norm layer.

Shared by every Transformer model of the project (LoopCTR, BST, OneTrans, ...). Conventions:
- tokens are (B, N, d); a *token mask* / *key mask* is a bool (B, N) tensor, True at real tokens;
- an *attention mask* is a bool tensor broadcastable to (B, heads, N_q, N_k), True where a query may attend
  a key (the convention of `F.scaled_dot_product_attention`); `attention_mask()` builds the usual ones;
- `query=` restricts a layer to a slice of query positions (keys and values still cover all tokens). A model
  that reads out only its last tokens runs its last layer with `query=slice(N - n, N)`: exact, and cheap;
- reference implementations of the fast ops live in `layers/reference.py`;
- the layers here initialise their own `nn.Parameter`s (RMSNorm gains, ...) in `reset_own_parameters()`,
  while their `nn.Linear`s are left to the model (`CTRModel.reset_parameters`: Xavier-normal). A model that
  re-initialises its Linears afterwards calls `reset_own_parameters(model)` to restore the others.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MaskKind = Literal["full", "target_aware", "causal"]


def reset_own_parameters(module: nn.Module) -> None:
    """Call `reset_own_parameters()` on every submodule defining it (after a model-wide Linear init)."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_own_parameters") and callable(m.reset_own_parameters):
            m.reset_own_parameters()


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMS norm over the last dimension; spelled out in elementary ops while exporting to ONNX, whose
    TorchScript-based exporter has no `aten::rms_norm` (the same computation as `F.rms_norm`)."""
    if torch.onnx.is_in_onnx_export():
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y if weight is None else y * weight
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension with a learned gain (Zhang & Sennrich, 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_own_parameters(self):
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class SwiGLU(nn.Module):
    """FFN(x) = W_out (SiLU(W_gate x) * (W_up x)) (Shazeer, 2020); gate and up projections fused in one Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.hidden = hidden
        self.w_in = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w_out = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_in(x).chunk(2, dim=-1)
        return self.dropout(self.w_out(F.silu(gate) * up))


def attention_mask(key_mask: torch.Tensor | None, kind: MaskKind = "full", blocked_keys: torch.Tensor | None = None,
                   blocked_queries: torch.Tensor | None = None, query: slice | None = None,
                   n_tokens: int | None = None) -> torch.Tensor | None:
    """A bool attention mask (True = may attend), broadcastable to (B, heads, N_q, N_k).

    key_mask: (B, N) True at real tokens; padding keys are never attended. None: no padding.
    kind: "full" (every token sees every real token); "target_aware" (queries flagged in `blocked_queries`,
        e.g. behaviour-history tokens, do not see keys flagged in `blocked_keys`, e.g. the target token, so the
        history representation does not depend on the candidate); "causal" (token i sees tokens j <= i).
    blocked_keys / blocked_queries: (N,) bool, for "target_aware".
    query: the slice of query positions the layer computes (default all).
    With "target_aware" and "causal" a token always sees itself, so that no row is empty (an empty row would
    give NaN, which then leaks through the values of padding tokens). "full" gives a (B, 1, 1, N) mask, or None
    when there is no padding: SDPA's fastest path.
    """
    if key_mask is not None:
        n = key_mask.shape[1]
        device = key_mask.device
    elif n_tokens is not None:
        n, device = n_tokens, (blocked_keys.device if blocked_keys is not None else None)
    else:
        raise ValueError("attention_mask needs key_mask or n_tokens")
    if kind == "full":
        return None if key_mask is None else key_mask[:, None, None, :]
    positions = torch.arange(n, device=device)
    q_pos = positions[query] if query is not None else positions
    if kind == "causal":
        allowed = q_pos[:, None] >= positions[None, :]
    elif kind == "target_aware":
        if blocked_keys is None or blocked_queries is None:
            raise ValueError("target_aware masks need blocked_keys and blocked_queries")
        allowed = ~(blocked_queries[q_pos][:, None] & blocked_keys[None, :])
    else:
        raise ValueError(f"unknown attention mask kind '{kind}'")
    if key_mask is not None:
        allowed = allowed[None] & key_mask[:, None, :]  # (B, Nq, N)
    allowed = allowed | (q_pos[:, None] == positions[None, :])
    return allowed.unsqueeze(-3)  # (B or 1, 1, Nq, N)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention` (flash/memory-efficient kernels).

    forward(x, mask=None, query=None): x (B, N, d); mask as from `attention_mask`; query: a slice of positions
    for the queries (output (B, N_q, d)); keys and values always cover all N tokens.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention dim {dim} is not divisible by n_heads {n_heads}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, query: slice | None = None) -> torch.Tensor:
        b = x.shape[0]
        if query is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            w = self.qkv.weight
            bias = self.qkv.bias
            q = F.linear(x[:, query], w[:self.dim], None if bias is None else bias[:self.dim])
            k, v = F.linear(x, w[self.dim:], None if bias is None else bias[self.dim:]).chunk(2, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, -1, self.dim))

    def forward_packed(self, x: torch.Tensor, index: torch.Tensor | None, shape: tuple[int, int],
                       mask: torch.Tensor | None = None, query: slice | None = None,
                       query_index: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over a *packed* batch: x (T, d) holds only the real tokens of a (B, N) batch, in row-major
        order, at flat positions `index` (T,) (None: no padding, T = B * N).

        The projections run on the T real tokens only; the tokens are scattered into the padded (B, N) layout for
        SDPA (zeros at padding, which `mask` must exclude as keys). Returns (T, d); with `query` (a slice of the
        N positions) the output is (B * N_q, d) for those positions, whose packed rows are `query_index`.
        """
        b, n = shape
        d = self.dim
        w, bias = self.qkv.weight, self.qkv.bias
        if query is None:
            proj = self.qkv(x)
        else:
            proj = F.linear(x, w[d:], None if bias is None else bias[d:])  # keys and values only
        if index is not None:
            proj = proj.new_zeros(b * n, proj.shape[-1]).index_copy(0, index, proj)
        parts = proj.view(b, n, -1).chunk(3 if query is None else 2, dim=-1)
        k, v = self._heads(parts[-2]), self._heads(parts[-1])
        if query is None:
            q = self._heads(parts[0])
        else:
            q_rows = F.linear(x.index_select(0, query_index), w[:d], None if bias is None else bias[:d])
            q = self._heads(q_rows.view(b, -1, d))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(-1, d)
        if query is None and index is not None:
            y = y.index_select(0, index)
        return self.out(y)


class TransformerLayer(nn.Module):
    """The parts of a pre-norm layer, x + Attn(RMSNorm(x)), then x + FFN(RMSNorm(x)) (SwiGLU FFN unless `ffn` is
    given), for models that lay out their tokens and residuals themselves (LoopCTR: packed tokens,
    hyper-connected residuals). An `ffn` module may return (output, aux_loss), as `MoEFFN` does."""

    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, dropout: float = 0.0, ffn: nn.Module | None = None,
                 attention_dropout: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.norm_attn = RMSNorm(dim, eps)
        self.attn = MultiHeadAttention(dim, n_heads, attention_dropout)
        self.norm_ffn = RMSNorm(dim, eps)
        self.ffn = ffn if ffn is not None else SwiGLU(dim, ffn_hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def ffn_branch(self, x: torch.Tensor, **ffn_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Dropout(FFN(RMSNorm(x))) and the FFN's aux loss (None for a plain FFN)."""
        out = self.ffn(self.norm_ffn(x), **ffn_kwargs)
        y, aux = out if isinstance(out, tuple) else (out, None)
        return self.dropout(y), aux
