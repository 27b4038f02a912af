import pytest
import torch

from loopctr.layers.attention import DINAttention
from loopctr.models import build_model
from loopctr.train.config import build_run_config


@pytest.mark.parametrize("seed,use_softmax", [(0, True), (1, False), (2, True)])
def test_fast_din_attention_equals_reference(seed, use_softmax):
    torch.manual_seed(seed)
    b, length, d = 7, 11, 8
    att = DINAttention(d, [16, 8], "dice", dropout=0.0, use_softmax=use_softmax)
    for m in att.modules():  # non-trivial running statistics for eval-mode Dice
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    att.eval()
    target, history = torch.randn(b, d), torch.randn(b, length, d)
    mask = torch.rand(b, length) < 0.6
    mask[0] = False  # an empty history
    mask[1] = True
    fast = att(target, history, mask)
    ref = att.forward_reference(target, history, mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert torch.all(fast[0] == 0)


def test_fast_din_attention_gradients_match_reference_without_batch_statistics():
    torch.manual_seed(0)
    att = DINAttention(6, [12], "relu", dropout=0.0)
    target, history = torch.randn(5, 6, requires_grad=True), torch.randn(5, 9, 6, requires_grad=True)
    mask = torch.rand(5, 9) < 0.5
    grads = []
    for fn in (att, att.forward_reference):
        out = fn(target, history, mask).pow(2).sum()
        grads.append(torch.autograd.grad(out, [target, history, *att.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["dnn", "din"])
def test_core_models_forward_backward(name, tiny_dataset, tiny_batch):
    run = build_run_config(name, overrides=["embedding_dim=8"])
    model = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, run.model)
    out = model(tiny_batch)
    assert out["logits"].shape == (64,)
    loss, parts = model.loss(out, tiny_batch["_label"])
    loss.backward()
    counts = model.parameter_counts()
    assert counts["embedding"] == 8 * sum(tiny_dataset.vocab_sizes.values())
    assert counts["dense"] > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if "bn" not in n)


def test_din_fast_model_matches_reference_model_in_eval(tiny_dataset, tiny_batch):
    torch.manual_seed(0)
    fast = build_model("din", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                       build_run_config("din", overrides=["embedding_dim=8"]).model)
    ref = build_model("din", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                      build_run_config("din", overrides=["embedding_dim=8", "reference_attention=true"]).model)
    ref.load_state_dict(fast.state_dict())
    with torch.no_grad():
        for p in fast.embedding.parameters():
            p.normal_()
        ref.load_state_dict(fast.state_dict())
    fast.eval(), ref.eval()
    torch.testing.assert_close(fast(tiny_batch)["logits"], ref(tiny_batch)["logits"], atol=1e-5, rtol=1e-5)


def test_din_needs_a_sequence(tmp_path):
    from loopctr.data.schema import schema_from_dict
    from loopctr.errors import UserError

    schema = schema_from_dict({"name": "flat", "label": "y", "fields": [{"name": "a", "type": "categorical"}]})
    with pytest.raises(UserError, match="DIN needs a sequence"):
        build_model("din", schema, {"a": 5})
