"""Golden outputs of every registered model: a guard rail for refactors that must not change what models compute.

`record` builds every model (small configs, fixed seeds) on two Amazon-like schemas (histories padded "pre";
padded "post" plus a numeric field) and a few fixed batches (mixed, empty, full-length histories, one row,
300 rows), and saves the inputs, schemas, configs and outputs in DIR/golden.pt: eval logits, per-depth logits
(models with depths), and one training step's loss and parameter gradients. `compare` rebuilds the same models
from that file alone, feeds them the same inputs and prints a markdown table of the differences (exit status 1
on any failure). `short-runs` trains every model for one epoch on the built-in synthetic dataset and saves test
AUC and logloss in DIR/short_runs.json; `compare --short-runs NEWDIR` trains them again into NEWDIR and
compares the two.

    python benchmarks/golden.py record DIR
    python benchmarks/golden.py short-runs DIR
    python benchmarks/golden.py compare DIR [--atol 1e-5] [--rtol 1e-4] [--short-runs NEWDIR]

Every model call goes through `model_input` (and `eval_with_depths`), the one place to adapt when the models'
input changes from the padded batch dict to another type.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from loopctr.data.schema import schema_from_dict  # noqa: E402
from loopctr.errors import UserError  # noqa: E402
from loopctr.models import MODELS, build_model  # noqa: E402

SETTINGS = {"build_seed": 0, "train_seed": 1, "embedding_std": 0.5, "eval_depths": 3}
VOCAB, MAX_LEN = 50, 12
SMALL = {  # on top of embedding_dim=8 and every dropout at 0
    "bst": {"num_heads": 2, "dnn_hidden_units": [16]},
    "dcnv2": {"stacked_dnn_hidden_units": [16], "parallel_dnn_hidden_units": [16], "low_rank": 4},
    "din": {"dnn_hidden_units": [16], "attention_hidden_units": [16]},
    "dlrm": {"bottom_mlp_units": [16], "top_mlp_units": [16]},
    "dnn": {"hidden_units": [16]},
    "fat": {"ffn_hidden_dim": 16, "dnn_hidden_units": [16]},
    "hstu": {"model_dim": 16, "qk_dim": 8, "v_dim": 8, "dnn_hidden_units": [16]},
    "loopctr": {"d_model": 16, "n_heads": 2, "ffn_hidden": 16, "head_hidden_units": [16], "train_loops": 2},
    "mtgr": {"model_dim": 16, "qk_dim": 8, "v_dim": 8, "dnn_hidden_units": [16]},
    "onetrans": {"model_dim": 16, "num_heads": 2, "dnn_hidden_units": [16]},
    "suan": {"dnn_hidden_units": [16]},
    "wukong": {"fmb_hidden_units": [16], "fmb_tokens": 4, "lcb_tokens": 4, "dnn_hidden_units": [16]},
}
BATCHES = {"mixed": (40, None), "empty": (40, 0), "full": (40, MAX_LEN), "one_row": (1, 5), "large": (300, None)}
SYNTHETIC = ["users=150", "items=300", "categories=10", "cluster_size=5", "min_events=4", "max_events=10"]
SHORT_RUN = ["epochs=1", "threads=1", "batch_size=256", "seed=1", "device=cpu"]


# -- the adaptation point: how the models take their input ------------------------------------------------
def model_input(batch: dict, schema):
    """What the models take for a padded batch dict: the dict itself, or `loopctr.data.batch.Batch.from_padded`
    once that exists."""
    if importlib.util.find_spec("loopctr.data.batch") is not None:
        batch_class = getattr(importlib.import_module("loopctr.data.batch"), "Batch", None)
        if callable(getattr(batch_class, "from_padded", None)):
            return batch_class.from_padded(batch, schema)
    return batch


def labels_of(inputs) -> torch.Tensor:
    return inputs["_label"] if isinstance(inputs, dict) else inputs.label


def eval_with_depths(model, inputs, k: int) -> dict:
    """Eval outputs with `logits_by_depth` for depths 1..k."""
    if hasattr(model, "set_eval_depths"):
        model.set_eval_depths(k)
        return model(inputs)
    return model(inputs, depths=list(range(1, k + 1)))


# -- what is recorded ---------------------------------------------------------------------------------------
def schema_dicts() -> dict[str, dict]:
    def history(name, vocab, padding):
        return {"name": name, "type": "sequence", "share_vocab": vocab, "max_len": MAX_LEN, "padding": padding}

    fields = [{"name": n, "type": "categorical"} for n in ("user_id", "item_id", "cate_id")]
    pre = fields + [history("item_history", "item_id", "pre"), history("cate_history", "cate_id", "pre")]
    post = fields + [history("item_history", "item_id", "post"), history("cate_history", "cate_id", "post"),
                     {"name": "price", "type": "numeric"}]
    return {"pre": {"name": "amazon-like", "label": "label", "group": "user_id", "fields": pre},
            "post_numeric": {"name": "amazon-like-post", "label": "label", "group": "user_id", "fields": post}}


def make_batch(schema, rows: int, length: int | None, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A padded batch as the loader makes it; `length` None: every row's history length uniform in 0..MAX_LEN."""
    lengths = rng.integers(0, MAX_LEN + 1, rows) if length is None else np.full(rows, length)
    width = max(1, int(lengths.max()))
    batch = {"_label": torch.from_numpy(rng.integers(0, 2, rows).astype(np.float32))}
    for f in schema.fields:
        if f.type == "categorical":
            batch[f.name] = torch.from_numpy(rng.integers(2, VOCAB, rows).astype(np.int32))
        elif f.type == "numeric":
            batch[f.name] = torch.from_numpy(rng.random(rows).astype(np.float32))
        else:
            ids = np.zeros((rows, width), dtype=np.int32)
            for i, n in enumerate(lengths):
                cols = slice(width - n, width) if f.padding == "pre" else slice(0, n)
                ids[i, cols] = rng.integers(2, VOCAB, n)
            batch[f.name] = torch.from_numpy(ids)
    return batch


# settings that were removed from the code, with the value that the code now always behaves as: a recording
# made with that value still compares
REMOVED_SETTINGS = {"reference_attention": False, "pack_tokens": True}


def small_config(name: str) -> dict:
    cls = MODELS[name].config_class
    dropouts = {f.name: 0.0 for f in dataclasses.fields(cls) if "dropout" in f.name}
    return dataclasses.asdict(cls(**{"embedding_dim": 8, **dropouts, **SMALL[name]}))


def build(name: str, schema, vocab_sizes: dict, config: dict, settings: dict):
    """The model, seeded, with embeddings spread out (N(0, embedding_std), padding rows zero) so that outputs
    and gradients depend visibly on every input id."""
    cls = MODELS[name].config_class
    known = {f.name for f in dataclasses.fields(cls)}
    removed = {k: v for k, v in config.items() if k not in known}
    if any(REMOVED_SETTINGS.get(k, object()) != v for k, v in removed.items()):
        raise ValueError(f"{name}: recorded with settings the code no longer has: {removed}")
    torch.manual_seed(settings["build_seed"])
    model = build_model(name, schema, vocab_sizes, cls(**{k: v for k, v in config.items() if k in known}))
    with torch.no_grad():
        for table in (m for m in model.modules() if isinstance(m, nn.Embedding)):
            table.weight.normal_(0, settings["embedding_std"])
            if table.padding_idx is not None:
                table.weight[table.padding_idx].zero_()
    return model


def train_mode(model, rows: int) -> None:
    model.train()
    if rows == 1:  # batch statistics of a single row are undefined: BatchNorm uses its running statistics
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def outputs_of(model, batch: dict, schema, settings: dict) -> dict:
    """Eval logits (and per-depth logits), then one training step's loss and gradients."""
    model.eval()
    with torch.no_grad():
        inputs = model_input({k: v.clone() for k, v in batch.items()}, schema)
        logits = model(inputs)["logits"]
        by_depth = (eval_with_depths(model, inputs, settings["eval_depths"])["logits_by_depth"]
                    if model.trained_depths() is not None else None)
    train_mode(model, batch["_label"].shape[0])
    inputs = model_input({k: v.clone() for k, v in batch.items()}, schema)
    torch.manual_seed(settings["train_seed"])
    loss, _ = model.loss(model(inputs), labels_of(inputs))
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}
    return {"logits": logits, "logits_by_depth": by_depth, "loss": loss.detach(), "grads": grads}


def run_case(name, schema, vocab_sizes, config, batch, settings) -> dict:
    try:
        model = build(name, schema, vocab_sizes, config, settings)
    except UserError as exc:
        return {"refused": str(exc)}
    return {"refused": None, **outputs_of(model, batch, schema, settings)}


def record(out_dir: Path) -> None:
    schemas = schema_dicts()
    inputs = {}
    for s, (sname, raw) in enumerate(schemas.items()):
        schema = schema_from_dict(raw)
        inputs[sname] = {bname: make_batch(schema, rows, length, np.random.default_rng([s, b]))
                         for b, (bname, (rows, length)) in enumerate(BATCHES.items())}
    golden = {"settings": SETTINGS, "schemas": schemas, "inputs": inputs, "results": {},
              "vocab_sizes": dict.fromkeys(("user_id", "item_id", "cate_id"), VOCAB),
              "configs": {name: small_config(name) for name in sorted(MODELS)}}
    for key, case in cases(golden):
        golden["results"][key] = result = run_case(*case)
        print(f"{key}: " + (f"refused ({result['refused']})" if result["refused"] else "ok"))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(golden, out_dir / "golden.pt")


def cases(golden: dict):
    """("model/schema/batch", run_case's arguments) for every model and input of a golden file."""
    for name, config in golden["configs"].items():
        for sname, raw in golden["schemas"].items():
            schema = schema_from_dict(raw)
            for bname, batch in golden["inputs"][sname].items():
                yield (f"{name}/{sname}/{bname}",
                       (name, schema, golden["vocab_sizes"], config, batch, golden["settings"]))


# -- comparison ----------------------------------------------------------------------------------------------
def max_diff(old, new, atol: float, rtol: float) -> tuple[float, bool]:
    """Max abs difference and whether the tensors are close (None twice: 0, close; shapes differ: inf)."""
    if old is None or new is None or old.shape != new.shape:
        return (0.0, True) if old is None and new is None else (float("inf"), False)
    diff = (old - new).abs().max().item() if old.numel() else 0.0
    return diff, torch.allclose(new, old, rtol=rtol, atol=atol)


def compare_case(old: dict, new: dict, atol: float, rtol: float) -> list[str]:
    """One table row's cells after (model, schema, batch)."""
    if old["refused"] or new["refused"]:
        same = bool(old["refused"]) == bool(new["refused"])
        return [f"refused: {new['refused'] or '-'}"] + ["-"] * 4 + ["PASS" if same else "FAIL"]
    cells, ok = [], True
    for key in ("logits", "logits_by_depth", "loss"):
        diff, close = max_diff(old[key], new[key], atol, rtol)
        cells.append("-" if old[key] is None and new[key] is None else f"{diff:.3g}")
        ok &= close
    names = sorted(set(old["grads"]) | set(new["grads"]))
    presence = [n for n in names if (old["grads"].get(n) is None) != (new["grads"].get(n) is None)]
    diffs = [max_diff(old["grads"][n], new["grads"][n], atol, rtol) for n in names
             if n not in presence and old["grads"][n] is not None]
    cells.append(f"{max((d for d, _ in diffs), default=0.0):.3g}")
    cells.append(", ".join(presence) or "-")
    ok &= not presence and all(close for _, close in diffs)
    return cells + ["PASS" if ok else "FAIL"]


def compare(golden_dir: Path, atol: float, rtol: float, short_runs_dir: Path | None) -> bool:
    golden = torch.load(golden_dir / "golden.pt", weights_only=True)
    print("| model | schema | batch | logits | logits_by_depth | loss | grads | grad presence differs | result |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for key, case in cases(golden):
        try:
            cells = compare_case(golden["results"][key], run_case(*case), atol, rtol)
        except Exception as exc:  # a crash of the new code is one failed row, not the end of the table
            cells = [f"error: {type(exc).__name__}: {exc}"] + ["-"] * 4 + ["FAIL"]
        ok &= cells[-1] == "PASS"
        print("| " + " | ".join([*key.split("/"), *cells]) + " |")
    if short_runs_dir is not None and (golden_dir / "short_runs.json").exists():
        old = json.loads((golden_dir / "short_runs.json").read_text())
        new = short_runs(short_runs_dir, {name: run["overrides"] for name, run in old.items()})
        ok &= compare_short_runs(old, new)
    return ok


# -- one-epoch training runs -----------------------------------------------------------------------------------
def short_run_overrides(name: str) -> list[str]:
    """The small settings, with every dropout at 0: dropout masks are drawn per length group, so their random
    numbers (and the trajectory) would change with how rows are grouped, which the refactor may change."""
    dropouts = [f"model.{f.name}=0.0" for f in dataclasses.fields(MODELS[name].config_class) if "dropout" in f.name]
    return [f"model.{k}={json.dumps(v)}" for k, v in SMALL[name].items()] + ["model.embedding_dim=8", *dropouts,
                                                                            *SHORT_RUN]


def short_runs(out_dir: Path, overrides: dict[str, list[str]] | None = None) -> dict:
    """Train every model (of `overrides`, default all with `short_run_overrides`) for one epoch on the synthetic
    dataset into out_dir; write out_dir/short_runs.json (test AUC, logloss and the overrides) and return it."""
    from loopctr.data.prepare import prepare_dataset
    from loopctr.train.trainer import train

    overrides = overrides or {name: short_run_overrides(name) for name in sorted(MODELS)}
    quiet = lambda *a: None  # noqa: E731
    prepare_dataset("synthetic", out_dir / "data", synthetic_overrides=SYNTHETIC, log=quiet)
    results = {}
    for name, settings in overrides.items():
        report = train(out_dir / "data", out_dir / "runs" / name, name, overrides=settings, log=quiet)
        results[name] = {"auc": report["auc"], "logloss": report["logloss"], "overrides": settings}
        print(f"{name}: auc {report['auc']:.6f} logloss {report['logloss']:.6f}")
    (out_dir / "short_runs.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def compare_short_runs(old: dict, new: dict, tol: float = 1e-4) -> bool:
    """Print a table of the two runs' test AUC and logloss; True when every model's agree within `tol`."""
    print("\n| model | AUC before | AUC after | AUC diff | logloss diff | result |\n|---|---|---|---|---|---|")
    ok = True
    for name in old:
        auc_diff = abs(new[name]["auc"] - old[name]["auc"])
        loss_diff = abs(new[name]["logloss"] - old[name]["logloss"])
        passed = auc_diff <= tol and loss_diff <= tol
        ok &= passed
        print(f"| {name} | {old[name]['auc']:.6f} | {new[name]['auc']:.6f} | {auc_diff:.2g} | {loss_diff:.2g} | "
              f"{'PASS' if passed else 'FAIL'} |")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("record").add_argument("dir", type=Path)
    sub.add_parser("short-runs").add_argument("dir", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("dir", type=Path)
    cmp.add_argument("--atol", type=float, default=1e-5)
    cmp.add_argument("--rtol", type=float, default=1e-4)
    cmp.add_argument("--short-runs", type=Path, help="train the short runs again into this (new) directory and "
                                                     "compare them with DIR/short_runs.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "record":
        record(args.dir)
    elif args.command == "short-runs":
        short_runs(args.dir)
    else:
        return 0 if compare(args.dir, args.atol, args.rtol, args.short_runs) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
