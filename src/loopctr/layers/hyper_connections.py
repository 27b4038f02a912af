"""Residual connections with n residual streams: hyper-connections (HC) and manifold-constrained HC (mHC).

A residual *site* wraps one branch F (an attention or FFN sublayer, or a whole block). With streams
x in R^{n x d} per token (n = `n_streams`):

    x_next = H_res x + H_post^T F(H_pre x)          H_pre, H_post in R^{1 x n}, H_res in R^{n x n}

Every coefficient is a static (learned) part plus a dynamic (input-dependent) part computed, as in mHC
(Xie et al., 2025, Eqs. 5-8), from the RMS-normalised flattened streams x_bar in R^{nd}:

    mode "hc"  (Zhu et al., ICLR'25, unconstrained):  H = b + alpha * tanh(x_bar phi)
    mode "mhc" (manifold-constrained):                 H_pre = sigmoid(b_pre + alpha_pre * x_bar phi_pre)
                                                       H_post = 2 sigmoid(b_post + alpha_post * x_bar phi_post)
                                                       H_res = SinkhornKnopp(exp(b_res + alpha_res * mat(x_bar phi_res)))
    mode "none": the plain residual x + F(x) on a single stream (`PlainResidual`).

Sinkhorn-Knopp starts from exp(logits - max) (no overflow for any logits) and runs `sinkhorn_iters` rounds of
row then column normalisation, with a hand-written backward (`sinkhorn_knopp`), so H_res is doubly stochastic:
columns exactly, rows to within the tolerance the rounds reach (tight for near-diagonal logits, looser when
the logits spread over many units). The mean of the streams is then preserved, and repeated application
(loops) can neither blow up nor vanish the streams. The alphas start at `alpha_init` (0.01), so the dynamic
part is nearly off at the start.

Initialisation ([I] where the papers are silent): site k reads stream k mod n (HC's A_m = e_{k mod n}; for
mHC the sigmoid logits are +2 there and -2 elsewhere), writes to every stream (H_post = 1: hc static 1, mhc
2*sigmoid(0)), and H_res starts at the identity (hc) or near it (mhc: logits 0 on the diagonal, -4 off it).
Streams start as n copies of the input (`expand_streams`) and are summed at the read-out (`collapse_streams`).
For "hc" the dynamic map phi starts at 0 (as in HC), for "mhc" at N(0, 0.02) (so alpha gets a gradient).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn


HCMode = Literal["none", "hc", "mhc"]
PRE_LOGIT = 2.0
RES_OFFDIAG_LOGIT = -4.0


def _axis_sum(m: torch.Tensor, axis: int) -> torch.Tensor:
    """Sum of a (n, n, T) tensor over axis 0 or 1, keeping it; by slice additions when that is faster on CPU
    (small n, many tokens), else by one reduction (few tokens, as when serving: fewer ops to dispatch)."""
    n = m.shape[axis]
    if n > 8 or m.shape[-1] < 2048:
        return m.sum(axis, keepdim=True)
    out = m.narrow(axis, 0, 1)
    for j in range(1, n):
        out = out + m.narrow(axis, j, 1)
    return out


def _sinkhorn_steps(log_m: torch.Tensor, iters: int, keep: bool):
    """log_m (n, n, T) -> the doubly stochastic matrices, and (if keep) every half-step's (matrix, divisor)."""
    m = (log_m - log_m.amax(dim=(0, 1), keepdim=True)).exp()
    steps = [m] if keep else None
    for _ in range(iters):
        for axis in (1, 0):  # rows (sum over columns) then columns
            s = _axis_sum(m, axis)
            m = m / s
            if keep:
                steps.append((m, s))
    return m, steps


class _SinkhornKnopp(torch.autograd.Function):
    """Sinkhorn-Knopp with a hand-written backward that recomputes the iterations (no graph of 4 * iters ops).

    Per half-step m' = m / sum_axis(m): dL/dm = (g - sum_axis(g * m')) / sum_axis(m); and m_0 = exp(l - max(l))
    gives dL/dl = g_0 * m_0 (the shift by the max does not change the normalised result).
    """

    @staticmethod
    def forward(ctx, log_m: torch.Tensor, iters: int):
        ctx.save_for_backward(log_m)
        ctx.iters = iters
        m, _ = _sinkhorn_steps(log_m, iters, keep=False)
        return m

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (log_m,) = ctx.saved_tensors
        _, steps = _sinkhorn_steps(log_m, ctx.iters, keep=True)
        g = grad
        axes = [1, 0] * ctx.iters
        for (m, s), axis in zip(reversed(steps[1:]), reversed(axes)):
            g = (g - _axis_sum(g * m, axis)) / s
        return g * steps[0], None


def sinkhorn_knopp(logits: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """exp(logits) (..., n, n) made doubly stochastic by `iters` rounds of row then column normalisation.

    Runs in float32 or float64 over a (n, n, tokens) layout (row and column sums are then contiguous vector
    additions), with a hand-written, recomputing backward. Columns sum to 1 exactly, rows to within the
    tolerance reached after `iters` rounds (about 1e-6 after 20 from near-diagonal logits).
    """
    lead, n = logits.shape[:-2], logits.shape[-1]
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    flat = logits.to(dtype).reshape(-1, n, n).permute(1, 2, 0).contiguous()
    if torch.is_grad_enabled() and flat.requires_grad:
        m = _SinkhornKnopp.apply(flat, iters)
    else:  # inference: the same iterations as plain ops (traceable for export, no saved state)
        m, _ = _sinkhorn_steps(flat, iters, keep=False)
    return m.permute(2, 0, 1).reshape(*lead, n, n).to(logits.dtype)


def expand_streams(x: torch.Tensor, mode: HCMode, n_streams: int) -> torch.Tensor:
    """(..., d) -> (..., n, d): n copies of the input (identity for mode "none")."""
    if mode == "none":
        return x
    return x.unsqueeze(-2).expand(*x.shape[:-1], n_streams, x.shape[-1]).contiguous()


def collapse_streams(x: torch.Tensor, mode: HCMode) -> torch.Tensor:
    """(..., n, d) -> (..., d): the streams summed (identity for mode "none")."""
    return x if mode == "none" else x.sum(-2)


def select_tokens(x: torch.Tensor, query: slice | torch.Tensor | None) -> torch.Tensor:
    """The query tokens of a state: a slice of dim 1 of a padded (B, N, ...) state, or an index tensor of
    dim 0 of a packed (T, ...) state; None: all of them."""
    if query is None:
        return x
    if isinstance(query, slice):
        return x[:, query]
    return x.index_select(0, query)


class PlainResidual(nn.Module):
    """x_next = x + F(x) on a single stream; the interface of `HyperConnection` (`read`, `write`)."""

    mode = "none"

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None

    def write(self, x: torch.Tensor, y: torch.Tensor, mix: None = None,
              query: slice | torch.Tensor | None = None) -> torch.Tensor:
        return select_tokens(x, query) + y

    def forward(self, x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                query: slice | torch.Tensor | None = None) -> torch.Tensor:
        return self.write(x, branch(x), None, query)


class HyperConnection(nn.Module):
    """One residual site over (..., n, d) stream states (see the module docstring). A caller reads the branch
    input and the site's coefficients (`read`), computes the branch, and writes its output back (`write`);
    `forward(x, branch)` is the two in one."""

    def __init__(self, dim: int, n_streams: int = 4, mode: HCMode = "mhc", index: int = 0, dynamic: bool = True,
                 alpha_init: float = 0.01, sinkhorn_iters: int = 20, eps: float = 1e-6):
        super().__init__()
        if mode not in ("hc", "mhc"):
            raise ValueError(f"HyperConnection mode must be 'hc' or 'mhc', not '{mode}'")
        if n_streams < 1:
            raise ValueError("n_streams must be >= 1")
        self.dim, self.n, self.mode, self.index = dim, n_streams, mode, index
        self.dynamic, self.alpha_init, self.sinkhorn_iters, self.eps = dynamic, alpha_init, sinkhorn_iters, eps
        n = n_streams
        self.b_pre = nn.Parameter(torch.empty(n))
        self.b_post = nn.Parameter(torch.empty(n))
        self.b_res = nn.Parameter(torch.empty(n, n))
        if dynamic:
            self.phi = nn.Parameter(torch.empty(n * dim, 2 * n + n * n))
            self.alpha = nn.Parameter(torch.empty(3))  # pre, post, res
        self.reset_own_parameters()

    def reset_own_parameters(self):
        n, k = self.n, self.index % self.n
        with torch.no_grad():
            if self.mode == "hc":
                self.b_pre.zero_()[k] = 1.0
                self.b_post.fill_(1.0)
                self.b_res.copy_(torch.eye(n))
            else:
                self.b_pre.fill_(-PRE_LOGIT)[k] = PRE_LOGIT
                self.b_post.zero_()
                self.b_res.fill_(RES_OFFDIAG_LOGIT).fill_diagonal_(0.0)
            if self.dynamic:
                if self.mode == "hc":
                    self.phi.zero_()
                else:
                    self.phi.normal_(0.0, 0.02)
                self.alpha.fill_(self.alpha_init)

    def dynamic_logits(self, flat: torch.Tensor) -> torch.Tensor:
        """rms_norm(flat) @ phi for the flattened streams (..., n d), with the per-token division after the
        product (as mHC's kernels do): the normalised (tokens, n d) copy and its backward pass are never formed."""
        mean_square = torch.linalg.vector_norm(flat, dim=-1, keepdim=True).square() / flat.shape[-1]
        return (flat @ self.phi) * torch.rsqrt(mean_square + self.eps)

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., n, d) -> H_pre (..., n), H_post (..., n), H_res (..., n, n)."""
        n = self.n
        lead = x.shape[:-2]
        if self.dynamic:
            dyn = self.dynamic_logits(x.reshape(*lead, n * self.dim))
            if self.mode == "hc":
                dyn = torch.tanh(dyn)
            pre = self.b_pre + self.alpha[0] * dyn[..., :n]
            post = self.b_post + self.alpha[1] * dyn[..., n:2 * n]
            res = self.b_res + self.alpha[2] * dyn[..., 2 * n:].reshape(*lead, n, n)
        else:
            pre, post, res = self.b_pre.expand(*lead, n), self.b_post.expand(*lead, n), self.b_res.expand(*lead, n, n)
        if self.mode == "mhc":
            pre = torch.sigmoid(pre)
            post = 2.0 * torch.sigmoid(post)
            res = sinkhorn_knopp(res, self.sinkhorn_iters)
        return pre, post, res

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """x (..., n, d) streams -> the branch input H_pre x (..., d), and the coefficients for `write`."""
        pre, post, res = self.coefficients(x)
        return (pre.unsqueeze(-1) * x).sum(-2), (pre, post, res)

    def write(self, x: torch.Tensor, y: torch.Tensor, mix, query: slice | torch.Tensor | None = None) -> torch.Tensor:
        """The new streams H_res x + H_post^T y at the query tokens (`select_tokens`); y: the branch output there."""
        _, post, res = mix
        if query is not None:
            x, post, res = select_tokens(x, query), select_tokens(post, query), select_tokens(res, query)
        # H_res x + H_post^T y as one batched product [H_res | H_post^T] [x; y], not n products and sums (with the
        # other changes timed by benchmarks/hc_speed.py, the site runs 1.9x faster forward + backward on CPU)
        out = torch.cat([res, post.unsqueeze(-1)], -1) @ torch.cat([x, y.unsqueeze(-2)], -2)
        if out.requires_grad:  # the streams' sum sends back an expanded gradient, which turns the product's
            out.register_hook(torch.Tensor.contiguous)  # backward into a loop over the tokens' matrices (4x slower)
        return out

    def forward(self, x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                query: slice | torch.Tensor | None = None) -> torch.Tensor:
        """x (..., n, d) streams; `branch` maps the mixed input (..., d) to the branch output at the query tokens
        (see `select_tokens`); returns the new streams at the query tokens."""
        h, mix = self.read(x)
        return self.write(x, branch(h), mix, query)


def residual_site(mode: HCMode, dim: int, n_streams: int = 4, index: int = 0, **kwargs) -> nn.Module:
    """A `PlainResidual` for mode "none", else a `HyperConnection`."""
    if mode == "none":
        return PlainResidual()
    return HyperConnection(dim, n_streams, mode, index, **kwargs)
