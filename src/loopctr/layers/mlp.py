"""MLPs and activations, with FuxiCTR's MLP_Block semantics: Linear -> [BatchNorm] -> activation -> [Dropout]."""

from __future__ import annotations

import torch
from torch import nn

from loopctr.layers.apg import APGLinear, APGSpec


class Dice(nn.Module):
    """Data-adaptive activation (DIN): p * x + (1 - p) * alpha * x with p = sigmoid(BN(x)), BN without affine."""

    def __init__(self, dim: int, eps: float = 1e-9):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, momentum=0.01, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return p * x + (1 - p) * self.alpha * x


ACTIVATIONS = ("relu", "dice", "silu", "gelu", "prelu", "tanh", "sigmoid")


def activation(name: str, dim: int) -> nn.Module:
    name = name.lower()
    if name == "dice":
        return Dice(dim)
    if name == "prelu":
        return nn.PReLU()
    table = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if name not in table:
        raise ValueError(f"unknown activation '{name}'; expected one of {ACTIVATIONS}")
    return table[name]()


class MLP(nn.Module):
    """Hidden layers, then an optional output Linear (`output_dim`); the input is (N, input_dim). With `apg`, the
    hidden layers generate their weights for each sample (layers/apg.py); `forward` then takes the field
    condition its mode needs."""

    def __init__(self, input_dim: int, hidden_units: list[int], activation_name: str = "relu", dropout: float = 0.0,
                 batch_norm: bool = False, output_dim: int | None = None, apg: APGSpec | None = None):
        super().__init__()
        self.apg = apg
        layers: list[nn.Module] = []
        dim = input_dim
        for units in hidden_units:
            layers.append(nn.Linear(dim, units) if apg is None else
                          APGLinear(dim, units, apg.condition_dim(dim), apg.rank, apg.overparam, apg.hypernet_units,
                                    apg.generate_bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(activation(activation_name, units))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = units
        if output_dim is not None:
            layers.append(nn.Linear(dim, output_dim))
            dim = output_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor, fields: torch.Tensor | None = None) -> torch.Tensor:
        if self.apg is None:
            return self.net(x)
        for layer in self.net:
            x = layer(x, self.apg.condition(x, fields)) if isinstance(layer, APGLinear) else layer(x)
        return x
