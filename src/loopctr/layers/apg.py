"""APG (Yan et al., "APG: Adaptive Parameter Generation Network for Click-Through Rate Prediction", NeurIPS'22):
an MLP layer whose weights are generated for each sample from a condition.

Sourced [S: the paper; FuxiCTR's APG_DCNv2 settings `rank_k`, `overparam_p`, `condition_mode`,
`generate_bias`]: the weight of sample i is W_i = U S_i V with U (in x k) and V (k x out) shared by every sample
and only the small S_i (k x k) generated from the condition z_i by a hypernetwork; the layer is computed as
((x U) S_i) V, never materialising W_i (the paper's "decomposition feeding", cheaper than a dense layer when k is
small); over-parameterisation trains U and V as products (in x p)(p x k) and (k x p)(p x out), p > k, which
changes nothing at inference (each product is one matrix); the condition is the layer's own input ("self-wise"), the
embeddings of chosen fields ("group-wise") or both ("mix-wise"); the output bias is generated with S
(`generate_bias`) or shared. Inferred [I]: the default hypernetwork has one hidden ReLU layer (`hypernet_units`;
0: a single Linear, FuxiCTR's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("self", "fields", "mix")


@dataclass(frozen=True)
class APGSpec:
    """How the APG layers of an MLP are built: `mode` (MODES), the size of the field condition (0 for "self"),
    the rank k, the over-parameterisation size p (0: none), the hypernetwork's hidden size, bias generation."""
    mode: str
    field_dim: int
    rank: int
    overparam: int
    hypernet_units: int
    generate_bias: bool

    def condition_dim(self, layer_input_dim: int) -> int:
        return (layer_input_dim if self.mode != "fields" else 0) + (self.field_dim if self.mode != "self" else 0)

    def condition(self, layer_input: torch.Tensor, fields: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "self":
            return layer_input
        if fields is None:
            raise ValueError(f"APG mode '{self.mode}' needs the field condition; the model passed none")
        return fields if self.mode == "fields" else torch.cat([layer_input, fields], dim=-1)


class APGLinear(nn.Module):
    """(N, in_dim) inputs and (N, condition_dim) conditions -> (N, out_dim) = x U S(z) V + bias."""

    def __init__(self, in_dim: int, out_dim: int, condition_dim: int, rank: int, overparam: int = 0,
                 hypernet_units: int = 64, generate_bias: bool = True):
        super().__init__()
        self.rank, self.generate_bias = rank, generate_bias
        self.u = factors(in_dim, rank, overparam)
        self.v = factors(rank, out_dim, overparam)
        self.bias = None if generate_bias else nn.Parameter(torch.zeros(out_dim))
        generated = rank * rank + (out_dim if generate_bias else 0)
        self.hypernet = (nn.Sequential(nn.Linear(condition_dim, hypernet_units), nn.ReLU(),
                                       nn.Linear(hypernet_units, generated)) if hypernet_units
                         else nn.Linear(condition_dim, generated))

    def generated(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each sample's S (N, rank, rank) and generated bias (N, out_dim) or None."""
        out = self.hypernet(condition)
        s = out[:, :self.rank * self.rank].view(-1, self.rank, self.rank)
        return s, (out[:, self.rank * self.rank:] if self.generate_bias else None)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        s, bias = self.generated(condition)
        h = torch.bmm(F.linear(x, product(self.u)).unsqueeze(1), s).squeeze(1)
        return F.linear(h, product(self.v)) + (bias if bias is not None else self.bias)


def factors(in_dim: int, out_dim: int, overparam: int) -> nn.ModuleList:
    """A shared (out_dim, in_dim) matrix as one bias-free Linear, or as two through `overparam` units."""
    if not overparam:
        return nn.ModuleList([nn.Linear(in_dim, out_dim, bias=False)])
    return nn.ModuleList([nn.Linear(in_dim, overparam, bias=False), nn.Linear(overparam, out_dim, bias=False)])


def product(linears: nn.ModuleList) -> torch.Tensor:
    """The one matrix the Linears apply in sequence."""
    weight = linears[0].weight
    for linear in linears[1:]:
        weight = linear.weight @ weight
    return weight
