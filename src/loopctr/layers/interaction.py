"""Explicit feature-interaction layers: DCNv2's cross networks, DLRM's dot interaction, Wukong's FMB/LCB layer.

Each works on the whole batch at once (no loops over samples or experts):
- `CrossNetV2`: x_{l+1} = x0 * (W_l x_l + b_l) + x_l, full-rank W_l (Wang et al., WWW'21).
- `CrossNetMix`: the low-rank mixture of experts of the same paper: expert e computes
  x0 * (U_e tanh(C_e tanh(V_e^T x_l)) + b_l), mixed by softmax(G x_l) and added to x_l.
- `dot_interaction`: the upper triangle (without the diagonal) of the pairwise inner products of n vectors.
- `WukongLayer`: LN(concat(FMB(X), LCB(X)) + res(X)) on (B, n, d) token sets (Zhang et al., ICML'24).
"""

from __future__ import annotations

import torch
from torch import nn

from loopctr.layers.mlp import MLP


class CrossNetV2(nn.Module):
    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x + x0 * layer(x)
        return x


class CrossNetMix(nn.Module):
    """Low-rank mixture-of-experts cross network; all experts of a layer are computed in one einsum."""

    def __init__(self, dim: int, num_layers: int, low_rank: int = 32, num_experts: int = 4):
        super().__init__()
        self.u = nn.ParameterList(nn.Parameter(torch.empty(num_experts, dim, low_rank)) for _ in range(num_layers))
        self.v = nn.ParameterList(nn.Parameter(torch.empty(num_experts, dim, low_rank)) for _ in range(num_layers))
        self.c = nn.ParameterList(nn.Parameter(torch.empty(num_experts, low_rank, low_rank)) for _ in range(num_layers))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))
        self.gate = nn.Linear(dim, num_experts, bias=False)
        for group in (self.u, self.v, self.c):
            for p in group:
                for e in range(p.shape[0]):
                    nn.init.xavier_normal_(p.data[e])

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for u, v, c, b in zip(self.u, self.v, self.c, self.bias):
            low = torch.tanh(torch.einsum("bd,edr->ber", x, v))
            low = torch.tanh(torch.einsum("ers,bes->ber", c, low))
            experts = x0.unsqueeze(1) * (torch.einsum("edr,ber->bed", u, low) + b)  # (B, E, D)
            weights = self.gate(x).softmax(dim=-1)  # (B, E)
            x = x + torch.einsum("bed,be->bd", experts, weights)
        return x


def dot_interaction(vectors: torch.Tensor) -> torch.Tensor:
    """(B, n, d) -> (B, n(n-1)/2): <v_i, v_j> for i < j, in row-major order of the upper triangle."""
    n = vectors.shape[1]
    gram = torch.bmm(vectors, vectors.transpose(1, 2))
    rows, cols = torch.triu_indices(n, n, offset=1, device=vectors.device)
    return gram[:, rows, cols]


class WukongLayer(nn.Module):
    """One Wukong interaction layer: n_in tokens in, n_fmb + n_lcb tokens out, all of width d.

    FMB(X) = reshape(MLP(LN(flatten(X (X^T Y))))) with a learned Y (n_in, rank) (the paper's optimised FM);
    LCB(X) = W_L X mixing the token axis (no bias); the residual is the identity when the token count is
    unchanged, else a linear map over the token axis.
    """

    def __init__(self, num_in: int, dim: int, num_fmb: int, num_lcb: int, rank: int, hidden_units: list[int],
                 activation_name: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.num_fmb, self.dim = num_fmb, dim
        self.fm_proj = nn.Parameter(torch.empty(num_in, rank))
        nn.init.xavier_normal_(self.fm_proj)
        self.fm_norm = nn.LayerNorm(num_in * rank)
        self.fmb_mlp = MLP(num_in * rank, hidden_units, activation_name, dropout, output_dim=num_fmb * dim)
        self.lcb = nn.Linear(num_in, num_lcb, bias=False)
        self.residual = nn.Linear(num_in, num_fmb + num_lcb, bias=False) if num_in != num_fmb + num_lcb else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        fm = torch.bmm(x, torch.matmul(x.transpose(1, 2), self.fm_proj))  # (B, n_in, rank)
        fmb = self.fmb_mlp(self.fm_norm(fm.flatten(1))).view(b, self.num_fmb, self.dim)
        lcb = self.lcb(x.transpose(1, 2)).transpose(1, 2)  # (B, n_lcb, d)
        res = x if self.residual is None else self.residual(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(torch.cat([fmb, lcb], dim=1) + res)
