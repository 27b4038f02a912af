import pytest
import torch

from loopctr.layers.reference import attention_reference
from loopctr.layers.transformer import MultiHeadAttention, RMSNorm, SwiGLU, TransformerLayer, attention_mask


def _padded(b=5, n=9, d=16, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(b, n, d)
    mask = torch.ones(b, n, dtype=torch.bool)
    lengths = torch.tensor([n, 1, 4, 0, 6])[:b]
    for i, length in enumerate(lengths.tolist()):  # "pre" padding of the first n - 2 positions
        mask[i, : max(0, n - 2 - length)] = False
    return x, mask


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    norm = RMSNorm(8)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_swiglu_shape_and_formula():
    torch.manual_seed(0)
    ffn = SwiGLU(8, 12)
    w_gate, w_up, w_out = torch.randn(12, 8), torch.randn(12, 8), torch.randn(8, 12)
    with torch.no_grad():  # the fused input projection holds the gate rows, then the up rows
        ffn.w_in.weight.copy_(torch.cat([w_gate, w_up]))
        ffn.w_out.weight.copy_(w_out)
    x = torch.randn(2, 3, 8)
    g, u = x @ w_gate.T, x @ w_up.T
    expected = (g * torch.sigmoid(g) * u) @ w_out.T  # W_out (SiLU(W_gate x) * W_up x)
    torch.testing.assert_close(ffn(x), expected)
    swapped = (u * torch.sigmoid(u) * g) @ w_out.T
    assert not torch.allclose(expected, swapped, atol=1e-3)  # the check tells gate from up


@pytest.mark.parametrize("kind", ["full", "target_aware", "causal"])
def test_sdpa_attention_equals_reference_with_padding_and_query(kind):
    x, mask = _padded()
    n = x.shape[1]
    history = torch.arange(n) < n - 2
    attn = MultiHeadAttention(16, 4)
    for query in (None, slice(n - 2, n)):
        m = attention_mask(mask, kind, blocked_keys=~history, blocked_queries=history, query=query)
        fast, ref = attn(x, m, query), attention_reference(attn, x, m, query)
        assert torch.isfinite(fast).all()
        rows = mask if query is None else mask[:, query]
        torch.testing.assert_close(fast[rows], ref[rows], atol=1e-5, rtol=1e-5)


def test_full_mask_without_padding_is_none_and_masks_are_broadcastable():
    assert attention_mask(None, "full", n_tokens=5) is None
    _, mask = _padded()
    assert attention_mask(mask, "full").shape == (5, 1, 1, 9)
    assert attention_mask(mask, "causal").shape == (5, 1, 9, 9)
    assert attention_mask(mask, "causal", query=slice(7, 9)).shape == (5, 1, 2, 9)


def test_padding_keys_do_not_matter():
    x, mask = _padded()
    attn = MultiHeadAttention(16, 4)
    m = attention_mask(mask, "full")
    noisy = x.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 16) * 100
    torch.testing.assert_close(attn(x, m)[mask], attn(noisy, m)[mask], atol=1e-5, rtol=1e-5)


def test_target_aware_history_does_not_see_target_and_empty_rows_stay_finite():
    x, mask = _padded()
    n = x.shape[1]
    history = torch.arange(n) < n - 2  # last two tokens: a context token and the target
    m = attention_mask(mask, "target_aware", blocked_keys=~history, blocked_queries=history)
    attn = MultiHeadAttention(16, 4)
    other = x.clone()
    other[:, -1] = torch.randn(x.shape[0], 16)
    a, b = attn(x, m), attn(other, m)
    assert torch.isfinite(a).all()  # sample 3 has no history: its padded history rows only see themselves
    torch.testing.assert_close(a[:, :-2][mask[:, :-2]], b[:, :-2][mask[:, :-2]])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_causal_tokens_do_not_see_later_tokens():
    x, mask = _padded()
    attn = MultiHeadAttention(16, 4)
    m = attention_mask(mask, "causal")
    other = x.clone()
    other[:, -1] = 0.0
    torch.testing.assert_close(attn(x, m)[:, :-1], attn(other, m)[:, :-1])


@pytest.mark.parametrize("query", [None, slice(7, 9)])
def test_packed_attention_equals_padded(query):
    x, mask = _padded()
    b, n, d = x.shape
    attn = MultiHeadAttention(d, 4)
    m = attention_mask(mask, "full")
    index = mask.reshape(-1).nonzero().squeeze(-1)
    packed_pos = mask.reshape(-1).long().cumsum(0) - 1
    query_index = None
    if query is not None:
        flat = (torch.arange(b)[:, None] * n + torch.arange(n)[query][None]).reshape(-1)
        query_index = packed_pos[flat]
    out = attn.forward_packed(x.reshape(-1, d).index_select(0, index), index, (b, n), m, query, query_index)
    padded = attn(x, m, query)
    expected = padded[mask] if query is None else padded.reshape(-1, d)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_transformer_layer_ffn_branch_returns_the_ffn_aux_loss():
    from loopctr.layers.moe import MoEFFN

    x, _ = _padded()
    layer = TransformerLayer(16, 4, 32)
    y, aux = layer.ffn_branch(x)
    assert aux is None
    torch.testing.assert_close(y, layer.ffn(layer.norm_ffn(x)))
    moe_layer = TransformerLayer(16, 4, 32, ffn=MoEFFN(16, 8, n_experts=3))
    y, aux = moe_layer.ffn_branch(x.reshape(-1, 16))
    assert y.shape == (45, 16) and aux.ndim == 0
