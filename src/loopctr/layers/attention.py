"""DIN target attention over the events of a jagged history (padded reference: `layers/reference.py`).

For a target t and history events e_j: scores w_j = MLP([t, e_j, t - e_j, t * e_j]), then sum_j w_j e_j over
the row's events (softmax over them optional). Computed on the events themselves, (T, d), never on padding:
- the first Linear of the MLP is split by input block, W [t; e; t-e; t*e] = (W1+W3) t + (W2-W3) e + W4 (t*e),
  so the target part is computed once per row instead of once per event;
- the softmax and the weighted sum are segment operations over each row's events.
BatchNorm inside Dice therefore sees real events only (the reference sees padding rows too, as FuxiCTR).
"""

from __future__ import annotations

import torch
from torch import nn

from loopctr.data.batch import Jagged
from loopctr.layers.mlp import MLP


class DINAttention(nn.Module):
    def __init__(self, dim: int, hidden_units: list[int], activation_name: str = "dice", dropout: float = 0.0,
                 use_softmax: bool = True):
        super().__init__()
        if not hidden_units:
            raise ValueError("DIN attention needs at least one hidden layer")
        self.dim = dim
        self.use_softmax = use_softmax
        self.mlp = MLP(4 * dim, hidden_units, activation_name, dropout, batch_norm=False, output_dim=1)

    def forward(self, target: torch.Tensor, events: torch.Tensor, history: Jagged) -> torch.Tensor:
        """target (B, d), events (T, d) of the Jagged `history` -> (B, d) (zeros for a row without events)."""
        d = self.dim
        first, rest = self.mlp.net[0], self.mlp.net[1:]
        w = first.weight  # (H, 4d) acting on [t, e, t - e, t * e]
        w_target = w[:, :d] + w[:, 2 * d:3 * d]
        w_event = torch.cat([w[:, d:2 * d] - w[:, 2 * d:3 * d], w[:, 3 * d:]], dim=1)
        rows = history.row_index
        t = target.index_select(0, rows)
        hidden = (torch.addmm(first.bias, target, w_target.t()).index_select(0, rows)
                  + torch.cat([events, t * events], 1) @ w_event.t())
        scores = rest(hidden).squeeze(-1)  # (T,)
        if self.use_softmax:
            scores = history.segment_softmax(scores)
        return history.segment_sum(scores.unsqueeze(-1) * events)
