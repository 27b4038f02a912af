"""Plain PyTorch references of the fast ops (as HSTU's `ops/pytorch/`): padded, unfused, written as the papers
write them. Nothing in production calls them; the tests hold every fast op equal to its reference, values and
gradients, on random shapes (tests/test_reference_ops.py and the layer tests)."""

from __future__ import annotations

from typing import Callable

import torch

from loopctr.layers.apg import APGLinear, product
from loopctr.layers.attention import DINAttention
from loopctr.layers.content_interest import ContentInterest
from loopctr.layers.cross_features import CrossGNN
from loopctr.layers.hstu import RelativePositionBias
from loopctr.layers.hyper_connections import HyperConnection, select_tokens
from loopctr.layers.transformer import MultiHeadAttention


def attention_reference(attn: MultiHeadAttention, x: torch.Tensor, mask: torch.Tensor | None = None,
                        query: slice | None = None) -> torch.Tensor:
    """Softmax attention on a padded (B, N, d) batch, written out (no dropout); `mask` as `attention_mask`."""
    b = x.shape[0]
    q, k, v = (attn._heads(t) for t in attn.qkv(x).chunk(3, dim=-1))
    if query is not None:
        q = q[:, :, query]
    scores = q @ k.transpose(-1, -2) / attn.head_dim ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.out(y.transpose(1, 2).reshape(b, -1, attn.dim))


def din_attention_reference(att: DINAttention, target: torch.Tensor, history: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
    """DIN target attention as FuxiCTR computes it: target (B, d), padded history (B, L, d), mask (B, L) bool
    -> (B, d); the score MLP runs on every position, padding included, over [t, e, t - e, t * e]."""
    b, length, d = history.shape
    t = target.unsqueeze(1).expand(-1, length, -1)
    scores = att.mlp(torch.cat([t, history, t - history, t * history], dim=-1).reshape(-1, 4 * d)).view(b, length)
    if att.use_softmax:
        scores = scores.masked_fill(~mask, -1e9).softmax(dim=-1) * mask
    else:
        scores = scores * mask
    return torch.bmm(scores.unsqueeze(1), history).squeeze(1)


def content_interest_reference(module: ContentInterest, target_ids: torch.Tensor, history_ids: torch.Tensor,
                               events: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Content interest on a padded history: target ids (B,), history ids (B, L), ID events (B, L, k), mask (B, L)
    bool -> (B, 2 dim + k), the softmax over the valid positions (zeros for an empty row)."""
    vectors = module.vectors
    project = lambda ids: module.proj(vectors[ids] / vectors[ids].norm(dim=-1, keepdim=True).clamp_min(1e-12))  # noqa: E731
    target, items = project(target_ids), project(history_ids)
    scores = torch.einsum("bd,bld->bl", target, items) / module.dim ** 0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0) * mask
    return torch.cat([target, torch.einsum("bl,bld->bd", weights, items), torch.einsum("bl,blk->bk", weights, events)], -1)


def sinkhorn_knopp_reference(logits: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """The plain log-domain Sinkhorn-Knopp iteration, differentiated by autograd."""
    log_m = logits
    for _ in range(iters):
        log_m = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
        log_m = log_m - torch.logsumexp(log_m, dim=-2, keepdim=True)
    return log_m.exp()


def hyper_connection_reference(site: HyperConnection, x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                               query: slice | torch.Tensor | None = None) -> torch.Tensor:
    """A hyper-connection site's equation x_next = H_res x + H_post^T F(H_pre x), stream by stream (einsum)."""
    pre, post, res = site.coefficients(x)
    y = branch(torch.einsum("...j,...jd->...d", pre, x))
    if query is not None:
        x, post, res = select_tokens(x, query), select_tokens(post, query), select_tokens(res, query)
    return torch.einsum("...ij,...jd->...id", res, x) + torch.einsum("...i,...d->...id", post, y)


def local_dilated_attention_reference(attn: MultiHeadAttention, x: torch.Tensor, token_mask: torch.Tensor,
                                      window: int, dilation: int, rab: RelativePositionBias | None = None
                                      ) -> torch.Tensor:
    """LightSUAN's sparse attention written dense: all (N, N) scores, with every key that is later than its
    query, padding, or neither in the local window nor at a multiple of `dilation` back masked out."""
    b, n, _ = x.shape
    q, k, v = (attn._heads(t) for t in attn.qkv(x).chunk(3, dim=-1))
    pos = torch.arange(n, device=x.device)
    back = pos[:, None] - pos[None, :]
    in_pattern = (back < window) | (back % dilation == 0 if dilation > 0 else torch.zeros_like(back, dtype=bool))
    allowed = ((back >= 0) & in_pattern & token_mask[:, None, :]) | torch.eye(n, dtype=torch.bool, device=x.device)
    scores = q @ k.transpose(-1, -2) / attn.head_dim ** 0.5
    if rab is not None:
        scores = scores + rab(n)
    y = scores.masked_fill(~allowed.unsqueeze(1), float("-inf")).softmax(-1) @ v
    return attn.out(y.transpose(1, 2).reshape(b, n, attn.dim))


def apg_linear_reference(layer: APGLinear, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """APG as the paper writes it: each sample's full weight W_i = U S_i V (in x out), then y_i = x_i W_i + b_i."""
    s, bias = layer.generated(condition)
    u, v = product(layer.u).t(), product(layer.v).t()  # (in, k), (k, out)
    weights = torch.einsum("ik,nkl,lo->nio", u, s, v)
    y = torch.einsum("ni,nio->no", x, weights)
    return y + (bias if bias is not None else layer.bias)


def cross_gnn_states_reference(model: CrossGNN, edges: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """CrossGNN's message passing through dense row-normalised adjacency matrices, one per edge type and
    direction: h' = tanh(h + sum_t W_t (A_t h_neighbours)), A_t[i, j] = count(i, j) / degree(i)."""
    h = {v: table.weight for v, table in model.embedding.items()}
    for weights in model.messages:
        update = dict(h)
        for name, left_vocab, right_vocab in model.pairs:
            left, right = edges[name]
            adjacency = torch.zeros(h[left_vocab].shape[0], h[right_vocab].shape[0])
            adjacency.index_put_((left, right), torch.ones(len(left)), accumulate=True)
            for side, a, to, source in (("left", adjacency, left_vocab, right_vocab),
                                        ("right", adjacency.t(), right_vocab, left_vocab)):
                mean = a / a.sum(1, keepdim=True).clamp_min(1.0)
                update[to] = update[to] + weights[f"{name}>{side}"](mean @ h[source])
        h = {v: torch.tanh(x) for v, x in update.items()}
    return h
