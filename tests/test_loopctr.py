import json

import pytest
import torch

from loopctr.cli.main import main
from loopctr.data.batch import Batch
from loopctr.data.schema import schema_from_dict
from loopctr.errors import UserError
from loopctr.models import build_model
from loopctr.models.loopctr import LoopCTRConfig
from loopctr.train.config import build_run_config


SMALL = dict(embedding_dim=8, d_model=16, n_heads=2, ffn_hidden=16, head_hidden_units=[16])
SMALL_OVERRIDES = ["embedding_dim=8", "d_model=16", "n_heads=2", "ffn_hidden=16", "head_hidden_units=[16]"]


def small(dataset, **kwargs):
    torch.manual_seed(0)
    return build_model("loopctr", dataset.schema, dataset.vocab_sizes, LoopCTRConfig(**{**SMALL, **kwargs}))


def field_schema():
    """A schema without any sequence, with a numeric field (Frappe-like)."""
    return schema_from_dict({"name": "fields", "label": "label", "fields": [
        {"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
        {"name": "hour", "type": "categorical"}, {"name": "price", "type": "numeric"}]})


def field_batch(b=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = {name: torch.randint(1, 20, (b,), generator=g, dtype=torch.int32) for name in ("user", "item", "hour")}
    features["price"] = torch.rand(b, generator=g)
    return Batch((torch.rand(b, generator=g) < 0.4).float(), features)


def test_shapes_in_training_and_eval(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, train_loops=3, infer_loops=1)
    b = tiny_batch.label.shape[0]
    out = model(tiny_batch)
    assert out["logits"].shape == (b,) and out["logits_by_depth"].shape == (3, b)
    assert out["aux_loss"].ndim == 0
    torch.testing.assert_close(out["logits"], out["logits_by_depth"][-1])
    model.eval()
    with torch.no_grad():
        out = model(tiny_batch)
        assert out["logits_by_depth"].shape == (1, b)
        deep = model(tiny_batch, depths=[1, 2, 3, 4, 5])
        some = model(tiny_batch, depths=[4, 2])
    assert deep["logits_by_depth"].shape == (5, b)
    torch.testing.assert_close(deep["logits"], deep["logits_by_depth"][-1])  # the deepest asked
    torch.testing.assert_close(deep["logits_by_depth"][0], out["logits"])
    torch.testing.assert_close(some["logits_by_depth"], deep["logits_by_depth"][[1, 3]])
    with pytest.raises(UserError):
        model(tiny_batch, depths=[0])
    with pytest.raises(UserError):
        model.train()(tiny_batch, depths=[1])


ALL_ON = dict(hc_mode="hc", hc_placement="layer", moe_loop_router=True, moe_top_k=2, cls_token=True, readout_pool=True, n_encode=2,
              n_decode=2, n_loop_layers=2, loop_state_norm=True)


@pytest.mark.parametrize("kwargs", [{}, ALL_ON, dict(hc_placement="layer")])
def test_gradients_reach_every_parameter(tiny_dataset, tiny_batch, kwargs):
    model = small(tiny_dataset, **kwargs)
    loss, parts = model.loss(model(tiny_batch), tiny_batch.label)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    dead = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0 and "embedding" not in n]
    if kwargs.get("hc_mode") == "hc":  # HC's dynamic map starts at 0, so its scales start without a gradient
        dead = [n for n in dead if not n.endswith(".alpha")]
    assert not dead
    assert set(parts) >= {"bce", "bce_1", "bce_2", "bce_3", "aux"}


def test_parameter_count_is_independent_of_loop_counts(tiny_dataset):
    counts = {small(tiny_dataset, train_loops=t, infer_loops=i).parameter_counts()["dense"]
              for t, i in [(1, 1), (3, 1), (4, 4), (2, 6)]}
    assert len(counts) == 1
    counts = {small(tiny_dataset, train_loops=t, moe_loop_router=True).parameter_counts()["dense"] for t in (1, 5)}
    assert len(counts) == 1


def test_default_model_size(tiny_dataset):
    model = build_model("loopctr", tiny_dataset.schema, tiny_dataset.vocab_sizes)
    assert 0.4e6 <= model.parameter_counts()["dense"] <= 1.5e6


def test_inference_runs_exactly_infer_loops_passes(tiny_dataset, tiny_batch):
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for infer in (1, 2, 3):
        model = small(tiny_dataset, train_loops=3, infer_loops=infer).eval()
        before = model.loop_calls
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(tiny_batch)
        assert model.loop_calls - before == infer
        flops[infer] = counter.get_total_flops()
    assert flops[1] < flops[2] < flops[3]
    assert abs((flops[3] - flops[2]) - (flops[2] - flops[1])) <= 0.01 * flops[1]  # linear in infer_loops
    model = small(tiny_dataset, train_loops=4).train()
    before = model.loop_calls
    model(tiny_batch)
    assert model.loop_calls - before == 4


def test_determinism_under_a_seed(tiny_dataset, tiny_batch):
    outs = []
    for _ in range(2):
        model = small(tiny_dataset)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        torch.manual_seed(1)
        for _ in range(2):
            loss, _ = model.loss(model(tiny_batch), tiny_batch.label)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            outs.append(model(tiny_batch)["logits"])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_the_padded_layout_gives_the_loaders_predictions(tiny_dataset, tiny_batch):
    """The loader's jagged batch, and the same rows through the padded layout on either side (exported
    programs' inputs), give the same logits at every depth."""
    import dataclasses

    model = small(tiny_dataset, train_loops=2, readout_pool=True).eval()
    with torch.no_grad():
        expected = model(tiny_batch, depths=[1, 2])["logits_by_depth"]
        for side in ("pre", "post"):
            schema = dataclasses.replace(tiny_dataset.schema, fields=tuple(
                dataclasses.replace(f, padding=side) for f in tiny_dataset.schema.fields))
            padded = tiny_batch.to_padded(schema)
            assert padded["item_history"].shape[1] == int(tiny_batch.jagged("item_history").lengths.max())
            got = model(Batch.from_padded(padded, schema), depths=[1, 2])["logits_by_depth"]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, dict(attention_mask="causal", hc_placement="layer", readout_pool=True),
                                    dict(attention_mask="target_aware", seq_grouping="separate", n_decode=0),
                                    dict(n_decode=2, hc_mode="none")])
def test_attention_in_length_groups_is_exact(tiny_dataset, kwargs, monkeypatch):
    import loopctr.models.loopctr as module
    from loopctr.data.loader import BatchLoader

    layouts = []
    make_layout = module.PackedTokens
    monkeypatch.setattr(module, "PackedTokens", lambda *args: layouts.append(make_layout(*args)) or layouts[-1])

    batch = next(iter(BatchLoader(tiny_dataset.split("train"), 300, shuffle=True, seed=1).batches()))
    lengths = batch.jagged("item_history").lengths
    assert lengths.min() < lengths.max()  # mixed lengths, so that the groups' grids differ
    outs, grads = [], []
    for groups in (1, 4):
        model = small(tiny_dataset, attention_groups=groups, train_loops=2, **kwargs)
        out = model(batch)
        model.loss(out, batch.label)[0].backward()
        outs.append(out["logits_by_depth"].detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
        if groups > 1:  # 300 samples: 4 grids, each of at least 64 samples, narrower than the whole batch
            grids = layouts[-1].grids
            assert len(grids) == 4 and min(g.shape[1] for g in grids) < layouts[-1].layout.width
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, dict(ns_tokenizer="auto_split", ns_tokens=2), dict(hc_placement="layer")])
def test_schema_without_sequences_and_with_numeric_fields(kwargs):
    schema = field_schema()
    torch.manual_seed(0)
    model = build_model("loopctr", schema, {"user": 20, "item": 20, "hour": 20},
                        LoopCTRConfig(**{**SMALL, **kwargs}))
    assert model.tokenizer.use_cls and model.tokenizer.n_readout == 1
    batch = field_batch()
    out = model(batch)
    assert out["logits_by_depth"].shape == (3, 32)
    model.loss(out, batch.label)[0].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_separate_sequence_groups_and_target_aware_history(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, seq_grouping="separate", attention_mask="target_aware")
    assert len(model.tokenizer.groups) == 2 and model.tokenizer.n_readout == 2
    out = model(tiny_batch)
    assert torch.isfinite(out["logits_by_depth"]).all()


def test_non_sequence_readout_reads_every_field_token():
    """readout=non_sequence: every NS-token goes to the head (no CLS needed without a target), and with padded
    histories the packed forward pass gives the unpacked one's logits."""
    schema = field_schema()
    torch.manual_seed(0)
    model = build_model("loopctr", schema, {"user": 20, "item": 20, "hour": 20},
                        LoopCTRConfig(**SMALL, readout="non_sequence"))
    assert not model.tokenizer.use_cls and model.tokenizer.n_readout == 4  # user, item, hour, price
    assert model.head.net[0].in_features == 4 * SMALL["d_model"]
    batch = field_batch()
    out = model(batch)
    model.loss(out, batch.label)[0].backward()
    assert all(p.grad is not None for p in model.parameters())

    # with a behaviour sequence (padded) beside the NS-tokens: packing stays exact
    schema = schema_from_dict({"name": "seq", "label": "label", "fields": [
        {"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
        {"name": "history", "type": "sequence", "share_vocab": "item", "max_len": 6}]})
    g = torch.Generator().manual_seed(1)
    padded = {"user": torch.randint(1, 20, (16,), generator=g), "item": torch.randint(1, 20, (16,), generator=g),
              "history": torch.randint(1, 20, (16, 6), generator=g),
              "_label": (torch.rand(16, generator=g) < 0.5).float()}
    padded["history"][torch.arange(6) < 6 - torch.randint(1, 7, (16, 1), generator=g)] = 0  # lengths 1..6
    batch = Batch.from_padded(padded, schema)
    torch.manual_seed(0)
    model = build_model("loopctr", schema, {"user": 20, "item": 20},
                        LoopCTRConfig(**SMALL, readout="non_sequence", train_loops=2)).eval()
    assert model.tokenizer.n_readout == 2  # the user token and the target token
    with torch.no_grad():  # every row's prediction is its own, alone or beside rows of other lengths
        together = model(batch, depths=[1, 2])["logits_by_depth"]
        alone = torch.cat([model(batch.select(torch.tensor([i])), depths=[1, 2])["logits_by_depth"]
                           for i in range(16)], dim=1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


ABLATIONS = [
    "hc_mode=none", "hc_mode=hc", "hc_placement=layer", "hc_placement=layer,hc_mode=hc", "hc_dynamic=false",
    "n_streams=1",
    "n_experts=1", "moe_shared_expert=false", "moe_top_k=2", "moe_loop_router=true", "moe_aux_weight=0",
    "supervision=final", "supervision=increasing", "depth_temperature=2.0", "train_loops=1", "n_encode=0",
    "n_decode=0", "readout_pool=true", "readout=non_sequence", "cls_token=true", "position_embedding=false",
    "type_embedding=false",
    "attention_mask=target_aware", "attention_mask=causal", "seq_grouping=separate", "ns_tokenizer=auto_split",
    "loop_state_norm=true", "dropout=0.1", "sinkhorn_iters=3", "embedding_norm=true",
    "loop_embedding=true", "input_injection=true", "loop_sampling=random", "distill_weight=0.5",
    "loop_embedding=true,input_injection=true,hc_placement=layer",
]


def _switch_signature(schema, vocab_sizes, batch, overrides):
    """What a switch can change: the parameter shapes, a training loss and the inference logits (fixed seeds)."""
    run = build_run_config("loopctr", overrides=SMALL_OVERRIDES + overrides)
    torch.manual_seed(0)
    model = build_model("loopctr", schema, vocab_sizes, run.model)
    torch.manual_seed(1)
    loss, _ = model.loss(model(batch), batch.label)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        logits = model(batch)["logits"]
    assert torch.isfinite(logits).all()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, loss.detach(), logits


# switches of the non-sequence tokens: no-ops where every field is a target or a history (the tiny synthetic
# schema), so they are checked on a schema with context fields
CONTEXT_SWITCHES = {"readout=non_sequence", "ns_tokenizer=auto_split"}


@pytest.mark.parametrize("override", ABLATIONS)
def test_every_switch_builds_trains_and_changes_the_model(tiny_dataset, tiny_batch, override):
    data = ((field_schema(), {"user": 20, "item": 20, "hour": 20}, field_batch()) if override in CONTEXT_SWITCHES
            else (tiny_dataset.schema, tiny_dataset.vocab_sizes, tiny_batch))
    shapes, loss, logits = _switch_signature(*data, override.split(","))
    base_shapes, base_loss, base_logits = _switch_signature(*data, [])
    assert (shapes != base_shapes or not torch.allclose(loss, base_loss, rtol=0, atol=1e-7)
            or not torch.allclose(logits, base_logits, rtol=0, atol=1e-7)), f"{override} changed nothing"


def _zero_loop_updates(model):
    """Make every layer of the loop block a no-op (its branches' output projections zero)."""
    with torch.no_grad():
        for layer in model.loop:
            layer.attn.out.weight.zero_()
            layer.ffn.w_out.zero_()
            layer.ffn.shared.w_out.weight.zero_()


@pytest.mark.parametrize("kwargs", [dict(loop_embedding=True), dict(input_injection=True),
                                    dict(loop_embedding=True, input_injection=True, hc_mode="none")])
def test_loop_conditioning_is_seen_by_the_block_and_never_accumulates(tiny_dataset, tiny_batch, kwargs):
    model = small(tiny_dataset, train_loops=3, **kwargs).eval()
    seen = []
    model.loop[0].norm_attn.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        out = model(tiny_batch, depths=list(range(1, 4)), diagnostics=True)
    assert not torch.allclose(out["logits_by_depth"][0], out["logits_by_depth"][2])
    if model.loop_site is not None:  # the block's input differs between passes
        assert not torch.allclose(seen[0], seen[1])
    _zero_loop_updates(model)
    with torch.no_grad():
        out = model(tiny_batch, depths=list(range(1, 4)), diagnostics=True)
    # a block whose layers change nothing writes nothing, whatever it was conditioned on
    torch.testing.assert_close(out["logits_by_depth"][0], out["logits_by_depth"][2], atol=1e-6, rtol=0)
    if model.loop_site is None:
        torch.testing.assert_close(out["loop_trace"]["update_sq"], torch.zeros(3))


def test_input_injection_adds_the_encoder_output_to_every_pass(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, train_loops=3, hc_mode="none", input_injection=True).eval()
    states, inputs = [], []
    model.loop[0].norm_attn.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    original = model._loop_pass
    model._loop_pass = lambda x, *args: states.append(x) or original(x, *args)
    with torch.no_grad():
        model(tiny_batch, depths=list(range(1, 4)))
    encoded = states[0]  # plain residuals: the loop starts from the encoder output
    for state, block_input in zip(states, inputs):
        torch.testing.assert_close(block_input, state + encoded)


def test_loop_embedding_keeps_the_parameter_count_and_extrapolates(tiny_dataset, tiny_batch):
    counts = {small(tiny_dataset, train_loops=t, loop_embedding=True).parameter_counts()["dense"] for t in (1, 4)}
    assert len(counts) == 1
    model = small(tiny_dataset, train_loops=2, loop_embedding=True).eval()
    with torch.no_grad():
        assert torch.isfinite(model(tiny_batch, depths=list(range(1, 7)))["logits_by_depth"]).all()


def test_random_loop_sampling_draws_every_depth_in_training_only(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, train_loops=3, loop_sampling="random")
    torch.manual_seed(0)
    drawn = [model(tiny_batch)["logits_by_depth"].shape[0] for _ in range(30)]
    assert set(drawn) == {1, 2, 3}
    torch.manual_seed(0)
    assert [model(tiny_batch)["logits_by_depth"].shape[0] for _ in range(30)] == drawn  # from the seeded RNG
    model.eval()
    with torch.no_grad():
        assert {model(tiny_batch)["logits_by_depth"].shape[0] for _ in range(5)} == {1}


def test_self_distillation_teaches_shallow_depths_from_the_detached_deepest(tiny_dataset):
    model = small(tiny_dataset, train_loops=3, distill_weight=0.5, distill_temperature=2.0)
    logits = torch.randn(3, 16, requires_grad=True)
    labels = (torch.rand(16) < 0.5).float()
    loss, parts = model.loss({"logits": logits[-1], "logits_by_depth": logits}, labels)
    loss.backward()
    plain = small(tiny_dataset, train_loops=3)
    base_logits = logits.detach().clone().requires_grad_(True)
    base, _ = plain.loss({"logits": base_logits[-1], "logits_by_depth": base_logits}, labels)
    base.backward()
    teacher = torch.sigmoid(logits.detach()[-1] / 2.0).expand(2, 16)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach()[:2] / 2.0, teacher) * 4.0
    torch.testing.assert_close(parts["distill"], expected)
    torch.testing.assert_close(loss.detach(), base.detach() + 0.5 * expected)
    torch.testing.assert_close(logits.grad[-1], base_logits.grad[-1])  # no gradient into the teacher
    assert not torch.allclose(logits.grad[:2], base_logits.grad[:2])


def test_loop_trace_measures_the_passes(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, train_loops=2, hc_mode="none").eval()
    states = []
    original = model._loop_pass
    model._loop_pass = lambda x, *args: states.append(x) or original(x, *args)
    with torch.no_grad():
        out = model(tiny_batch, depths=list(range(1, 4)), diagnostics=True)
    trace = out["loop_trace"]
    assert set(trace) == {"state_sq", "update_sq", "proposal_sq", "rows"}  # no hyper-connections
    for t in range(2):
        torch.testing.assert_close(trace["state_sq"][t], states[t].square().sum())
        torch.testing.assert_close(trace["update_sq"][t], (states[t + 1] - states[t]).square().sum())
    torch.testing.assert_close(trace["proposal_sq"], trace["update_sq"])  # plain residuals write what they propose
    model = small(tiny_dataset, train_loops=2).eval()  # mHC between passes: coefficients, doubly stochastic H_res
    with torch.no_grad():
        trace = model(tiny_batch, diagnostics=True)["loop_trace"]
    res = trace["hc_res"][0] / trace["rows"][0]
    torch.testing.assert_close(res.sum(0), torch.ones(4), atol=1e-5, rtol=0)
    assert trace["hc_pre"].shape == (1, 4) and trace["hc_post"].shape == (1, 4)


def test_supervision_weights_and_temperature(tiny_dataset):
    model = small(tiny_dataset, train_loops=4)
    torch.testing.assert_close(model.depth_weights(4), torch.full((4,), 0.25))
    model.config.supervision = "increasing"
    torch.testing.assert_close(model.depth_weights(4), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    model.config.supervision = "final"
    torch.testing.assert_close(model.depth_weights(1), torch.tensor([1.0]))
    model.config.depth_temperature = 2.0
    torch.testing.assert_close(model.depth_temperatures([1, 2, 4, 6]), torch.tensor([8.0, 4.0, 1.0, 1.0]))


def test_final_only_supervision_decodes_only_the_last_depth(tiny_dataset, tiny_batch):
    model = small(tiny_dataset, supervision="final", train_loops=3)
    assert model(tiny_batch)["logits_by_depth"].shape[0] == 1
    model.eval()
    with torch.no_grad():
        assert model(tiny_batch, depths=list(range(1, 4)))["logits_by_depth"].shape[0] == 3


def test_config_keys_and_validation():
    run = build_run_config("loopctr", overrides=["train_loops=4", "infer_loops=2", "hc_mode=hc"])
    assert (run.model.train_loops, run.model.infer_loops, run.model.hc_mode) == (4, 2, "hc")
    for bad in (["moe_top_k=7"], ["d_model=30"], ["train_loops=0"], ["hc_mode=sinkhorn"], ["dropout=1.5"]):
        with pytest.raises(UserError):
            build_run_config("loopctr", overrides=bad)


def test_cli_train_then_evaluate_by_depth(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--model", "loopctr", "--out", str(run), "epochs=1", "threads=1",
            "batch_size=256", "train_loops=2", *SMALL_OVERRIDES]
    assert main(args) == 0
    assert main(["evaluate", "--run", str(run), "--depths", "all"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert [d["depth"] for d in report["by_depth"]] == [1, 2, 3, 4]
    diag = report["loop_diagnostics"]
    assert len(diag["relative_update"]) == 4 and all(v > 0 for v in diag["relative_update"])
    assert len(diag["hc_res"]) == 4 and len(diag["hc_res"][0]) == 4  # mHC between passes, 4 streams
    assert report["by_depth"][0]["mean_abs_diff_to_first"] == 0 < report["by_depth"][1]["mean_abs_diff_to_first"]
    assert (run / "depths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"auc", "headroom_auc", "depth_share"} <= set(report["oracle"])
    assert report["oracle"]["auc"] >= max(d["auc"] for d in report["by_depth"]) - 1e-9
    assert abs(report["by_depth"][0]["auc"] - report["auc"]) < 1e-12  # infer_loops=1 is depth 1
    assert "oracle headroom" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(run), "--depths", "1,3"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert [d["depth"] for d in report["by_depth"]] == [1, 3] and len(report["oracle"]["depth_share"]) == 2
    assert main(["evaluate", "--run", str(run), "--depths", "0"]) == 2


def test_depths_refused_for_models_without_depths(tiny_data, tmp_path):
    run = tmp_path / "dnn"
    assert main(["train", "--data", str(tiny_data), "--model", "dnn", "--out", str(run), "epochs=1", "threads=1",
                 "hidden_units=[8]", "batch_size=256"]) == 0
    assert main(["evaluate", "--run", str(run), "--depths", "all"]) == 2


def test_tokens_are_every_rows_own_events_then_its_fixed_tokens(tiny_dataset, tiny_batch):
    """The packed tokens of a row are the same alone and in a batch of rows of other lengths, and a row's
    tokens are its events (oldest first) followed by its fixed tokens."""
    model = small(tiny_dataset)
    lengths = tiny_batch.jagged("item_history").lengths
    row = int(torch.where(lengths >= 3, lengths, 10 ** 6).argmin())  # a short row, with several events
    alone = tiny_batch.select(torch.tensor([row]))
    with torch.no_grad():
        single = model.tokenizer(alone, model.embedding(alone))
        batched = model.tokenizer(tiny_batch, model.embedding(tiny_batch))
    n_fixed = single.n_fixed
    assert single.layout.lengths.tolist() == [int(lengths[row]) + n_fixed] and n_fixed == 1  # the target
    start, end = batched.layout.offsets[row:row + 2].tolist()
    torch.testing.assert_close(single.x, batched.x[start:end])
    # the last event's token is the newest event's projection plus the recency-0 position embedding
    jag = tiny_batch.jagged("item_history")
    newest = int(jag.offsets[row + 1]) - 1
    emb = model.embedding(tiny_batch)
    expected = (model.tokenizer.projections[0](torch.cat([emb["item_history"][newest], emb["cate_history"][newest]]))
                + model.tokenizer.position_emb[0] + model.tokenizer.type_emb[0])
    torch.testing.assert_close(batched.x[end - n_fixed - 1], expected.detach(), atol=1e-6, rtol=1e-5)


def test_embedding_norm_makes_tokens_independent_of_the_embedding_scale(tiny_dataset, tiny_batch):
    """Scaling every embedding table leaves the tokens unchanged with the switch on (and changes them without)."""
    for norm in (False, True):
        model = small(tiny_dataset, embedding_norm=norm).eval()
        with torch.no_grad():
            for p in model.embedding.parameters():  # embeddings of a trained model's size, far above the eps
                p.mul_(1000.0)
            before = model.tokenizer(tiny_batch, model.embedding(tiny_batch)).x
            for p in model.embedding.parameters():
                p.mul_(7.0)
            after = model.tokenizer(tiny_batch, model.embedding(tiny_batch)).x
        assert torch.allclose(before, after, atol=1e-5) == norm


def test_embedding_norm_keeps_the_value_of_numeric_fields():
    import dataclasses

    torch.manual_seed(0)
    model = build_model("loopctr", field_schema(), {"user": 20, "item": 20, "hour": 20},
                        LoopCTRConfig(**SMALL, embedding_norm=True)).eval()
    batch = field_batch()
    doubled = dataclasses.replace(batch, features={**batch.features, "price": batch.features["price"] * 2})
    with torch.no_grad():
        tokens = model.tokenizer(batch, model.embedding(batch)).x.view(32, -1, SMALL["d_model"])
        tokens_doubled = model.tokenizer(doubled, model.embedding(doubled)).x.view(32, -1, SMALL["d_model"])
    price = model.tokenizer.ns_fields.index("price")
    assert not torch.allclose(tokens[:, price], tokens_doubled[:, price])
    others = [i for i in range(tokens.shape[1]) if i != price]
    torch.testing.assert_close(tokens[:, others], tokens_doubled[:, others])
