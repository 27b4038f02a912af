"""Knowledge distillation as a training mode, for any pair of models on one prepared dataset.

- online (`distill.teacher=NAME`, a model name): the teacher is built beside the student (its settings: the
  dataset's model defaults, then `distill.teacher_overrides`) and trained jointly on the same batches, as
  LightSUAN is trained from a higher-grade SUAN; it learns from the labels only.
- offline (`distill.teacher=RUN_DIR`, a finished run on the same prepared dataset): the run's best weights,
  frozen; kept outside the trained module, so it is neither optimised nor checkpointed (resume reloads it).

Student loss = its own loss + weight x distillation term on the teacher's detached logits:
    bce: T^2 * BCE(sigmoid(z_s / T), sigmoid(z_t / T))   (soft labels at temperature T; T^2 keeps the
                                                          gradient's scale as T changes, as in Hinton et al.)
    mse: mean (z_s - z_t)^2                               (logit matching)
Only the student is evaluated, kept as best.pt, exported and served; checkpoint.pt holds the student and an
online teacher, so a resumed run continues both.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.config import apply_overrides
from loopctr.errors import UserError
from loopctr.models import CTRModel, build_model, model_class
from loopctr.train.config import DistillConfig, load_run_config


def distillation_term(student: torch.Tensor, teacher: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """The distillation loss between student and (detached) teacher logits, both (B,)."""
    teacher = teacher.detach()
    if cfg.loss == "mse":
        return F.mse_loss(student, teacher)
    t = cfg.temperature
    return t * t * F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t))


class Distillation(nn.Module):
    """The module a distilled run trains: the student, and an online teacher as a submodule (an offline one is
    held outside the module tree). forward -> {"student": outputs, "teacher": outputs}."""

    def __init__(self, student: CTRModel, teacher: CTRModel, online: bool, cfg: DistillConfig):
        super().__init__()
        self.student, self.cfg, self.online = student, cfg, online
        if online:
            self.teacher = teacher
        else:
            self.frozen = [teacher.eval().requires_grad_(False)]  # a list: not a submodule

    def teacher_model(self) -> CTRModel:
        return self.teacher if self.online else self.frozen[0]

    def forward(self, batch) -> dict:
        out = {"student": self.student(batch)}
        if self.online:
            out["teacher"] = self.teacher(batch)
        else:
            with torch.no_grad():
                teacher = self.frozen[0]
                depth = teacher.trained_depths()  # a looped teacher teaches with its deepest trained depth
                out["teacher"] = teacher(batch) if depth is None else teacher(batch, depths=[depth])
        return out

    def loss(self, outputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = self.student.loss(outputs["student"], labels)
        term = distillation_term(outputs["student"]["logits"], outputs["teacher"]["logits"], self.cfg)
        loss = loss + self.cfg.weight * term
        parts["distill"] = term.detach()
        if self.online:
            teacher_loss, _ = self.teacher.loss(outputs["teacher"], labels)
            loss = loss + teacher_loss
            parts["teacher"] = teacher_loss.detach()
        return loss, parts

    def embedding_parameters(self) -> list[nn.Parameter]:
        return self.student.embedding_parameters() + (self.teacher.embedding_parameters() if self.online else [])

    def skips_parameters(self) -> bool:
        return self.student.skips_parameters() or (self.online and self.teacher.skips_parameters())


def build_teacher(cfg: DistillConfig, data, device, pretrained, log=print) -> tuple[CTRModel, bool]:
    """The teacher of `cfg` for the prepared dataset `data`, and whether it trains online."""
    run_dir = Path(cfg.teacher)
    if (run_dir / "config.yaml").is_file():
        from loopctr.train import checkpoint as ckpt

        if cfg.teacher_overrides:
            raise UserError(f"distill.teacher_overrides: the teacher {run_dir} is a finished run, whose settings "
                            "are its own")
        run, _ = load_run_config(run_dir)
        best = ckpt.load(run_dir / ckpt.BEST, data.fingerprint)  # refuses a run on another vocabulary
        teacher = build_model(run.model_name, data.schema, data.vocab_sizes, run.model, data.pretrained_dims)
        teacher.load_state_dict(best["model"])
        log(f"distilling from {run.model_name} at {run_dir} (offline, frozen; its epoch {best['epoch']})")
        return teacher.to(device), False
    if "/" in cfg.teacher or run_dir.exists():
        raise UserError(f"distill.teacher={cfg.teacher}: not a run directory (no config.yaml) nor a model name")
    config_class = model_class(cfg.teacher).config_class  # an unknown name: the registry's did-you-mean
    defaults = [f"{k.split('.', 1)[1]}={v}" for k, v in data.meta.get("defaults", {}).items()
                if k.startswith("model.")]
    overrides = [o for text in cfg.teacher_overrides for o in text.split()]
    config = apply_overrides(config_class(), [*defaults, *overrides], "distill.teacher_overrides")
    teacher = build_model(cfg.teacher, data.schema, data.vocab_sizes, config, pretrained)
    log(f"distilling from {cfg.teacher} trained online beside the student "
        f"({teacher.parameter_counts()['dense']:,} dense parameters)")
    return teacher.to(device), True
