import pytest
import torch

from loopctr.layers.moe import MoEFFN, loop_encoding


@pytest.mark.parametrize("seed,shape,n_experts,top_k,shared,loop_router", [
    (0, (37, 8), 4, 1, False, False),
    (1, (3, 11, 8), 4, 2, True, False),
    (2, (64, 8), 8, 3, True, True),
    (3, (5, 8), 6, 1, True, True),
    (4, (1, 8), 2, 2, False, False),
])
def test_fast_moe_equals_reference(seed, shape, n_experts, top_k, shared, loop_router):
    torch.manual_seed(seed)
    moe = MoEFFN(8, 12, n_experts, top_k, shared, loop_router)
    x = torch.randn(*shape, requires_grad=True)
    kwargs = {"loop_index": 2} if loop_router else {}
    results = []
    for fn in (moe, moe.forward_dense):
        y, aux = fn(x, **kwargs)
        loss = y.pow(2).sum() + aux
        results.append((y, aux, torch.autograd.grad(loss, [x, *moe.parameters()])))
    (y1, a1, g1), (y2, a2, g2) = results
    assert y1.shape == x.shape
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a1, a2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_aux_loss_is_switch_formula():
    torch.manual_seed(0)
    moe = MoEFFN(8, 4, n_experts=4, top_k=2)
    x = torch.randn(50, 8)
    probs, top_i, gates, aux = moe.route(x)
    f = torch.bincount(top_i.reshape(-1), minlength=4).float() / top_i.numel()
    torch.testing.assert_close(aux, 4 * (f * probs.mean(0)).sum())
    torch.testing.assert_close(gates.sum(-1), torch.ones(50))  # top-2 gates renormalised


def test_top1_gate_is_the_router_probability_so_the_router_learns_from_the_task():
    torch.manual_seed(0)
    moe = MoEFFN(8, 4, n_experts=4, top_k=1)
    y, _ = moe(torch.randn(20, 8))
    y.sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_single_expert_is_a_dense_ffn():
    moe = MoEFFN(8, 16, n_experts=1, shared_expert=True)
    y, aux = moe(torch.randn(4, 8))
    assert y.shape == (4, 8) and float(aux) == 0.0
    assert sum(p.numel() for p in moe.parameters()) == 3 * 8 * 16


def test_loop_router_depends_on_loop_index_with_fixed_parameters():
    torch.manual_seed(0)
    moe = MoEFFN(8, 4, n_experts=4, top_k=1, loop_router=True)
    x = torch.randn(10, 8)
    assert not torch.allclose(moe.router_logits(x, 1), moe.router_logits(x, 2))
    assert loop_encoding(100, 8).shape == (8,)  # any depth is encodable
    with pytest.raises(ValueError):
        moe(x)


def test_empty_input():
    moe = MoEFFN(8, 4, n_experts=4, top_k=2, shared_expert=True)
    y, aux = moe(torch.zeros(0, 8))
    assert y.shape == (0, 8) and float(aux.detach()) == 0.0
