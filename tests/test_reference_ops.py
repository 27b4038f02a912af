"""The jagged batch's primitives and the packed attention, against padded references on random shapes."""


import numpy as np
import pytest
import torch

from loopctr.data.batch import Batch, Jagged, length_groups
from loopctr.data.schema import schema_from_dict
from loopctr.layers.embedding import masked_mean
from loopctr.layers.packed import PackedTokens
from loopctr.layers.hstu import RelativePositionBias
from loopctr.layers.reference import attention_reference, local_dilated_attention_reference
from loopctr.layers.sparse_attention import LocalDilatedAttention, local_dilated_offsets, sparse_pattern
from loopctr.layers.transformer import MultiHeadAttention, attention_mask


def random_jagged(rows, max_len, seed, fields=("a",)):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (rows,), generator=g)
    total = int(lengths.sum())
    return Jagged.from_lengths({f: torch.randint(2, 50, (total,), generator=g, dtype=torch.int32) for f in fields},
                               lengths)


@pytest.mark.parametrize("seed", range(4))
def test_length_groups_sort_stably_and_balance_on_numpy_and_torch(seed):
    lengths = np.random.default_rng(seed).integers(0, 9, 301)
    for groups, min_rows in ((1, 1), (4, 64), (16, 64), (5, 1)):
        np_groups = length_groups(lengths, groups, min_rows)
        torch_groups = length_groups(torch.from_numpy(lengths), groups, min_rows)
        assert [g.tolist() for g in np_groups] == [g.tolist() for g in torch_groups]
        order = np.concatenate(np_groups)
        assert np.array_equal(order, np.argsort(lengths, kind="stable"))
        assert len(np_groups) == max(1, min(groups, 301 // min_rows))
        sizes = [len(g) for g in np_groups]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= min(min_rows, 301)


@pytest.mark.parametrize("seed", range(3))
def test_dense_views_select_and_segment_ops_match_padded_references(seed):
    jag = random_jagged(23, 7, seed, fields=("a", "b"))
    x = torch.randn(int(jag.lengths.sum()), 5, requires_grad=True)
    dense, mask = jag.to_dense(x), jag.mask()
    assert dense.shape == (23, jag.width, 5) and torch.equal(mask.sum(1), jag.lengths)
    assert torch.all(dense[~mask] == 0)
    for r in range(23):  # row r's events, oldest first, at the right end; recency counts from the newest
        start, end = jag.offsets[r:r + 2].tolist()
        torch.testing.assert_close(dense[r, jag.width - (end - start):], x[start:end])
        assert jag.recency[start:end].tolist() == list(range(end - start - 1, -1, -1))
        assert (jag.row_index[start:end] == r).all()
    post = jag.to_dense(x, side="post")
    torch.testing.assert_close(post.sum(1), dense.sum(1))
    torch.testing.assert_close(jag.segment_mean(x), masked_mean(dense, mask))
    g = torch.randn(23, 5)
    a, = torch.autograd.grad((jag.segment_mean(x) * g).sum(), x)
    b, = torch.autograd.grad((masked_mean(jag.to_dense(x), mask) * g).sum(), x)
    torch.testing.assert_close(a, b)
    rows = torch.tensor([5, 0, 17, 5])
    sub, index = jag.select(rows)
    torch.testing.assert_close(sub.to_dense(x.index_select(0, index), jag.width), dense[rows])
    assert torch.equal(sub.values["b"], jag.values["b"].index_select(0, index))
    assert sub.width == max(int(jag.lengths[rows].max()), 1)


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_the_padded_layout_round_trips(padding):
    schema = schema_from_dict({"name": "s", "label": "y", "fields": [
        {"name": "item", "type": "categorical"}, {"name": "cate", "type": "categorical"},
        {"name": "price", "type": "numeric"},
        {"name": "items", "type": "sequence", "share_vocab": "item", "max_len": 7, "padding": padding},
        {"name": "cates", "type": "sequence", "share_vocab": "cate", "max_len": 7, "padding": padding},
        {"name": "tags", "type": "sequence", "max_len": 3, "padding": padding}]})
    assert schema.sequence_groups() == [["items", "cates"], ["tags"]]
    history, tags = random_jagged(9, 7, 0, ("items", "cates")), random_jagged(9, 3, 1, ("tags",))
    batch = Batch(torch.rand(9), {"item": torch.arange(9), "cate": torch.arange(9), "price": torch.rand(9)},
                  [history, tags])
    padded = batch.to_padded(schema)
    real = padded["items"] != 0
    if padding == "pre":
        assert (real == history.mask()).all()
    else:
        assert (real.sum(1) == history.lengths).all() and (real[:, 0] == (history.lengths > 0)).all()
    back = Batch.from_padded(padded, schema)
    for a, b in zip(back.sequences, batch.sequences):
        assert torch.equal(a.offsets, b.offsets) and a.values.keys() == b.values.keys()
        assert all(torch.equal(a.values[k], b.values[k]) for k in a.values)
    assert torch.equal(back.features["price"], batch.features["price"])


@pytest.mark.parametrize("kind", ["full", "target_aware", "causal"])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("readout_only", [False, True])
def test_packed_attention_in_length_groups_equals_the_padded_reference(kind, groups, readout_only, monkeypatch):
    import loopctr.layers.packed as packed

    monkeypatch.setattr(packed, "MIN_GROUP_ROWS", 8)  # groups in a small batch
    torch.manual_seed(0)
    n_fixed, n_readout, d = 3, 2, 16
    events = random_jagged(40, 9, 2)
    layout = Jagged.from_lengths({}, events.lengths + n_fixed)
    x = torch.randn(int(layout.lengths.sum()), d, requires_grad=True)
    attn = MultiHeadAttention(d, 4)
    grid = PackedTokens(layout, n_fixed, n_readout, kind, groups)
    assert len(grid.grids) == groups
    out = grid.attend(attn, x, readout_only)

    w = layout.width  # the reference: one padded grid, tokens at the right end, fixed tokens last
    history = torch.arange(w) < w - n_fixed
    query = slice(w - n_readout, w) if readout_only else None
    mask = attention_mask(layout.mask(), kind, blocked_keys=~history, blocked_queries=history, query=query)
    ref_dense = attention_reference(attn, layout.to_dense(x), mask, query)
    ref = ref_dense.reshape(-1, d) if readout_only else ref_dense[layout.mask()]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    a = torch.autograd.grad((out * g).sum(), [x, *attn.parameters()])
    b = torch.autograd.grad((ref * g).sum(), [x, *attn.parameters()])
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-4)


def test_select_gives_a_sub_batch_of_the_rows_in_their_order():
    history = random_jagged(12, 6, 3, ("a",))
    batch = Batch(torch.arange(12.0), {"f": torch.arange(12)}, [history], torch.arange(12))
    rows = torch.tensor([11, 2, 7])
    sub = batch.select(rows)
    assert sub.label.tolist() == [11.0, 2.0, 7.0] and sub.group.tolist() == [11, 2, 7]
    j = sub.sequences[0]
    for i, r in enumerate(rows.tolist()):
        s, e = history.offsets[r:r + 2].tolist()
        assert j.values["a"][j.offsets[i]:j.offsets[i + 1]].tolist() == history.values["a"][s:e].tolist()


def test_local_dilated_offsets():
    assert local_dilated_offsets(12, 3, 4).tolist() == [0, 1, 2, 4, 8]
    assert local_dilated_offsets(5, 2, 0).tolist() == [0, 1]
    assert local_dilated_offsets(4, 10, 2).tolist() == [0, 1, 2, 3]  # the window covers every earlier token


@pytest.mark.parametrize("seed,window,dilation", [(0, 1, 2), (1, 3, 4), (2, 4, 0), (3, 100, 3), (4, 2, 1)])
def test_local_dilated_attention_matches_its_dense_reference(seed, window, dilation):
    """LightSUAN's gathered sparse attention equals the dense masked one, values and gradients, with padding
    (history first, real tokens last, as the sequence models lay them out) and the relative-position bias."""
    g = torch.Generator().manual_seed(seed)
    b, n, dim = 5, int(torch.randint(2, 13, (1,), generator=g)), 8
    torch.manual_seed(seed)
    attn, rab = LocalDilatedAttention(dim, 2), RelativePositionBias(16)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    token_mask = torch.arange(n) >= (n - lengths).unsqueeze(1)
    x = torch.randn(b, n, dim, generator=g, requires_grad=True)
    y = attn(x, sparse_pattern(token_mask, window, dilation, rab))
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = local_dilated_attention_reference(attn, x_ref, token_mask, window, dilation, rab)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn(b, n, dim, generator=g)
    grads = torch.autograd.grad((y * weight).sum(), [x, *attn.parameters(), rab.weight])
    grads_ref = torch.autograd.grad((y_ref * weight).sum(), [x_ref, *attn.parameters(), rab.weight])
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
