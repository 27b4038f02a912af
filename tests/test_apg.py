"""APG (issue 32): the generated-weight layer against its written-out reference, over-parameterisation merging
to one matrix, its cost against a dense layer, and the `model.apg` switch on every model with an MLP head."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from loopctr.config import apply_overrides
from loopctr.errors import UserError
from loopctr.layers.apg import APGLinear, APGSpec
from loopctr.layers.mlp import MLP
from loopctr.layers.reference import apg_linear_reference
from loopctr.models import build_model, model_class


@pytest.mark.parametrize("seed,overparam,generate_bias,hypernet_units", [(0, 0, True, 16), (1, 12, False, 0),
                                                                           (2, 9, True, 8)])
def test_apg_linear_matches_its_reference_with_gradients(seed, overparam, generate_bias, hypernet_units):
    torch.manual_seed(seed)
    n, in_dim, out_dim, cond_dim, rank = int(torch.randint(1, 9, ())), 7, 5, 3, 4
    layer = APGLinear(in_dim, out_dim, cond_dim, rank, overparam, hypernet_units, generate_bias)
    if not generate_bias:
        torch.nn.init.normal_(layer.bias)
    x = torch.randn(n, in_dim, requires_grad=True)
    z = torch.randn(n, cond_dim, requires_grad=True)
    fast, ref = layer(x, z), apg_linear_reference(layer, x, z)
    torch.testing.assert_close(fast, ref)
    upstream = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x, z, *layer.parameters()], upstream)
    grads_ref = torch.autograd.grad(ref, [x, z, *layer.parameters()], upstream)
    for g_fast, g_ref in zip(grads_fast, grads_ref):
        torch.testing.assert_close(g_fast, g_ref)


def test_samples_get_different_weights_and_overparameterisation_is_one_matrix_at_inference():
    torch.manual_seed(0)
    wide = APGLinear(6, 4, 3, rank=2, overparam=5)
    same_input = torch.randn(1, 6).expand(2, 6)
    y = wide(same_input, torch.randn(2, 3))
    assert not torch.allclose(y[0], y[1])  # one input, two conditions: two different outputs
    plain = APGLinear(6, 4, 3, rank=2)
    plain.hypernet.load_state_dict(wide.hypernet.state_dict())
    with torch.no_grad():
        plain.u[0].weight.copy_(wide.u[1].weight @ wide.u[0].weight)
        plain.v[0].weight.copy_(wide.v[1].weight @ wide.v[0].weight)
    x, z = torch.randn(3, 6), torch.randn(3, 3)
    torch.testing.assert_close(plain(x, z), wide(x, z))


def test_apg_head_costs_fewer_flops_than_the_dense_head():
    # the paper's efficiency claim: ((x U) S) V with a small rank is cheaper than a dense layer
    x = torch.randn(32, 512)
    spec = APGSpec("self", 0, rank=32, overparam=0, hypernet_units=64, generate_bias=True)
    dense, generated = (MLP(512, [1024, 512, 256], output_dim=1, apg=apg) for apg in (None, spec))

    def flops(module):
        with FlopCounterMode(display=False) as counter:
            module(x)
        return counter.get_total_flops()

    assert flops(generated) < 0.5 * flops(dense)


_SMALL_HEADS = {"dnn": ["hidden_units=[16,8]"],
                "dcnv2": ["parallel_dnn_hidden_units=[16]", "model_structure=stacked_parallel",
                          "stacked_dnn_hidden_units=[8]"],
                "din": ["dnn_hidden_units=[16]", "attention_hidden_units=[8]"],
                "suan": ["dnn_hidden_units=[16]"],
                "loopctr": ["d_model=16", "n_heads=2", "ffn_hidden=16", "head_hidden_units=[16]"]}


@pytest.mark.parametrize("name,mode", [("dnn", "self"), ("dnn", "fields"), ("dcnv2", "mix"), ("din", "fields"),
                                       ("suan", "self"), ("loopctr", "self")])
def test_every_head_takes_the_switch_and_the_condition_changes_the_prediction(name, mode, tiny_dataset, tiny_batch):
    torch.manual_seed(0)
    fields = ["apg_fields=[cate_id]"] if mode != "self" else []
    config = apply_overrides(model_class(name).config_class(embedding_dim=8),
                             [*_SMALL_HEADS[name], f"apg={mode}", "apg_rank=4", *fields], "test")
    model = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, config)
    assert any(isinstance(m, APGLinear) for m in model.modules())
    out = model(tiny_batch)
    assert out["logits"].shape == (64,) and torch.isfinite(out["logits"]).all()
    model.loss(out, tiny_batch.label)[0].backward()
    hypernets = [p for m in model.modules() if isinstance(m, APGLinear) for p in m.hypernet.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hypernets)
    if mode != "self":  # the same inputs under another condition give other predictions
        model.eval()
        with torch.no_grad():
            before = model(tiny_batch)["logits"]
            condition = model.apg_condition(tiny_batch)
            assert condition.shape == (64, 8)
            model.apg_condition = lambda batch: condition.flip(0)
            assert not torch.allclose(before, model(tiny_batch)["logits"])


def test_apg_settings_are_checked(tiny_dataset):
    cls = model_class("dnn").config_class
    with pytest.raises(UserError, match="needs model.apg_fields"):
        apply_overrides(cls(), ["apg=fields"], "test")
    with pytest.raises(UserError, match="only with model.apg=fields or mix"):
        apply_overrides(cls(), ["apg_fields=[user_id]"], "test")
    with pytest.raises(UserError, match="must exceed model.apg_rank"):
        apply_overrides(cls(), ["apg=self", "apg_rank=8", "apg_overparam=4"], "test")
    with pytest.raises(UserError, match="not fields of the schema"):
        build_model("dnn", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                    apply_overrides(cls(), ["apg=fields", "apg_fields=[user]"], "test"))
    with pytest.raises(UserError, match="LoopCTR's head takes model.apg=self or off"):
        apply_overrides(model_class("loopctr").config_class(), ["apg=mix", "apg_fields=[user_id]"], "test")
    with pytest.raises(UserError, match="did you mean 'apg'"):
        apply_overrides(cls(), ["apgg=self"], "test")
