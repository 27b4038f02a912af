"""Token-level mixture-of-experts FFN (SwiGLU experts), with a plain reference implementation for tests.

- router: a bias-free Linear over the token (optionally plus a learned map of a sinusoidal encoding of the loop
  index, so that experts can specialise by loop depth; the encoding is not a table, so the parameter count does
  not depend on how many loops a model runs and any depth can be encoded);
- top-k routing on the softmax probabilities; with k > 1 the k gates are renormalised to sum to 1 (Mixtral),
  with k = 1 the gate is the raw probability (Switch), so that the router also learns from the task loss;
- an optional always-on shared expert (DeepSeekMoE) added to the routed output;
- load balancing (Switch Transformer): aux = E * sum_e f_e * P_e, with f_e the fraction of the T*k routing
  assignments that went to expert e and P_e the mean router probability of e; 1.0 when perfectly balanced.
  It is returned unweighted: the model multiplies it by its weight;
- `n_experts == 1`: a dense SwiGLU FFN (no router, aux loss 0, the shared expert is not added).

The fast path sorts the T*k assignments by expert and runs each expert once on its tokens (a loop over
experts, none over tokens); `forward_dense` runs every expert on every token and mixes with a dense gate
matrix: what a traced export runs (its shapes do not depend on the routing), and the reference the tests hold
the fast path to. Both give the same output and aux loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.layers.transformer import SwiGLU


def loop_encoding(loop_index: int, n_features: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Sinusoidal features of a loop index: [sin(t w_j), cos(t w_j)] with w_j = 2^-j, j < n_features / 2."""
    half = n_features // 2
    w = torch.pow(2.0, -torch.arange(half, device=device, dtype=torch.float32))
    angles = float(loop_index) * w
    return torch.cat([angles.sin(), angles.cos()]).to(dtype)


class MoEFFN(nn.Module):
    def __init__(self, dim: int, hidden: int, n_experts: int = 4, top_k: int = 1, shared_expert: bool = False,
                 loop_router: bool = False, loop_features: int = 8):
        super().__init__()
        if n_experts < 1 or not 1 <= top_k <= n_experts:
            raise ValueError(f"MoE needs n_experts >= 1 and 1 <= top_k <= n_experts (got {n_experts}, {top_k})")
        self.dim, self.hidden, self.n_experts, self.top_k = dim, hidden, n_experts, top_k
        self.loop_features = loop_features
        if n_experts == 1:
            self.dense = SwiGLU(dim, hidden)
            return
        self.dense = None
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.loop_router = nn.Linear(loop_features, n_experts, bias=False) if loop_router else None
        self.w_in = nn.Parameter(torch.empty(n_experts, dim, 2 * hidden))
        self.w_out = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.shared = SwiGLU(dim, hidden) if shared_expert else None
        self.reset_own_parameters()

    def reset_own_parameters(self):
        """Xavier-normal per expert (the stacked expert weights are not Linears; the router and shared expert are)."""
        if self.dense is not None:
            return
        for w in (self.w_in, self.w_out):
            fan_in, fan_out = w.shape[1], w.shape[2]
            nn.init.normal_(w, std=math.sqrt(2.0 / (fan_in + fan_out)))

    # -- routing -----------------------------------------------------------------------------------------
    def router_logits(self, x: torch.Tensor, loop_index: int | None = None) -> torch.Tensor:
        logits = self.router(x)
        if self.loop_router is not None:
            if loop_index is None:
                raise ValueError("this MoE routes on the loop index: pass loop_index")
            logits = logits + self.loop_router(loop_encoding(loop_index, self.loop_features, x.device, x.dtype))
        return logits

    def route(self, x: torch.Tensor, loop_index: int | None = None):
        """(T, d) -> probabilities (T, E), chosen experts (T, k), gates (T, k), aux loss (scalar; None in eval
        mode, where nothing optimises it)."""
        probs = self.router_logits(x, loop_index).float().softmax(-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        gates = top_p / top_p.sum(-1, keepdim=True) if self.top_k > 1 else top_p
        if not self.training:
            return probs, top_i, gates.to(x.dtype), None
        counts = torch.bincount(top_i.reshape(-1), minlength=self.n_experts).to(probs.dtype)
        fraction = counts / max(top_i.numel(), 1)
        aux = self.n_experts * (fraction * probs.mean(0)).sum() if x.shape[0] else probs.sum() * 0.0
        return probs, top_i, gates.to(x.dtype), aux

    def _expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = (x @ self.w_in[e]).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.w_out[e]

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, loop_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (..., d) -> (y (..., d), aux loss or None). Vectorised dispatch: one pass per expert over its tokens."""
        if self.dense is not None:
            return self.dense(x), x.new_zeros(())
        if torch.jit.is_tracing():  # per-expert token counts are data: a trace would freeze them
            return self.forward_dense(x, loop_index)
        shape = x.shape
        x = x.reshape(-1, self.dim)
        _, top_i, gates, aux = self.route(x, loop_index)
        flat_expert = top_i.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token = order // self.top_k
        gate = gates.reshape(-1)[order]
        counts = torch.bincount(flat_expert, minlength=self.n_experts).tolist()
        inputs = x.index_select(0, token).split(counts)
        outputs = [self._expert(e, chunk) for e, chunk in enumerate(inputs) if chunk.shape[0]]
        y = x.new_zeros(x.shape)
        if outputs:
            routed = torch.cat(outputs) * gate.unsqueeze(-1)
            y = y.index_add(0, token, routed)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape), aux

    def forward_dense(self, x: torch.Tensor, loop_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert on every token, mixed by a dense (T, E) gate matrix (zeros for unchosen experts)."""
        if self.dense is not None:
            return self.dense(x), x.new_zeros(())
        shape = x.shape
        x = x.reshape(-1, self.dim)
        _, top_i, gates, aux = self.route(x, loop_index)
        dense_gates = x.new_zeros(x.shape[0], self.n_experts).scatter_add(1, top_i, gates)
        every = torch.stack([self._expert(e, x) for e in range(self.n_experts)], dim=1)  # (T, E, d)
        y = (dense_gates.unsqueeze(-1) * every).sum(1)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape), aux
