"""The baselines (issue 5): every model builds, trains through the real CLI, works without sequences where it
can, and the defining pieces (CrossNetV2, DLRM's interaction, HSTU's pointwise attention, ...) are checked
against hand computations. Small configs keep the whole file fast on two CPU cores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_data
from helpers import field_moves_scores, load_script, raw_rows
from loopctr.cli.main import main
from loopctr.errors import UserError
from loopctr.models import build_model, model_class
from loopctr.serve.predictor import Predictor

SEQUENCE_FREE = ["dcnv2", "dlrm", "wukong", "fat", "onetrans"]
NEEDS_SEQUENCE = ["bst", "hstu", "mtgr", "suan", "lightsuan"]
BASELINES = SEQUENCE_FREE + NEEDS_SEQUENCE
SMALL = {
    "dcnv2": ["parallel_dnn_hidden_units=[32]"],
    "dlrm": ["bottom_mlp_units=[16]", "top_mlp_units=[16]"],
    "wukong": ["fmb_hidden_units=[16]", "fmb_tokens=4", "lcb_tokens=4", "dnn_hidden_units=[32]"],
    "fat": ["ffn_hidden_dim=16", "dnn_hidden_units=[32]"],
    "bst": ["num_heads=2", "dnn_hidden_units=[32]"],
    "onetrans": ["model_dim=16", "num_heads=2", "dnn_hidden_units=[32]"],
    "hstu": ["model_dim=16", "qk_dim=8", "v_dim=8", "dnn_hidden_units=[32]"],
    "mtgr": ["model_dim=16", "qk_dim=8", "v_dim=8", "dnn_hidden_units=[32]"],
    "suan": ["dnn_hidden_units=[32]"],
    "lightsuan": ["dnn_hidden_units=[32]", "window=3", "dilation=2"],
}
FAST = ["epochs=1", "batch_size=64", "threads=1", "embedding_dim=8", "eval_batch_size=512"]


def small_config(name: str, *extra: str):
    from loopctr.config import apply_overrides

    cls = model_class(name).config_class
    return apply_overrides(cls(embedding_dim=8), [*SMALL[name], *extra], where="test")


def cli_train(data, out, name, *extra) -> int:
    return main(["train", "--data", str(data), "--model", name, "--out", str(out), *FAST, *SMALL[name], *extra])


# -- every model: build, forward/backward, parameter counts, one epoch through the CLI ---------------------
@pytest.mark.parametrize("name", BASELINES)
def test_forward_backward_and_counts(name, tiny_dataset, tiny_batch):
    torch.manual_seed(0)
    model = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, small_config(name))
    out = model(tiny_batch)
    assert out["logits"].shape == (64,) and torch.isfinite(out["logits"]).all()
    loss, _ = model.loss(out, tiny_batch.label)
    loss.backward()
    counts = model.parameter_counts()
    assert counts["dense"] > 0
    assert counts["embedding"] == 8 * sum(tiny_dataset.vocab_sizes.values())  # one 8-wide row per vocabulary entry
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", BASELINES)
def test_trains_one_epoch_through_the_cli(name, tiny_data, tmp_path):
    run = tmp_path / name
    assert cli_train(tiny_data, run, name) == 0
    report = json.loads((run / "metrics.json").read_text())
    for key in ("auc", "gauc", "logloss", "ne", "params_dense", "params_embedding", "train_samples_per_s",
                "eval_samples_per_s"):
        assert key in report, key
    assert report["params_dense"] > 0 and 0.0 <= report["auc"] <= 1.0 and math.isfinite(report["logloss"])
    # deployable: a TorchScript export serves the same probabilities as the run
    assert main(["export", "--run", str(run), "--format", "torchscript"]) == 0
    rows = raw_rows(tiny_data, n=20)
    np.testing.assert_allclose(Predictor(run / "export-torchscript").predict(rows), Predictor(run).predict(rows),
                               rtol=1e-5, atol=1e-6)


# -- MovieLens' shape: a behaviour sequence paired with item_id beside a multi-valued field (genres) ------------
@pytest.fixture(scope="module")
def movielens_data(tmp_path_factory) -> Path:
    """The movielens catalogue entry on ratings written here (1M layout): item_history pairs with item_id,
    genres is a sequence without a target (a bag of values), the user fields are categorical."""
    from loopctr.data.prepare import prepare_dataset

    src = tmp_path_factory.mktemp("ml")
    rng = np.random.default_rng(0)
    genres = ["Drama", "Comedy", "Action", "Horror", "Romance"]
    ratings = [f"{u}::{i}::{rng.integers(1, 6)}::{t}" for u in range(1, 41)
               for t, i in enumerate(rng.choice(np.arange(1, 61), size=rng.integers(5, 20), replace=False))]
    (src / "ratings.dat").write_text("\n".join(ratings) + "\n")
    (src / "users.dat").write_text("".join(f"{u}::{'FM'[u % 2]}::{18 + u % 5}::{u % 7}::{10000 + u}\n"
                                           for u in range(1, 41)))
    (src / "movies.dat").write_text("".join(f"{i}::Movie {i}::{'|'.join(rng.choice(genres, 2, replace=False))}\n"
                                            for i in range(1, 61)))
    prepare_dataset("movielens", src / "prepared", source_dir=src, log=lambda *a: None)
    return src / "prepared"


@pytest.mark.parametrize("name", [*BASELINES, "din", "dnn", "loopctr"])
def test_a_sequence_beside_a_bag_field(name, movielens_data, tmp_path):
    small = {**SMALL, "din": ["dnn_hidden_units=[32]", "attention_hidden_units=[16]"], "dnn": ["hidden_units=[32]"],
             "loopctr": ["d_model=16", "n_heads=2", "ffn_hidden=32"]}
    args = ["train", "--data", str(movielens_data), "--model", name, "--out", str(tmp_path / name), *FAST,
            *small[name]]
    assert main(args) == 0
    assert math.isfinite(json.loads((tmp_path / name / "metrics.json").read_text())["logloss"])
    for field in ("genres", "item_history"):  # the bag and the history both reach the scores
        assert field_moves_scores(tmp_path / name, movielens_data, field), field


# -- a dataset without sequences ------------------------------------------------------------------------
FLAT_SCHEMA = """
name: flat
label: label
group: user
fields:
  - {name: user, type: categorical}
  - {name: item, type: categorical}
  - {name: ctx, type: categorical}
  - {name: price, type: numeric, normalize: standard}
  - {name: age, type: numeric}
"""


@pytest.fixture(scope="module")
def flat_data(tmp_path_factory) -> Path:
    from loopctr.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(0)
    for split, rows in (("train", 600), ("valid", 200), ("test", 200)):
        user, item, ctx = rng.integers(0, 30, rows), rng.integers(0, 40, rows), rng.integers(0, 3, rows)
        price, age = rng.normal(50, 10, rows), rng.integers(18, 70, rows)
        label = ((user + item) % 3 == 0) ^ (rng.random(rows) < 0.1)
        lines = ["label,user,item,ctx,price,age"] + [
            f"{int(y)},u{u},i{i},c{c},{p:.2f},{a}" for y, u, i, c, p, a in zip(label, user, item, ctx, price, age)]
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "flat.yaml").write_text(FLAT_SCHEMA)
    prepare_dataset(str(root / "flat.yaml"), root / "prepared", source_dir=root, log=lambda *a: None)
    return root / "prepared"


@pytest.mark.parametrize("name", SEQUENCE_FREE)
def test_sequence_free_dataset(name, flat_data, tmp_path):
    assert cli_train(flat_data, tmp_path / name, name) == 0
    report = json.loads((tmp_path / name / "metrics.json").read_text())
    assert report["rows_train"] == 600 and math.isfinite(report["auc"])
    for field in ("user", "ctx", "price", "age"):  # categorical and numeric fields all reach the scores
        assert field_moves_scores(tmp_path / name, flat_data, field), field


@pytest.mark.parametrize("name", NEEDS_SEQUENCE)
def test_sequence_models_refuse_a_sequence_free_dataset(name, flat_data, tmp_path, capsys):
    from loopctr.data.dataset import PreparedDataset

    data = PreparedDataset(flat_data)
    with pytest.raises(UserError, match="needs a sequence field"):
        build_model(name, data.schema, data.vocab_sizes, small_config(name))
    assert cli_train(flat_data, tmp_path / name, name) == 2
    assert "needs a sequence field" in capsys.readouterr().err


# -- the defining pieces, against hand computations -------------------------------------------------------
def test_crossnet_v2_formula():
    from loopctr.layers.interaction import CrossNetV2

    torch.manual_seed(0)
    net = CrossNetV2(3, 2)
    x0 = torch.randn(4, 3)
    x = x0.clone()
    for layer in net.layers:  # x_{l+1} = x0 * (W x_l + b) + x_l, written out element by element
        w, b = layer.weight.detach(), layer.bias.detach()
        x = torch.stack([torch.stack([x0[n, i] * (sum(w[i, j] * x[n, j] for j in range(3)) + b[i]) + x[n, i]
                                      for i in range(3)]) for n in range(4)])
    assert torch.allclose(net(x0), x, atol=1e-6)


def test_crossnet_mix_matches_a_per_expert_loop():
    from loopctr.layers.interaction import CrossNetMix

    torch.manual_seed(0)
    net = CrossNetMix(6, 2, low_rank=3, num_experts=4)
    x0 = torch.randn(5, 6)
    x = x0
    for i in range(2):
        outs, gates = [], []
        for e in range(4):
            v = torch.tanh(x @ net.v[i][e])
            v = torch.tanh(v @ net.c[i][e].t())
            outs.append(x0 * (v @ net.u[i][e].t() + net.bias[i]))
            gates.append(x @ net.gate.weight[e])
        weights = torch.stack(gates, 1).softmax(1)
        x = x + sum(weights[:, e:e + 1] * outs[e] for e in range(4))
    assert torch.allclose(net(x0), x, atol=1e-5)


def test_dcnv2_structures_and_bars_parameter_count(tiny_dataset, tiny_batch):
    from loopctr.models.dcnv2 import DCNv2Config

    for structure in ("crossnet_only", "stacked", "parallel", "stacked_parallel"):
        cfg = DCNv2Config(embedding_dim=8, model_structure=structure, stacked_dnn_hidden_units=[16],
                          parallel_dnn_hidden_units=[16], use_low_rank_mixture=structure == "stacked")
        model = build_model("dcnv2", tiny_dataset.schema, tiny_dataset.vocab_sizes, cfg)
        assert model(tiny_batch)["logits"].shape == (64,)
    # the BARS AmazonElectronics_x1 DCNv2 has 5,138,561 parameters, 4,083,584 of them embeddings (63,003 + 803 rows)
    model = build_model("dcnv2", tiny_dataset.schema, {"item_id": 63003, "cate_id": 803})
    assert model.parameter_counts() == {"embedding": 4083584, "dense": 5138561 - 4083584}


def test_bst_matches_the_bars_parameter_count(tiny_dataset):
    model = build_model("bst", tiny_dataset.schema, {"item_id": 63003, "cate_id": 803})
    assert sum(model.parameter_counts().values()) == 5301057  # BST_amazonelectronics_x1 log


def test_dlrm_dot_interaction(flat_data, tiny_dataset):
    from loopctr.data.dataset import PreparedDataset
    from loopctr.layers.interaction import dot_interaction

    v = torch.randn(2, 5, 4)
    out = dot_interaction(v)
    assert out.shape == (2, 5 * 4 // 2)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert torch.allclose(out, torch.stack([(v[:, i] * v[:, j]).sum(-1) for i, j in pairs], dim=1), atol=1e-6)
    # 3 categorical fields + the bottom-MLP vector of the 2 numeric fields: n = 4, 6 products (+ the dense vector)
    data = PreparedDataset(flat_data)
    model = build_model("dlrm", data.schema, data.vocab_sizes, small_config("dlrm"))
    assert model.num_vectors == 4 and model.top.net[0].in_features == 4 * 3 // 2 + 8
    assert model.embedding.numeric is None  # numerics go through the bottom MLP only
    # no numeric field: n = 4 (2 categorical + 2 pooled sequences), no bottom MLP
    model = build_model("dlrm", tiny_dataset.schema, tiny_dataset.vocab_sizes, small_config("dlrm"))
    assert model.bottom is None and model.top.net[0].in_features == 6
    table = model.embedding.tables["item_id"].weight  # the reference DLRM's U(-1/sqrt(n), 1/sqrt(n)) init
    assert table[1:].abs().max() <= table.shape[0] ** -0.5 and table[1:].std() > 0.2 * table.shape[0] ** -0.5
    assert table[0].abs().sum() == 0  # padding row


def test_hstu_attention_is_pointwise_silu_without_softmax():
    from loopctr.layers.hstu import HSTULayer

    torch.manual_seed(0)
    layer = HSTULayer(dim=8, num_heads=2, qk_dim=4, v_dim=4, max_positions=6)
    q, k = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    weights = layer.attention_scores(q, k, mask, None)
    rel = torch.arange(5)[None, :] - torch.arange(5)[:, None]
    expected = torch.nn.functional.silu(q @ k.transpose(-1, -2) + layer.rab.weight[rel + 5]) / 6 * mask
    assert torch.allclose(weights, expected, atol=1e-6)
    rows = weights.sum(-1)
    assert not torch.allclose(rows, torch.ones_like(rows))  # not normalised: no softmax
    assert (weights[..., 0, 1:] == 0).all()  # the mask zeroes (causal) instead of renormalising
    # the U-gate: with U = 0 the layer is the identity (Y = X + W_o(U * LN(AV)) - W_o's bias)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        layer.out.bias.zero_()
        layer.uqvk.weight[:8].zero_()
        layer.uqvk.bias[:8].zero_()  # SiLU(0) = 0
    assert torch.allclose(layer(x, mask), x)


def test_wukong_layer_fmb_lcb_residual_layernorm():
    from loopctr.layers.interaction import WukongLayer

    torch.manual_seed(0)
    layer = WukongLayer(num_in=5, dim=4, num_fmb=3, num_lcb=2, rank=2, hidden_units=[8])
    assert layer.residual is None and layer.lcb.bias is None  # 3 + 2 = 5 tokens: identity residual
    x = torch.randn(6, 5, 4)
    fm = x @ (x.transpose(1, 2) @ layer.fm_proj)  # the optimised FM: X (X^T Y), (B, n, rank)
    fmb = layer.fmb_mlp(layer.fm_norm(fm.flatten(1))).view(6, 3, 4)
    lcb = torch.einsum("ln,bnd->bld", layer.lcb.weight, x)
    expected = torch.nn.functional.layer_norm(torch.cat([fmb, lcb], 1) + x, (4,))
    assert torch.allclose(layer(x), expected, atol=1e-5)
    grown = WukongLayer(num_in=5, dim=4, num_fmb=4, num_lcb=4, rank=2, hidden_units=[8])
    assert grown.residual is not None and grown(x).shape == (6, 8, 4)


@pytest.mark.parametrize("name,extra", [("bst", ["num_layers=2", "seq_pooling_type=mean"]), ("hstu", []),
                                        ("mtgr", ["sequence_causal=true"]), ("suan", []), ("lightsuan", []),
                                        ("onetrans", [])])
def test_length_chunking_is_exact(name, extra, tiny_dataset, tiny_batch):
    """Encoding rows in groups of similar length (dropping their all-padding columns) changes nothing."""
    torch.manual_seed(0)
    model = build_model(name, tiny_dataset.schema, tiny_dataset.vocab_sizes, small_config(name, *extra)).eval()
    with torch.no_grad():
        for table in model.embedding.parameters():
            table.normal_(0, 0.5)
        model.config.length_chunks = 4
        chunked = model(tiny_batch)["logits"]
        model.config.length_chunks = 1
        plain = model(tiny_batch)["logits"]
    assert plain.std() > 1e-3 and torch.allclose(chunked, plain, atol=1e-5)


def test_mtgr_dynamic_mask(tiny_dataset):
    from loopctr.models.mtgr import CANDIDATE, EVENT

    model = build_model("mtgr", tiny_dataset.schema, tiny_dataset.vocab_sizes, small_config("mtgr"))
    events = torch.tensor([[False, True, True]])
    allowed, types = model.mask(events, n_profile=0)
    allowed = allowed[0, 0]
    cand = (types == CANDIDATE).nonzero().item()
    assert allowed[cand, 1:].all() and not allowed[cand, 0]  # the candidate sees every real token and itself
    assert not allowed[(types == EVENT), cand].any()  # no static token sees the candidate
    assert allowed[1, 2] and allowed[2, 1]  # history is bidirectional (lifelong) by default
    model.config.sequence_causal = True
    causal = model.mask(events, n_profile=0)[0][0, 0]
    assert not causal[1, 2] and causal[2, 1]


def test_onetrans_pyramid_schedule(tiny_dataset):
    from loopctr.models.onetrans import OneTransConfig

    model = build_model("onetrans", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                        OneTransConfig(embedding_dim=8, model_dim=16, num_layers=6))
    model.max_events = 100
    assert model.schedule() == [50, 25, 12, 6, 3, 0]  # the S-token queries per layer
    block, t = model.blocks[0], model.config.ns_tokens
    x, mask = torch.randn(2, 7 + t, 16), torch.ones(2, 7 + t, dtype=torch.bool)
    assert block(x, mask, 25)[0].shape == (2, 7 + t, 16)  # fewer S-tokens than the layer keeps: all of them
    assert block(x, mask, 3)[0].shape == (2, 3 + t, 16)  # the newest 3


def test_fat_field_aware_projections_and_modulation(tiny_dataset, tiny_batch):
    from loopctr.models.fat import FieldAwareAttention

    n = len(tiny_dataset.schema.fields)
    att = FieldAwareAttention(n, 8, 2, 0.0, num_bases=0)
    assert att.q.token_weights().shape == (n, 8, 8) and att.gate.shape == (2, n, n)
    x = torch.randn(3, n, 8)
    with torch.no_grad():  # a large bias on (field 0 -> field 2) makes field 0 attend to field 2 only
        att.bias[:, 0, 2] = 50.0
        out = att(x)
        only_field_2 = att.o(att.v(x)[:, 2])  # every head's attention on field 2's value
    torch.testing.assert_close(out[:, 0], only_field_2)
    assert not torch.allclose(out[:, 2], only_field_2, atol=1e-3)  # the modulation is per (query, key) pair
    with torch.no_grad():  # the field-pair gate scales the scores: a zero gate row attends uniformly
        att.bias.zero_()
        att.gate[:, 1] = 0.0
        uniform = att.o(att.v(x).mean(1))
        torch.testing.assert_close(att(x)[:, 1], uniform)
    cfg = small_config("fat", "num_bases=3")
    model = build_model("fat", tiny_dataset.schema, tiny_dataset.vocab_sizes, cfg)
    assert model(tiny_batch)["logits"].shape == (64,)


def test_config_checks():
    from loopctr.models.dcnv2 import DCNv2Config

    with pytest.raises(UserError, match="model_structure"):
        DCNv2Config(model_structure="sideways").validate()
    with pytest.raises(UserError, match="num_heads"):
        small_config("fat", "num_heads=3")


# -- the Amazon Beauty reference split, tiny mode ---------------------------------------------------------
@pytest.fixture(scope="module")
def beauty_tiny(tmp_path_factory) -> Path:
    from loopctr.data.prepare import prepare_dataset

    split = shared_data("benchmark_splits", "amazon_beauty")
    root = tmp_path_factory.mktemp("beauty")
    for name, rows in (("train", 3000), ("valid", 1000), ("test", 1000)):
        with open(split / f"{name}.csv") as src:
            lines = [next(src) for _ in range(rows + 1)]
        (root / f"{name}.csv").write_text("".join(lines))
    prepare_dataset("amazon-electronics-x1", root / "prepared", source_dir=root, log=lambda *a: None)
    return root / "prepared"


@pytest.mark.parametrize("name", BASELINES)
def test_amazon_beauty_tiny_mode(name, beauty_tiny, tmp_path):
    assert cli_train(beauty_tiny, tmp_path / name, name, "batch_size=256", "max_len=50") == 0
    report = json.loads((tmp_path / name / "metrics.json").read_text())
    assert report["rows_train"] == 3000 and report["params_embedding"] > 0 and report["params_dense"] > 0


# -- benchmarks/bench.py ---------------------------------------------------------------------------------
def test_bench_runs_models_over_seeds_and_prints_a_leaderboard(tiny_data, tmp_path, capsys):
    bench = load_script("bench")
    settings = [*FAST[1:], "dcnv2:parallel_dnn_hidden_units=[16]", "dnn:hidden_units=[16]"]
    quiet = lambda *a: None  # noqa: E731
    rows = bench.run_bench(["dnn", "dcnv2"], tiny_data, [1, 2], tmp_path / "out", settings, epochs=1, log=quiet)
    assert [(r["model"], r["seed"]) for r in rows] == [("dnn", 1), ("dnn", 2), ("dcnv2", 1), ("dcnv2", 2)]
    results = tmp_path / "out" / "results.jsonl"
    assert len(bench.load_results(results)) == 4
    # finished runs are not trained again, nor appended twice
    assert bench.run_bench(["dnn"], tiny_data, [1], tmp_path / "out", settings, epochs=1, log=quiet) == []
    # a run interrupted after a checkpoint is resumed, not started over
    (Path(rows[0]["run_dir"]) / "metrics.json").unlink()
    said = []
    again = bench.run_bench(["dnn", "dcnv2"], tiny_data, [1], tmp_path / "out", settings, epochs=1, log=said.append)
    assert any("resuming" in line for line in said) and again[0]["auc"] == pytest.approx(rows[0]["auc"])
    table = bench.leaderboard(bench.load_results(results))
    assert "| dnn | 2 |" in table and "| dcnv2 | 2 |" in table and " ± " in table
    assert bench.main(["--results", str(results)]) == 0
    assert "test AUC" in capsys.readouterr().out


def test_bench_named_variants_of_one_model(tiny_data, tmp_path):
    bench = load_script("bench")
    settings = [*FAST[1:], "dnn:hidden_units=[16]", "wide:hidden_units=[32]"]
    quiet = lambda *a: None  # noqa: E731
    rows = bench.run_bench(["dnn", "wide=dnn"], tiny_data, [1], tmp_path / "out", settings, epochs=1, log=quiet)
    assert [(r["model"], r["architecture"]) for r in rows] == [("dnn", "dnn"), ("wide", "dnn")]
    # each variant got its own settings, visible in its parameter count
    assert rows[0]["params_dense"] < rows[1]["params_dense"]
    assert bench.run_name("loopctr(1/3)") == "loopctr-1-3"
    table = bench.leaderboard(bench.load_results(tmp_path / "out" / "results.jsonl"))
    assert "| wide | 1 |" in table and "| dnn | 1 |" in table


def test_summarize_tables_over_seeds_and_depths(tmp_path, capsys):
    summarize = load_script("summarize")
    for seed, (auc1, auc2, oracle) in ((1, (0.80, 0.81, 0.83)), (2, (0.82, 0.81, 0.85))):
        run = tmp_path / f"loopctr-1-3-s{seed}"
        run.mkdir()
        metrics = {"auc": auc1, "gauc": 0.7, "logloss": 0.5, "ne": 0.8, "valid": {"auc": 0.9}, "best_epoch": seed,
                   "epochs_run": 2, "params_dense": 10, "params_embedding": 20, "train_samples_per_s": 100.0,
                   "eval_samples_per_s": 200.0}
        (run / "metrics.json").write_text(json.dumps(metrics))
        report = {"by_depth": [{"depth": 1, "auc": auc1}, {"depth": 2, "auc": auc2}],
                  "oracle": {"auc": oracle, "headroom_auc": oracle - auc1, "depth_share": [0.5 + seed / 10, 0.5 - seed / 10]}}
        (run / "eval.json").write_text(json.dumps(report))
    summarize.main(str(tmp_path))
    out = capsys.readouterr().out
    assert "| loopctr-1-3 | 2 | 0.8100 ± 0.0141 |" in out  # test AUC over the two seeds
    assert "| loopctr-1-3 | 2 | 0.8100 ± 0.0141 | 0.8100 ± 0.0000 | 0.8400 ± 0.0141 | 0.0300 ± 0.0000 | 0.65 / 0.35 |" in out
    assert "- loopctr-1-3: 0.8000 / 0.8200 (seeds 1, 2)" in out  # per-seed test AUC, in seed order
    assert "- loopctr-1-3: 0.0300 / 0.0300 (seeds 1, 2)" in out  # per-seed oracle headroom
    assert "| 1 / 2, 2 / 2 |" in out  # best epoch / epochs run
    assert "Still improving at the budget's last epoch: loopctr-1-3 seeds 2" in out
    # a dataset without a group column (Frappe) has no gAUC: the cell reads "-"
    ungrouped = tmp_path / "ungrouped" / "dnn-s1"
    ungrouped.mkdir(parents=True)
    metrics = json.loads((tmp_path / "loopctr-1-3-s1" / "metrics.json").read_text())
    del metrics["gauc"]
    (ungrouped / "metrics.json").write_text(json.dumps(metrics))
    summarize.main(str(ungrouped.parent))
    assert "| dnn | 1 | 0.8000 | - | 0.5000 | 0.8000 |" in capsys.readouterr().out


def test_fuxictr_parity_arguments(tmp_path, monkeypatch):
    parity = load_script("fuxictr_parity")
    split = tmp_path / "split"
    split.mkdir()
    for name in ("train", "valid", "test"):
        (split / f"{name}.csv").write_text("label,user_id,item_id,cate_id,item_history,cate_history\n"
                                           + "1,1,2,3,4,5\n" * 10)
    monkeypatch.delenv("FUXICTR_MODEL_ZOO", raising=False)
    with pytest.raises(SystemExit):  # FuxiCTR's model zoo is required unless --skip-fuxictr
        parity.parse_args(["--split", str(split), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        parity.parse_args(["--split", str(split), "--out", str(tmp_path / "o"), "--models", "din,nope",
                           "--skip-fuxictr"])
    zoo = tmp_path / "zoo"
    for model in ("DIN", "DCNv2"):
        (zoo / model / "src").mkdir(parents=True)
    monkeypatch.setenv("FUXICTR_MODEL_ZOO", str(zoo))
    args = parity.parse_args(["--split", str(split), "--out", str(tmp_path / "o"), "--rows", "3"])
    assert args.models == ["din", "dcnv2"] and args.zoo == zoo
    subset = parity.subset_split(split, 3, tmp_path / "sub")
    assert len((subset / "train.csv").read_text().splitlines()) == 4  # header + 3 rows


def test_lightsuan_with_a_full_window_is_suan(tiny_dataset, tiny_batch):
    """window >= the token count makes the sparse pattern full causal attention: SUAN's outputs, same weights;
    the default window then changes them."""
    torch.manual_seed(0)
    suan = build_model("suan", tiny_dataset.schema, tiny_dataset.vocab_sizes, small_config("suan", "num_layers=2"))
    light = build_model("lightsuan", tiny_dataset.schema, tiny_dataset.vocab_sizes,
                        small_config("lightsuan", "num_layers=2", "window=1000"))
    with torch.no_grad():
        for table in suan.embedding.parameters():
            table.normal_(0, 0.5)
    light.load_state_dict(suan.state_dict())
    suan.eval(), light.eval()
    with torch.no_grad():
        expected = suan(tiny_batch)["logits"]
        torch.testing.assert_close(light(tiny_batch)["logits"], expected, atol=1e-5, rtol=1e-5)
        light.config.window, light.config.dilation = 2, 3
        assert (light(tiny_batch)["logits"] - expected).abs().max() > 1e-4
