"""The training loop, top to bottom: build, (resume), train epochs, validate, early-stop, test, report.

Runs as one process or under `torchrun` (rank 0 alone logs and writes). Everything is written inside the
run directory: config.yaml, schema.json and vocab/ (so the run alone can score raw rows), metrics.jsonl,
checkpoint.pt (full state), best.pt (weights of the best validation epoch), metrics.json (final report).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from loopctr import metrics as M
from loopctr.atomic import atomic_write_text
from loopctr.config import apply_overrides, flatten
from loopctr.data.dataset import PreparedDataset
from loopctr.data.loader import BatchLoader, sample_rows
from loopctr.errors import UserError
from loopctr.models import build_model
from loopctr.train import checkpoint as ckpt
from loopctr.train import distributed
from loopctr.train.config import RunConfig, build_run_config, load_run_config, monitor_terms
from loopctr.train.distill import Distillation, build_teacher
from loopctr.train.evaluate import autocast, predict, split_metrics


LOCK = ".lock"
_held_locks: dict[Path, object] = {}


def lock_run_dir(out: Path) -> None:
    """One process trains a run directory at a time (two `--resume`s would interleave checkpoints and logs);
    then the temporary files that a killed write left are removed (`atomic.py` names them `.NAME.*`)."""
    import fcntl

    key = Path(out).resolve()
    if key in _held_locks:
        return
    handle = open(key / LOCK, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{out}: another loopctr process is training this run directory") from None
    _held_locks[key] = handle
    for stale in key.glob(".*"):
        if stale.is_file() and stale.name != LOCK:
            stale.unlink()


def unlock_run_dir(out: Path) -> None:
    handle = _held_locks.pop(Path(out).resolve(), None)
    if handle is not None:
        handle.close()  # closing releases the flock


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already trained (mid-epoch checkpoints)
    step: int = 0
    best_score: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    lr_scale: float = 1.0  # product of plateau reductions
    samples: int = 0
    train_seconds: float = 0.0
    # the loss window since the last `train` record (sum of loss x samples, samples), kept by mid-epoch
    # checkpoints so that a resumed run logs the losses an uninterrupted one does
    window_loss: float = 0.0
    window_samples: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)


def build_optimizer(model, cfg) -> torch.optim.Optimizer:
    emb_ids = {id(p) for p in model.embedding_parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in emb_ids], "weight_decay": cfg.embedding_weight_decay},
        {"params": [p for p in model.parameters() if id(p) not in emb_ids], "weight_decay": cfg.weight_decay},
    ]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr)


def learning_rate(cfg, step: int, total_steps: int, lr_scale: float) -> float:
    lr = cfg.lr * lr_scale
    if cfg.warmup_steps and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    elif cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(lr, cfg.min_lr)


def monitor_score(metrics: dict, monitor: str) -> float:
    terms, _ = monitor_terms(monitor)
    missing = [t for t in terms if t not in metrics]
    if missing:
        raise UserError(f"train.monitor uses {missing}, which this dataset cannot compute (no group field?)")
    return float(sum(metrics[t] for t in terms))


def improved(score: float, best: float | None, mode: str, min_delta: float = 1e-6) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(score)
    return score > best + min_delta if mode == "max" else score < best - min_delta


class Trainer:
    def __init__(self, data_dir, out_dir, run: RunConfig, resume: bool = False, log=print):
        self.run = run
        self.cfg = run.train
        self.out = Path(out_dir)
        self.data = PreparedDataset(data_dir)
        self.env = distributed.init(self.cfg.device)
        self.log = log if self.env.is_main else lambda *_: None  # one copy of each line under torchrun
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.valid_split not in self.data.split_names:
            raise UserError(f"{data_dir}: no '{self.cfg.valid_split}' split for early stopping "
                            f"(has {self.data.split_names}); set train.valid_split")
        if "gauc" in monitor_terms(self.cfg.monitor)[0] and not self.data.schema.group:
            raise UserError(f"train.monitor={self.cfg.monitor} needs gAUC, but dataset '{self.data.schema.name}' "
                            "declares no group field; use monitor=auc")
        torch.manual_seed(self.cfg.seed)
        pretrained = self.data.pretrained_dims if resume else self.data.pretrained_vectors()  # resume: checkpoint
        self.model = build_model(run.model_name, self.data.schema, self.data.vocab_sizes, run.model,
                                 pretrained).to(self.env.device)
        self.trained = self.model  # what is optimised and checkpointed: the model, or it and an online teacher
        if run.distill.teacher:
            teacher, online = build_teacher(run.distill, self.data, self.env.device, pretrained, self.log)
            self.trained = Distillation(self.model, teacher, online, run.distill)
            if online and not resume:
                self._set_frequencies(teacher)
        if not resume:
            self._set_frequencies(self.model)
        self.optimizer = build_optimizer(self.trained, self.cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.cfg.amp == "fp16" and self.env.device.type == "cuda" else None
        train_split = self.data.split("train")
        self.train_loader = BatchLoader(train_split, self.cfg.batch_size, run.data, shuffle=True,
                                        seed=self.cfg.seed, rank=self.env.rank, world_size=self.env.world_size,
                                        rows=sample_rows(train_split, run.data.train_fraction, run.data.fraction_seed))
        self.state = TrainState()
        self.step_model = self._wrap(self.trained)
        if resume:
            self._lock_run_dir()
            self._resume()
        elif self.env.is_main:
            self._start_run_dir(data_dir)
        distributed.barrier(self.env)
        self.tb = self._tensorboard()

    # -- setup -------------------------------------------------------------------------------------------
    def _wrap(self, model):
        if self.env.enabled:
            ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                              find_unused_parameters=model.skips_parameters())
        if self.cfg.compile:
            model = torch.compile(model, dynamic=True)
        return model

    def _start_run_dir(self, data_dir):
        if self.out.exists() and any(p.name != LOCK for p in self.out.iterdir()):
            raise UserError(f"{self.out}: run directory exists and is not empty; pass --resume to continue it "
                            "or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock_run_dir()
        self._write_config(data_dir)
        shutil.copyfile(self.data.path / "schema.json", self.out / "schema.json")
        shutil.copytree(self.data.path / "vocab", self.out / "vocab")  # the run alone can score raw rows

    def _lock_run_dir(self):
        if self.env.is_main:
            lock_run_dir(self.out)

    def _write_config(self, data_dir):
        config = {**self.run.to_dict(), "data_dir": str(Path(data_dir).resolve())}
        atomic_write_text(self.out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def continue_finished(self, data_dir):
        """`--resume epochs=N early_stop_patience=P`, after `continued_config` checked the config: a run that
        patience stopped goes on only if P would not have stopped it (P = 0, or P > its epochs without
        improvement); then record the new settings, so that a later plain --resume keeps them."""
        st = self.state
        if st.stopped_early:
            if self._out_of_patience():
                raise UserError(f"{self.out}: stopped early by patience at epoch {st.epoch} after {st.bad_epochs} "
                                f"epoch(s) without improvement; early_stop_patience={st.bad_epochs + 1} (or 0) "
                                "continues it as if it had been started with that patience")
            st.stopped_early = False
        if self.env.is_main:
            self._write_config(data_dir)

    def _resume(self):
        state = ckpt.load(self.out / ckpt.CHECKPOINT, self.data.fingerprint)
        self.trained.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(**state["trainer"])
        if self.state.epoch > self.cfg.epochs:
            raise UserError(f"{self.out}: already trained {self.state.epoch} epochs; epochs={self.cfg.epochs} "
                            "cannot continue it")
        ckpt.set_rng_state(state["rng"])
        self._drop_records_after(self.state.step)
        self.log(f"resuming {self.out} at epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch} "
                 f"(step {self.state.step})")

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.env.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.out / "tensorboard"))

    # -- logging and checkpoints -------------------------------------------------------------------------
    def _record(self, entry: dict):
        if not self.env.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        if self.tb is not None:
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tb.add_scalar(f"{entry['event']}/{key}", value, self.state.step)

    def _drop_records_after(self, step: int, final_too: bool = False):
        """Forget the log lines written after the checkpoint (an interrupted epoch's, and a line torn by the
        interruption), and with `final_too` the report of a run continued to a larger budget: they are logged
        again as the run replays those steps, so a resumed run's metrics.jsonl reads as one uninterrupted run."""
        path = self.out / "metrics.jsonl"
        if not (self.env.is_main and path.is_file()):
            return
        lines = path.read_text().splitlines(keepends=True)
        records = [(line, json.loads(line)) for line in lines if line.endswith("\n")]
        kept = [line for line, r in records if r.get("step", 0) <= step and not (final_too and r["event"] == "final")]
        if len(kept) < len(lines):
            path.write_text("".join(kept))

    def _save_checkpoint(self):
        # the loss is checked every log_every steps; weights that went non-finite since must not be kept
        if not all(torch.isfinite(p).all() for p in self.trained.parameters()):
            raise UserError(f"training diverged by step {self.state.step} (non-finite weights; not checkpointed); "
                            "lower train.lr or set train.grad_clip")
        if not self.env.is_main:
            return
        ckpt.save(self.out / ckpt.CHECKPOINT, {
            "model": self.trained.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "trainer": self.state.__dict__,
            "rng": ckpt.rng_state(),
            "config": self.run.to_dict(),
            "data_fingerprint": self.data.fingerprint,
        })

    def _set_frequencies(self, model) -> None:
        """AMTL sizes values by their training frequency (a fresh model; a checkpoint carries it)."""
        for name, table in model.embedding.amtl_tables().items():
            table.set_frequency(self.data.token_counts(name))

    def _save_best(self):
        if self.env.is_main:
            ckpt.save(self.out / ckpt.BEST, {"model": self.model.state_dict(), "config": self.run.to_dict(),
                                             "data_fingerprint": self.data.fingerprint, "epoch": self.state.epoch})

    # -- the loop ----------------------------------------------------------------------------------------
    def train_step(self, batch) -> torch.Tensor:
        batch = batch.to(self.env.device)
        with autocast(self.env.device, self.cfg.amp):
            outputs = self.step_model(batch)
            loss, _ = self.trained.loss(outputs, batch.label)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trained.parameters(), self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return loss.detach()

    def train_epoch(self):
        st, cfg = self.state, self.cfg
        steps_per_epoch = len(self.train_loader)
        total_steps = steps_per_epoch * cfg.epochs
        self.trained.train()
        bar = tqdm(total=steps_per_epoch, initial=st.batch_in_epoch, desc=f"epoch {st.epoch + 1}/{cfg.epochs}",
                   disable=not (self.env.is_main and sys.stderr.isatty()), leave=False)
        window_loss = torch.tensor(st.window_loss, device=self.env.device)  # float32, as the sums were
        window_samples, window_start = st.window_samples, time.perf_counter()
        epoch_start = time.perf_counter()
        for batch in self.train_loader.batches(st.epoch, start=st.batch_in_epoch):
            lr = learning_rate(cfg, st.step, total_steps, st.lr_scale)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = self.train_step(batch)
            n = batch.size * self.env.world_size
            st.step += 1
            st.batch_in_epoch += 1
            st.samples += n
            window_loss += loss * n  # stays on the device: no sync per step
            window_samples += n
            bar.update(1)
            if st.step % cfg.log_every == 0 or st.batch_in_epoch == steps_per_epoch:
                mean_loss = float(window_loss) / window_samples
                if not math.isfinite(mean_loss):
                    raise UserError(f"training diverged by step {st.step} (loss {mean_loss}); lower train.lr "
                                    "or set train.grad_clip")
                speed = window_samples / (time.perf_counter() - window_start)
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{speed:,.0f}")
                self._record({"event": "train", "epoch": st.epoch + 1, "step": st.step, "lr": lr,
                              "loss": mean_loss, "samples_per_s": speed})
                window_loss.zero_()
                window_samples, window_start = 0, time.perf_counter()
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                st.train_seconds += time.perf_counter() - epoch_start
                epoch_start = time.perf_counter()
                st.window_loss, st.window_samples = float(window_loss), window_samples
                self._save_checkpoint()
        st.window_loss, st.window_samples = 0.0, 0  # the epoch's last batch was logged
        st.train_seconds += time.perf_counter() - epoch_start
        bar.close()

    def validate_epoch(self) -> bool:
        """Validate, update early stopping and the plateau schedule; True when training should stop."""
        st, cfg = self.state, self.cfg
        loader = BatchLoader(self.data.split(cfg.valid_split), cfg.eval_batch_size, self.run.data,
                             rank=self.env.rank, world_size=self.env.world_size, with_groups=True)
        arrays, _ = predict(self.model, loader, self.env, cfg.amp)
        metrics = split_metrics(arrays) if self.env.is_main else None
        metrics = distributed.broadcast(self.env, metrics)
        if self.env.is_main and arrays["preds"].size and arrays["preds"].max() - arrays["preds"].min() < 1e-7:
            # a collapsed model (e.g. DLRM's dot products with embeddings driven to zero by the embedding L2)
            # would otherwise just show AUC 0.5 and stop early without a word
            self.log(f"warning: every {cfg.valid_split} prediction is {arrays['preds'][0]:.4f}: the model has "
                     f"collapsed to a constant; try a smaller train.embedding_weight_decay or learning rate")
        _, mode = monitor_terms(cfg.monitor)
        score = monitor_score(metrics, cfg.monitor)
        st.epoch += 1
        st.batch_in_epoch = 0
        is_best = improved(score, st.best_score, mode)
        if is_best:
            st.best_score, st.best_epoch, st.bad_epochs = score, st.epoch, 0
            self._save_best()
        else:
            st.bad_epochs += 1
            st.lr_scale *= cfg.plateau_factor
        summary = {k: float(v) for k, v in metrics.items() if isinstance(v, float)}  # plain floats: see checkpoint.py
        st.history.append({"epoch": st.epoch, **summary})
        self._record({"event": "valid", "epoch": st.epoch, "step": st.step, "best": is_best, **summary})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in summary.items() if k != "calibration")
        self.log(f"epoch {st.epoch:>3}/{cfg.epochs}  valid {shown}  {'*best*' if is_best else ''}")
        st.stopped_early = self._out_of_patience()
        return st.stopped_early

    def _out_of_patience(self) -> bool:
        return self.state.bad_epochs >= self.cfg.early_stop_patience > 0

    def fit(self) -> dict:
        st = self.state
        if (self.out / "metrics.json").is_file():
            if st.stopped_early or st.epoch >= self.cfg.epochs:
                raise UserError(f"{self.out}: this run already finished (metrics.json exists); "
                                "--resume epochs=N (or early_stop_patience=P) continues it")
            (self.out / "eval.json").unlink(missing_ok=True)  # it describes weights this budget may replace
            self._drop_records_after(st.step, final_too=True)
        counts = self.model.parameter_counts()
        self.log(f"training {self.run.model_name} on {self.data.path} ({self.train_loader.row_ids.shape[0]:,} rows, "
                 f"{counts['dense']:,} dense + {counts['embedding']:,} embedding parameters, "
                 f"world size {self.env.world_size}, {self.env.device})")
        while st.epoch < self.cfg.epochs and not st.stopped_early:
            self.train_epoch()
            self.validate_epoch()
            self._save_checkpoint()
        return self.finish(counts)

    def finish(self, counts: dict) -> dict:
        """Reload the best epoch's weights, evaluate every split, write metrics.json."""
        distributed.barrier(self.env)
        best = ckpt.load(self.out / ckpt.BEST, self.data.fingerprint)
        self.model.load_state_dict(best["model"])
        st = self.state
        # an improving last epoch cannot trigger patience, so the budget cut this run while it was still improving:
        # the commonest way a comparison of slow and fast learners goes wrong
        if st.best_epoch == st.epoch:
            self.log(f"note: the best {self.cfg.valid_split} score came at the budget's last epoch ({st.epoch}), so "
                     f"the model may still be improving; `loopctr train --out {self.out} --resume epochs=N` "
                     "continues it as if it had been started with N")
        report = {"model": self.run.model_name, "best_epoch": st.best_epoch, "epochs_run": st.epoch,
                  "stopped_by": "patience" if st.stopped_early else "budget", "params_dense": counts["dense"],
                  "params_embedding": counts["embedding"], "train_seconds": round(st.train_seconds, 3),
                  "train_samples_per_s": st.samples / max(st.train_seconds, 1e-9)}
        for split in self.data.split_names:
            report[f"rows_{split}"] = self.data.meta["splits"][split]["rows"]
        report["rows_train_used"] = int(self.train_loader.row_ids.shape[0])
        for split in [s for s in ("valid", "test") if s in self.data.split_names]:
            loader = BatchLoader(self.data.split(split), self.cfg.eval_batch_size, self.run.data,
                                 rank=self.env.rank, world_size=self.env.world_size, with_groups=True)
            arrays, speed = predict(self.model, loader, self.env, self.cfg.amp)
            if self.env.is_main:
                metrics = split_metrics(arrays)
                if split == "test":
                    report.update({k: v for k, v in metrics.items()})
                    report["reliability"] = M.reliability(arrays["labels"], arrays["preds"])
                    report["eval_samples_per_s"] = speed * self.env.world_size
                else:
                    report["valid"] = {k: v for k, v in metrics.items() if isinstance(v, float)}
        if self.env.is_main:
            if "auc" not in report:  # no test split: report validation
                report.update(report["valid"])
            atomic_write_text(self.out / "metrics.json", json.dumps(report, indent=2))
            self._record({"event": "final", "step": st.step,
                          **{k: v for k, v in report.items() if isinstance(v, (int, float))}})
        if self.tb is not None:
            self.tb.close()
        return distributed.broadcast(self.env, report)  # every rank returns the full report


def continued_config(run: RunConfig, overrides) -> RunConfig:
    """`--resume` may change only what a run's past epochs do not depend on: the budget (`epochs=N`, unless a
    cosine schedule was laid over the old one) and a looser patience (`early_stop_patience=P`, larger or 0:
    the plateau rule lowered the learning rate the same way under either, so the epochs so far are those of a
    run started with P)."""
    new = apply_overrides(run, list(overrides), "--resume")
    before, after = flatten(run.to_dict()), flatten(new.to_dict())
    free = ("train.epochs", "train.early_stop_patience")
    others = sorted(k for k in after if after[k] != before[k] and k not in free)
    if others:
        raise UserError("--resume continues a run with its saved config; only epochs=N and early_stop_patience=P "
                        f"may change, not {others}")
    if run.train.lr_schedule == "cosine" and new.train.epochs != run.train.epochs:
        raise UserError("--resume epochs=N: the cosine schedule was laid over the old budget; start a new run")
    old_p, new_p = run.train.early_stop_patience, new.train.early_stop_patience
    if old_p == 0 and new_p != 0 or 0 < new_p < old_p:
        raise UserError(f"--resume early_stop_patience={new_p}: a stricter patience than the run's ({old_p}) might "
                        "have stopped it earlier; start a new run")
    return new


def train(data_dir, out_dir, model_name: str | None = None, config_file=None, overrides=(), resume: bool = False,
          log=print) -> dict:
    """Train a model on a prepared dataset into a run directory; returns the final report (metrics.json).
    With `resume`, the run continues with its saved config, on its recorded dataset unless `data_dir` is given.
    A script of its own under torchrun should end with `loopctr.train.distributed.exit_process(0)`, as the CLI does."""
    out_dir = Path(out_dir)
    if resume:
        if config_file:
            raise UserError("--resume continues a run with its saved config; drop --config")
        run, saved_data = load_run_config(out_dir, "nothing to resume")
        data_dir = data_dir or saved_data
        if model_name and model_name != run.model_name:
            raise UserError(f"{out_dir}: the run trains '{run.model_name}', not '{model_name}'")
        if overrides:
            run = continued_config(run, overrides)
        if not (out_dir / ckpt.CHECKPOINT).is_file():
            # killed before its first checkpoint: nothing to keep but the config, so start it again from epoch 0
            log(f"{out_dir}: no checkpoint yet; starting the run again from epoch 0 with its saved config")
            if distributed.is_main_process():
                lock_run_dir(out_dir)
                for item in out_dir.iterdir():
                    if item.name != LOCK:
                        shutil.rmtree(item) if item.is_dir() else item.unlink()
            resume = False
    else:
        if data_dir is None:
            raise UserError("--data is required (a directory made by `loopctr prepare`)")
        defaults = PreparedDataset(data_dir).meta.get("defaults", {})
        run = build_run_config(model_name, config_file, list(overrides), dataset_defaults=defaults)
    try:
        trainer = Trainer(data_dir, out_dir, run, resume=resume, log=log)
        if resume and overrides:
            trainer.continue_finished(data_dir)
        try:
            return trainer.fit()
        finally:
            distributed.shutdown(trainer.env)
    finally:
        unlock_run_dir(out_dir)
