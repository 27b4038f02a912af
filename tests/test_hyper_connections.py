import pytest
import torch

from loopctr.layers.hyper_connections import HyperConnection, PlainResidual, collapse_streams, expand_streams, sinkhorn_knopp
from loopctr.layers.reference import hyper_connection_reference, sinkhorn_knopp_reference
from loopctr.layers.transformer import rms_norm

from helpers import load_script


def test_sinkhorn_is_doubly_stochastic_and_matches_reference():
    torch.manual_seed(0)
    logits = torch.randn(6, 7, 4, 4)  # (with logits spread over tens of units 20 rounds leave rows ~0.05 off)
    m = sinkhorn_knopp(logits, 20)
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(-1), torch.ones(6, 7, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(m.sum(-2), torch.ones(6, 7, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(m, sinkhorn_knopp_reference(logits, 20), atol=1e-5, rtol=1e-4)


def test_sinkhorn_gradient():
    torch.manual_seed(0)
    x = torch.randn(9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sinkhorn_knopp(t, 6), (x,))
    g = torch.randn(9, 3, 3, dtype=torch.float64)
    a, = torch.autograd.grad((sinkhorn_knopp(x, 6) * g).sum(), x)
    b, = torch.autograd.grad((sinkhorn_knopp_reference(x, 6) * g).sum(), x)
    torch.testing.assert_close(a, b)


def _perturbed(site: HyperConnection, seed=0, scale=0.3):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in site.parameters():
            p.add_(scale * torch.randn_like(p))
    return site


@pytest.mark.parametrize("scale,iters,row_tol", [(0.1, 20, 2e-3), (0.3, 300, 1e-4)])
def test_mhc_coefficients_are_constrained_for_any_input(scale, iters, row_tol):
    # columns are exact after every round; rows converge at a rate that depends on the logits' spread
    site = _perturbed(HyperConnection(8, 4, "mhc", index=1, sinkhorn_iters=iters), scale=scale)
    x = torch.randn(5, 6, 4, 8) * 10  # the dynamic part sees RMS-normalised streams: any scale works
    pre, post, res = site.coefficients(x)
    assert pre.shape == (5, 6, 4) and post.shape == (5, 6, 4) and res.shape == (5, 6, 4, 4)
    assert ((pre > 0) & (pre < 1)).all() and ((post > 0) & (post < 2)).all() and (res >= 0).all()
    torch.testing.assert_close(res.sum(-1), torch.ones(5, 6, 4), atol=row_tol, rtol=0)  # rows
    torch.testing.assert_close(res.sum(-2), torch.ones(5, 6, 4), atol=1e-5, rtol=0)  # columns


def test_mhc_init_is_near_identity_and_dynamic_part_starts_small():
    site = HyperConnection(8, 4, "mhc", index=2, alpha_init=0.01)
    _, _, res = site.coefficients(torch.randn(3, 4, 8))
    assert (torch.diagonal(res, dim1=-2, dim2=-1) > 0.9).all()
    torch.testing.assert_close(site.alpha.detach(), torch.full((3,), 0.01))


def test_hc_init_reproduces_the_plain_residual():
    torch.manual_seed(0)
    site = HyperConnection(8, 4, "hc", index=5)
    branch = torch.nn.Linear(8, 8)
    x = torch.randn(3, 7, 8)
    out = site(expand_streams(x, "hc", 4), branch)
    torch.testing.assert_close(collapse_streams(out, "hc"), 4 * (x + branch(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["hc", "mhc"])
def test_query_selection_slice_and_index(mode):
    site = _perturbed(HyperConnection(8, 4, mode))
    branch = torch.nn.Linear(8, 8)
    x = torch.randn(2, 5, 4, 8)
    full = site(x, branch)
    by_slice = site(x, lambda h: branch(h)[:, 3:], query=slice(3, 5))
    torch.testing.assert_close(by_slice, full[:, 3:], atol=1e-5, rtol=1e-5)
    flat = x.reshape(10, 4, 8)
    idx = torch.tensor([1, 7])
    by_index = site(flat, lambda h: branch(h).index_select(0, idx), query=idx)
    torch.testing.assert_close(by_index, full.reshape(10, 4, 8)[idx], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["hc", "mhc"])
@pytest.mark.parametrize("shape,query", [((37, 3, 16), None), ((37, 3, 16), torch.tensor([0, 5, 36])),
                                         ((2, 7, 3, 16), None), ((2, 7, 3, 16), slice(6, 7))])
def test_site_matches_the_per_stream_reference(mode, shape, query):
    # the fused product [H_res | H_post^T] [x; y] against the equation written stream by stream: values and gradients
    site = _perturbed(HyperConnection(shape[-1], shape[-2], mode, index=1))
    branch = torch.nn.Linear(shape[-1], shape[-1])

    def select(y):
        return y if query is None else y[:, query] if isinstance(query, slice) else y.index_select(0, query)

    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn_like(select(x))
    outs, grads = [], []
    for impl in (site, lambda *a, **k: hyper_connection_reference(site, *a, **k)):
        out = impl(x, lambda h: select(branch(h)), query=query)
        outs.append(out)
        grads.append(torch.autograd.grad((out * g).sum(), [x, *site.parameters(), *branch.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_dynamic_logits_are_those_of_the_rms_normalised_streams():
    site = _perturbed(HyperConnection(16, 3, "mhc"))
    flat = (torch.randn(11, 48) * torch.logspace(-3, 3, 11).unsqueeze(-1)).requires_grad_()
    expected = rms_norm(flat, eps=site.eps) @ site.phi
    torch.testing.assert_close(site.dynamic_logits(flat), expected, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(expected)
    a, = torch.autograd.grad((site.dynamic_logits(flat) * g).sum(), flat)
    b, = torch.autograd.grad((expected * g).sum(), flat)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_plain_residual_and_gradients():
    branch = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    torch.testing.assert_close(PlainResidual()(x, branch), x + branch(x))
    site = HyperConnection(8, 4, "mhc")
    site(torch.randn(3, 4, 8), branch).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in site.parameters())
    assert site.alpha.grad.abs().sum() > 0


def test_static_only_has_no_dynamic_parameters():
    site = HyperConnection(8, 4, "mhc", dynamic=False)
    assert sum(p.numel() for p in site.parameters()) == 4 + 4 + 16


def test_hc_speed_benchmark_times_the_same_function_in_both_forms():
    hc_speed = load_script("hc_speed")
    site = _perturbed(HyperConnection(16, 4, "mhc"))
    branch = torch.nn.Linear(16, 16)
    x = torch.randn(9, 4, 16)
    before = hc_speed.with_form("before", lambda: site(x, branch))()
    assert HyperConnection.forward is hc_speed.FORMS["now"]["forward"]  # restored after the call
    torch.testing.assert_close(before, site(x, branch), atol=1e-5, rtol=1e-5)
    best = hc_speed.best_of(hc_speed.site_cases(50), repeats=1)
    assert len(best) == 4 and all(seconds > 0 for seconds in best.values())
