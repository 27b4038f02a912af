"""DIN target attention, as a plain reference and as the fast variant the models use.

Both compute, for a target t and history events e_j, scores w_j = MLP([t, e_j, t - e_j, t * e_j]), then
sum_j w_j e_j over the valid events (masked softmax optional). The fast variant gives the same result:
- the first Linear of the MLP is split by input block, W [t; e; t-e; t*e] = (W1+W3) t + (W2-W3) e + W4 (t*e),
  so the target part is computed once per sample instead of once per event;
- the MLP runs only on the valid (non-padding) events, packed together. Histories in public CTR data are
  mostly far shorter than max_len, so this is where the time goes.
BatchNorm inside Dice therefore sees valid events only (the reference sees padding rows too, as FuxiCTR).
"""

from __future__ import annotations

import torch
from torch import nn

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

    def _pool(self, scores: torch.Tensor, mask: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.use_softmax:
            scores = scores.masked_fill(~mask, -1e9).softmax(dim=-1) * mask
        else:
            scores = scores * mask
        return torch.bmm(scores.unsqueeze(1), history).squeeze(1)

    def forward_reference(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """target (B, d), history (B, L, d), mask (B, L) bool -> (B, d). Plain, padded, as in FuxiCTR."""
        b, length, d = history.shape
        t = target.unsqueeze(1).expand(-1, length, -1)
        x = torch.cat([t, history, t - history, t * history], dim=-1).reshape(-1, 4 * d)
        scores = self.mlp(x).view(b, length)
        return self._pool(scores, mask, history)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = history.shape
        first, rest = self.mlp.net[0], self.mlp.net[1:]
        w = first.weight  # (H, 4d) acting on [t, e, t - e, t * e]
        w_target = w[:, :d] + w[:, 2 * d:3 * d]
        w_event = torch.cat([w[:, d:2 * d] - w[:, 2 * d:3 * d], w[:, 3 * d:]], dim=1)
        rows, cols = mask.nonzero(as_tuple=True)
        events = history[rows, cols]  # (N_valid, d)
        t = target[rows]
        hidden = torch.addmm(first.bias, target, w_target.t())[rows] + torch.cat([events, t * events], 1) @ w_event.t()
        valid_scores = rest(hidden).squeeze(-1)
        scores = valid_scores.new_zeros(b, length).index_put((rows, cols), valid_scores)
        return self._pool(scores, mask, history)
