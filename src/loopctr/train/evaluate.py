"""Predict a split and compute its metrics; with per-depth logits, metrics by depth and the oracle."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from loopctr import metrics as M
from loopctr.atomic import atomic_write_text
from loopctr.data.loader import BatchLoader, sample_rows
from loopctr.errors import UserError
from loopctr.train.distributed import DistEnv, gather_arrays


def autocast(device: torch.device, amp: str):
    if amp == "off":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def predict(model, loader: BatchLoader, env: DistEnv, amp: str = "off", depths: list[int] | None = None,
            diagnostics: bool = False) -> tuple[dict[str, np.ndarray] | None, float]:
    """Probabilities for this split (gathered on rank 0) and the samples/s of this rank's forward passes.
    A looped model: `depths` gives `preds_by_depth` for those depths (`preds` is the last); `diagnostics` (one
    process) also `loop_trace`, the model's per-pass sums over the split."""
    model.eval()
    preds, by_depth, labels, groups = [], [], [], []
    trace: dict[str, torch.Tensor] = {}
    kwargs = {**({"depths": depths} if depths is not None else {}), **({"diagnostics": True} if diagnostics else {})}
    seen, start = 0, time.perf_counter()
    for batch in loader.batches():
        labels.append(batch.label.numpy())
        if batch.group is not None:
            groups.append(batch.group.numpy())
        with autocast(env.device, amp):
            out = model(batch.to(env.device), **kwargs)
        preds.append(torch.sigmoid(out["logits"].float()).cpu().numpy())
        if "logits_by_depth" in out:
            by_depth.append(torch.sigmoid(out["logits_by_depth"].float()).cpu().numpy())
        for key, value in out.get("loop_trace", {}).items():
            trace[key] = trace[key] + value if key in trace else value
        seen += batch.size
    seconds = time.perf_counter() - start
    arrays = {"preds": _cat(preds), "labels": _cat(labels)}
    if groups:
        arrays["groups"] = _cat(groups)
    if by_depth:
        arrays["preds_by_depth"] = np.concatenate(by_depth, axis=1)
    arrays = gather_arrays(env, arrays)
    if trace and arrays is not None:
        arrays["loop_trace"] = {k: v.cpu().numpy() for k, v in trace.items()}
    return arrays, seen / max(seconds, 1e-9)


def loop_diagnostics(trace: dict[str, np.ndarray]) -> dict:
    """Per loop pass t (from a model's summed `loop_trace`): `relative_update` ||x_t - x_(t-1)|| / ||x_(t-1)||
    (what the pass wrote into the state), `relative_proposal` ||u_t|| / ||x_(t-1)|| (the block's own update,
    before hyper-connection mixing), and the mean hyper-connection coefficients H_pre, H_post, H_res."""
    state = np.maximum(trace["state_sq"], 1e-30)
    out = {"relative_update": np.sqrt(trace["update_sq"] / state).tolist(),
           "relative_proposal": np.sqrt(trace["proposal_sq"] / state).tolist()}
    rows = np.maximum(trace["rows"], 1.0)
    for key in ("hc_pre", "hc_post", "hc_res"):
        if key in trace:
            out[key] = (trace[key] / rows.reshape(-1, *[1] * (trace[key].ndim - 1))).tolist()
    return out


def _cat(parts):
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def split_metrics(arrays: dict[str, np.ndarray], depths: list[int] | None = None) -> dict:
    """The standard metrics; with preds_by_depth also `by_depth` and `oracle` (best depth per sample).

    `depths` names the rows of preds_by_depth (default 1, 2, ...); the oracle's headroom is over the first row.
    """
    labels, groups = arrays["labels"], arrays.get("groups")
    out = M.all_metrics(labels, arrays["preds"], groups)
    if "preds_by_depth" in arrays:
        by_depth = arrays["preds_by_depth"]
        names = depths if depths is not None else list(range(1, by_depth.shape[0] + 1))
        out["by_depth"] = [{"depth": d, **M.all_metrics(labels, p, groups),
                            "mean_abs_diff_to_first": float(np.abs(p - by_depth[0]).mean())}
                           for d, p in zip(names, by_depth)]
        best, chosen = M.oracle_predictions(labels, by_depth)
        oracle = M.all_metrics(labels, best, groups)
        oracle["headroom_auc"] = oracle["auc"] - out["by_depth"][0]["auc"]
        oracle["depth_share"] = (np.bincount(chosen, minlength=by_depth.shape[0]) / chosen.shape[0]).tolist()
        out["oracle"] = oracle
    return out


def frequency_slices(data, split: str, spec: str, train_rows: np.ndarray | None = None) -> dict[str, dict]:
    """`spec` "FIELD:N": the rows of `split` whose categorical FIELD (e.g. item_id) occurs fewer than N times in
    the training rows (`train_rows` of the train split, e.g. a run's `train_fraction`; None: all of it) ("cold";
    an OOV id always is) and the others ("warm"), as boolean masks with their rule."""
    name, sep, below = spec.partition(":")
    field = data.schema.field(name) if name in data.schema.field_names else None
    if not sep or field is None or field.type != "categorical" or not below.isdigit() or int(below) < 1:
        raise UserError(f"--cold {spec}: expected FIELD:N, a categorical field of the schema and N >= 1 "
                        f"(e.g. item_id:5)")
    trained = np.asarray(data.split("train").column(name))
    if train_rows is not None:
        trained = trained[train_rows]
    counts = np.bincount(trained, minlength=data.vocab_sizes[field.vocab])
    ids = np.asarray(data.split(split).column(name))
    cold = (counts[ids] < int(below)) | (ids <= 1)
    share = "" if train_rows is None else f" (the {train_rows.shape[0]:,} rows trained on)"
    rule = f"{name} seen fewer than {below} times in train{share}"
    return {"cold": {"rule": rule, "mask": cold}, "warm": {"rule": "the other rows", "mask": ~cold}}


def sliced_metrics(arrays: dict[str, np.ndarray], slices: dict[str, dict]) -> dict:
    """The standard metrics of each slice of the rows (`frequency_slices`), with its row and positive counts."""
    out = {}
    for key, part in slices.items():
        mask = part["mask"]
        labels = arrays["labels"][mask]
        out[key] = {"rule": part["rule"], "rows": int(mask.sum()), "positives": int(labels.sum())}
        if 0 < labels.sum() < labels.shape[0]:  # AUC needs both classes
            groups = arrays["groups"][mask] if "groups" in arrays else None
            out[key].update(M.all_metrics(labels, arrays["preds"][mask], groups))
    return out


EXTRAPOLATION_DEPTHS = 2  # `depths="all"` evaluates depths 1 .. trained depths + this


def resolve_depths(spec, trained: int | None) -> list[int] | None:
    """`depths` as given to evaluate_run -> sorted depths to report (None: the model's default output).

    spec: None, "all" (1 .. trained + EXTRAPOLATION_DEPTHS, to show extrapolation), "1,2,5", or a list of ints.
    """
    if spec is None:
        return None
    if trained is None:
        raise UserError("--depths: this model has no depths (it returns no per-depth predictions)")
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(range(1, trained + EXTRAPOLATION_DEPTHS + 1))
        try:
            spec = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise UserError(f"--depths: expected 'all' or comma-separated integers like 1,2,5, got '{spec}'") from None
    depths = sorted(set(int(d) for d in spec))
    if not depths or depths[0] < 1:
        raise UserError(f"--depths: depths must be integers >= 1, got {spec}")
    return depths


EXIT_HEAD = "exit_head.pt"  # a run's fitted exit head and its calibration (adaptive depth)
EXIT_FIT_ROWS = 200_000  # training rows the exit head is fitted on (a seeded shuffle of the split)
DEFAULT_BUDGET = 1.5  # mean passes, for --depths adaptive without --budget


def load_exit_head(run_dir):
    """(the run's exit head, its saved record) or (None, None) if adaptive depth was never evaluated."""
    from loopctr.models.adaptive_depth import ExitHead

    path = Path(run_dir) / EXIT_HEAD
    if not path.is_file():
        return None, None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    head = ExitHead(**saved["spec"])
    head.load_state_dict(saved["weights"])
    return head.eval(), saved


@torch.no_grad()
def predict_adaptive(model, head, threshold: float, loader: BatchLoader) -> tuple[dict[str, np.ndarray], float]:
    """Probabilities and per-row depths of a split at a per-row depth (rows that stop leave the batch), and
    the samples/s of those forward passes."""
    model.eval()
    preds, depths, labels, groups = [], [], [], []
    seen, start = 0, time.perf_counter()
    for batch in loader.batches():
        logits, used = model.forward_adaptive(batch, head.decider(threshold), model.trained_depths())
        preds.append(torch.sigmoid(logits).numpy())
        depths.append(used.numpy())
        labels.append(batch.label.numpy())
        if batch.group is not None:
            groups.append(batch.group.numpy())
        seen += batch.size
    seconds = time.perf_counter() - start
    arrays = {"preds": _cat(preds), "depths": _cat(depths), "labels": _cat(labels)}
    if groups:
        arrays["groups"] = _cat(groups)
    return arrays, seen / max(seconds, 1e-9)


def adaptive_report(run_dir: Path, model, data, split: str, batch_size: int, run, budget: float | None,
                    log=print) -> dict:
    """Adaptive depth (models/adaptive_depth.py): the exit head fitted on the training split if the run has
    none, its threshold chosen on the validation split for `budget` mean passes, then `split` scored with rows
    leaving the batch as they stop. Writes <run>/exit_head.pt and <run>/adaptive.png."""
    from loopctr.models import adaptive_depth as ad
    from loopctr.plots import adaptive_figure
    from loopctr.train.checkpoint import save

    k = model.trained_depths()
    if k < 2:
        raise UserError("--depths adaptive: the model was trained with one loop pass; there is no depth to choose")
    valid_split = run.train.valid_split
    if split == valid_split:
        raise UserError(f"--depths adaptive calibrates on '{valid_split}'; evaluate another split")
    head, saved = load_exit_head(run_dir)
    if head is None:
        train = BatchLoader(data.split("train"), batch_size, run.data, shuffle=True, seed=0)
        log(f"fitting the exit head on up to {EXIT_FIT_ROWS:,} training rows")
        head = ad.fit_exit_head(ad.collect(model, train.batches(), k, max_rows=EXIT_FIT_ROWS), k, log=log)
        saved = {"spec": head.spec(), "weights": head.state_dict()}
    loader = lambda name: BatchLoader(data.split(name), batch_size, run.data, with_groups=True)  # noqa: E731
    valid_curve = ad.calibrate(ad.collect(model, loader(valid_split).batches(), k, head), M.auc)
    budget = DEFAULT_BUDGET if budget is None else budget
    point = ad.threshold_for_budget(valid_curve, budget)
    saved.update(calibration=valid_curve, budget=budget, threshold=point["threshold"])
    save(run_dir / EXIT_HEAD, saved)
    arrays, speed = predict_adaptive(model, head, point["threshold"], loader(split))
    collected = ad.collect(model, loader(split).batches(), k, head)  # every depth, for the oracle and the curve
    by_depth = 1.0 / (1.0 + np.exp(-collected["logits"]))
    fixed = split_metrics({**{k: v for k, v in arrays.items() if k in ("labels", "groups")},
                           "preds": by_depth[0], "preds_by_depth": by_depth})
    report = {**M.all_metrics(arrays["labels"], arrays["preds"], arrays.get("groups")),
              "mean_passes": float(arrays["depths"].mean()),
              "depth_share": (np.bincount(arrays["depths"], minlength=k + 1)[1:] / arrays["depths"].shape[0]).tolist(),
              "budget": budget, "threshold": point["threshold"], "valid_auc": point["auc"],
              "valid_mean_passes": point["mean_passes"], "samples_per_s": speed,
              "by_depth": fixed["by_depth"], "oracle": fixed["oracle"],
              "curve": ad.calibrate(collected, M.auc, also=(point["threshold"],))}
    headroom = fixed["oracle"]["auc"] - fixed["by_depth"][0]["auc"]
    report["headroom_captured"] = (report["auc"] - fixed["by_depth"][0]["auc"]) / headroom if headroom > 0 else 0.0
    adaptive_figure(report, run_dir / "adaptive.png", title=f"{run.model_name}, {run_dir.name} ({split})")
    return report


def evaluate_run(run_dir, split: str = "test", data_dir=None, batch_size: int | None = None, depths=None,
                 budget: float | None = None, cold: str | None = None) -> dict:
    """Evaluate a run's best weights on a split; writes and returns `<run>/eval.json` (`adaptive.json` for
    `depths="adaptive"`). `cold` ("FIELD:N", e.g. item_id:5) adds the metrics of the cold and warm rows
    (`frequency_slices`) under `slices`.

    `depths` ("all", "1,2,5" or a list) asks a model with depths for per-depth metrics (`by_depth`) and the
    oracle over exactly those depths; the top-level metrics stay those of the model's inference depth.
    `depths="adaptive"`: the report of `adaptive_report` (a per-row depth within `budget` mean passes).
    """
    from loopctr.data.dataset import PreparedDataset
    from loopctr.train.checkpoint import load_best_model
    from loopctr.train.config import load_run_config
    from loopctr.train.distributed import DistEnv

    run_dir = Path(run_dir)
    run, saved_data = load_run_config(run_dir)
    data = PreparedDataset(data_dir or saved_data or "")
    model, state = load_best_model(run_dir, run, data.schema, data.vocab_sizes, data.fingerprint, data.pretrained_dims)
    batch_size = batch_size or run.train.eval_batch_size
    if isinstance(depths, str) and depths.strip().lower() == "adaptive":
        resolve_depths("all", model.trained_depths())  # refuses models without depths
        report = {"split": split, "epoch": state.get("epoch"),
                  "adaptive": adaptive_report(run_dir, model, data, split, batch_size, run, budget)}
        atomic_write_text(run_dir / "adaptive.json", json.dumps(report, indent=2))
        return report
    if budget is not None:
        raise UserError("--budget goes with --depths adaptive")
    slices = None
    if cold:  # counted in the rows this run trained on (all of train, or its train_fraction of the users)
        trained = sample_rows(data.split("train"), run.data.train_fraction, run.data.fraction_seed)
        slices = frequency_slices(data, split, cold, trained)
    depth_list = resolve_depths(depths, model.trained_depths())
    loader = BatchLoader(data.split(split), batch_size, run.data, with_groups=True)
    if depth_list is None:
        arrays, speed = predict(model, loader, DistEnv())
    else:  # the listed depths, and the inference depth for the top-level metrics
        asked = sorted(set(depth_list) | {model.inference_depth()})
        arrays, speed = predict(model, loader, DistEnv(), depths=asked, diagnostics=True)
        arrays["preds"] = arrays["preds_by_depth"][asked.index(model.inference_depth())]
        arrays["preds_by_depth"] = arrays["preds_by_depth"][[asked.index(d) for d in depth_list]]
    report = {"split": split, "rows": int(arrays["labels"].shape[0]), **split_metrics(arrays, depth_list),
              "eval_samples_per_s": speed, "epoch": state.get("epoch")}
    if slices is not None:
        report["slices"] = sliced_metrics(arrays, slices)
    if depth_list is not None:
        report["depths"] = depth_list
        report["loop_diagnostics"] = loop_diagnostics(arrays["loop_trace"])
        from loopctr.plots import depth_figure

        depth_figure(report, run_dir / "depths.png", title=f"{run.model_name}, {run_dir.name} ({split})")
    atomic_write_text(run_dir / "eval.json", json.dumps(report, indent=2))
    return report
