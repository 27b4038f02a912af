import pytest
import torch

from loopctr.data.batch import Jagged
from loopctr.layers.attention import DINAttention
from loopctr.layers.reference import din_attention_reference
from loopctr.models import build_model
from loopctr.train.config import build_run_config


def _history(b, length, d, p_real, seed):
    """A jagged history of random lengths (row 0 empty, row 1 full) and its events."""
    g = torch.Generator().manual_seed(seed)
    lengths = (torch.rand(b, length, generator=g) < p_real).sum(1)
    lengths[0], lengths[1] = 0, length
    jag = Jagged.from_lengths({}, lengths, width=length)
    return jag, torch.randn(int(lengths.sum()), d, generator=g)


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
    target = torch.randn(b, d)
    jag, events = _history(b, length, d, 0.6, seed)
    fast = att(target, events, jag)
    ref = din_attention_reference(att, target, jag.to_dense(events), jag.mask())
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert torch.all(fast[0] == 0)


def test_fast_din_attention_gradients_match_reference_without_batch_statistics():
    torch.manual_seed(0)
    att = DINAttention(6, [12], "relu", dropout=0.0)
    target = torch.randn(5, 6, requires_grad=True)
    jag, events = _history(5, 9, 6, 0.5, 0)
    events.requires_grad_(True)
    grads = []
    for fn in (lambda: att(target, events, jag),
               lambda: din_attention_reference(att, target, jag.to_dense(events), jag.mask())):
        grads.append(torch.autograd.grad(fn().pow(2).sum(), [target, events, *att.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["dnn", "din"])
def test_core_models_forward_backward(name, tiny_dataset, tiny_batch):
    run = build_run_config(name, overrides=["embedding_dim=8"])
    model = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, run.model)
    out = model(tiny_batch)
    assert out["logits"].shape == (64,)
    loss, parts = model.loss(out, tiny_batch.label)
    loss.backward()
    counts = model.parameter_counts()
    assert counts["embedding"] == 8 * sum(tiny_dataset.vocab_sizes.values())
    assert counts["dense"] > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if "bn" not in n)


def test_din_needs_a_sequence(tmp_path):
    from loopctr.data.schema import schema_from_dict
    from loopctr.errors import UserError

    schema = schema_from_dict({"name": "flat", "label": "y", "fields": [{"name": "a", "type": "categorical"}]})
    with pytest.raises(UserError, match="DIN needs a sequence"):
        build_model("din", schema, {"a": 5})
