"""AMTL (layers/amtl.py): per-value embedding sizes from frequency, and the truncated tables of an export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import raw_rows
from loopctr.cli.main import main
from loopctr.errors import UserError
from loopctr.layers.amtl import AMTLEmbedding
from loopctr.serve.predictor import Predictor, program_inputs


def table(vocab=40, dim=8, seed=0) -> AMTLEmbedding:
    torch.manual_seed(seed)
    t = AMTLEmbedding(vocab, dim, hidden=16)
    t.reset_parameters(0.1)
    t.set_frequency(np.r_[0, 0, np.random.default_rng(seed).zipf(1.5, vocab - 2).clip(max=10_000)])
    with torch.no_grad():  # spread the sizes (a fresh table keeps every dimension)
        for twin in (t.high, t.low):
            twin[-1].bias.normal_(0, 3.0)
            twin[-1].weight.mul_(5.0)
    return t


def test_masks_are_prefixes_and_train_through_the_soft_mask():
    t = table().train()
    ids = torch.randint(1, 40, (5, 7))
    mask = t.mask(ids)
    hard = mask.detach().round()  # (the straight-through sum rounds to within 1e-7 of 0 and 1)
    torch.testing.assert_close(mask.detach(), hard)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert (hard[..., 1:] <= hard[..., :-1]).all() and (hard[..., 0] == 1).all()  # prefixes, at least one dim
    (mask * torch.randn_like(mask)).sum().backward()
    assert t.high[-1].weight.grad.abs().sum() > 0 and t.low[-1].weight.grad.abs().sum() > 0  # straight-through
    assert len(t.kept_fractions) == 1 and 0 < float(t.kept_fractions[0].detach()) <= 1
    t.eval()
    torch.testing.assert_close(t.mask(ids), hard)  # evaluation: the hard mask alone
    sizes = t.sizes()
    assert sizes[0] == 0 and ((1 <= sizes[1:]) & (sizes[1:] <= 8)).all()
    torch.testing.assert_close(t.mask(ids).sum(-1).long(), sizes[ids])  # ids >= 1: each keeps its size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncated_table_embeds_as_the_masked_one_and_stores_less(seed):
    t = table(seed=seed).eval()
    ids = torch.randint(0, 40, (6, 9))
    with torch.no_grad():
        masked = t(ids)
    sizes = t.sizes()
    full = t.table_bytes()
    t.truncate()
    torch.testing.assert_close(t(ids), masked, rtol=0, atol=0)
    assert t.values.shape[0] == int(sizes.sum()) and int(sizes.sum()) < 40 * 8
    assert t.table_bytes() == int(sizes.sum()) * 4 + 41 * 4 and t.table_bytes() < full
    assert not any(p.requires_grad for p in t.parameters())  # nothing left to train


def test_frequent_and_rare_values_follow_their_twins():
    t = table()
    with torch.no_grad():  # the high twin votes full size, the low twin size 1
        for twin, size in ((t.high, 7), (t.low, 0)):
            twin[-1].weight.zero_()
            twin[-1].bias.fill_(0.0)
            twin[-1].bias[size] = 20.0
    t.set_frequency(torch.tensor([0.0, 0.0] + [1.0] * 19 + [10_000.0] * 19))
    sizes = t.sizes()
    assert (sizes[2:21] == 1).all() and (sizes[21:] == 8).all()


def test_the_size_price_is_part_of_the_loss(tiny_dataset, tiny_batch):
    from loopctr.models.registry import build_model

    model = build_model("dnn", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                        _config("dnn", ["amtl=[item_id]", "amtl_size_penalty=0.5", "hidden_units=[8]"]))
    model.embedding.tables["item_id"].set_frequency(tiny_dataset.token_counts("item_id"))
    model.train()
    loss, parts = model.loss(model(tiny_batch), tiny_batch.label)
    assert 0 < float(parts["amtl_kept"]) <= 1
    torch.testing.assert_close(loss, parts["bce"] + 0.5 * parts["amtl_kept"])
    assert model.embedding.tables["item_id"].kept_fractions == []  # taken once per step
    counts = tiny_dataset.token_counts("item_id")
    item, history = (np.asarray(tiny_dataset.split("train").column(n)) for n in ("item_id", "item_history"))
    assert counts.sum() == item.size + history.size and counts[item[0]] >= 1


def _config(model, overrides):
    from loopctr.models.registry import model_class
    from loopctr.config import apply_overrides

    return apply_overrides(model_class(model).config_class(), overrides, "model")


def test_trained_run_exports_truncated_tables_that_score_as_served(tiny_data, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(run), "epochs=1",
                 "batch_size=64", "threads=1", "embedding_dim=8", "hidden_units=[16]", "model.amtl=[item_id]"]) == 0
    predictor = Predictor(run)
    t = predictor.model.embedding.tables["item_id"]
    np.testing.assert_array_equal(t.frequency.numpy(), tiny_dataset.token_counts("item_id"))  # from the checkpoint
    assert main(["export", "--run", str(run)]) == 0
    info = json.loads((run / "export-torchscript" / "export.json").read_text())["amtl"]["item_id"]
    assert info["stored_bytes"] <= info["full_bytes"] + (t.num_embeddings + 1) * 4 and 1 <= info["mean_size"] <= 8
    program = torch.jit.load(str(run / "export-torchscript" / "model.pt"))
    batch = predictor.encode(predictor.validate(raw_rows(tiny_data, n=60)))
    with torch.no_grad():
        torch.testing.assert_close(program(program_inputs(batch, predictor.schema)),
                                   torch.sigmoid(predictor.model(batch)["logits"]), atol=1e-6, rtol=0)


def test_amtl_refuses_hashed_and_unknown_vocabularies(tiny_dataset):
    from loopctr.layers.embedding import FeatureEmbedding

    with pytest.raises(UserError, match="not vocabularies"):
        FeatureEmbedding(tiny_dataset.schema, tiny_dataset.vocab_sizes, 8, amtl=["movie"])
    with pytest.raises(UserError, match="are hashed"):
        FeatureEmbedding(tiny_dataset.schema, tiny_dataset.vocab_sizes, 8, hashed=["item_id"], amtl=["item_id"])
