"""The run config: model, training, loader and distillation settings, each a validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from loopctr.config import flatten, load_yaml, parse_override, set_values
from loopctr.data.loader import LoaderConfig
from loopctr.errors import UserError
from loopctr.models import ModelConfig, model_class

RANKING_METRICS = ("auc", "gauc")
LOSS_METRICS = ("logloss", "ne")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 1024
    eval_batch_size: int = 8192
    optimizer: Literal["adam", "adamw"] = "adam"  # adam: coupled L2 (FuxiCTR's regularizers); adamw: decoupled
    lr: float = 5e-4
    weight_decay: float = 0.0  # dense weights
    embedding_weight_decay: float = 0.005  # embedding tables (FuxiCTR's embedding_regularizer with adam)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr: float = 1e-6
    plateau_factor: float = 0.1  # multiply the lr by this when the monitor does not improve (1.0: off)
    early_stop_patience: int = 2  # epochs without improvement before stopping
    monitor: str = "auc"  # validation metric(s) to select on: "auc", "gauc", "auc+gauc", "logloss", "ne"
    valid_split: str = "valid"
    grad_clip: float = 10.0  # max gradient norm (0: off)
    seed: int = 2024
    amp: Literal["off", "bf16", "fp16"] = "off"
    compile: bool = False
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int = 0  # torch intra-op threads (0: torch's default)
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at the end of each epoch only)
    log_every: int = 50  # steps between lines in metrics.jsonl
    tensorboard: bool = False

    def validate(self):
        positive = ("epochs", "batch_size", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be >= 1")
        for name in ("warmup_steps", "checkpoint_every", "threads", "early_stop_patience", "grad_clip",
                     "weight_decay", "embedding_weight_decay"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0")
        if self.lr <= 0:
            raise UserError("train.lr must be > 0")
        if not 0.0 < self.plateau_factor <= 1.0:
            raise UserError("train.plateau_factor must be in (0, 1]")
        if self.log_every < 1:
            raise UserError("train.log_every must be >= 1")
        monitor_terms(self.monitor)


def monitor_terms(monitor: str) -> tuple[list[str], str]:
    """Split "auc+gauc" into its metrics and the direction ("max" or "min")."""
    terms = [t.strip() for t in monitor.split("+")]
    if all(t in RANKING_METRICS for t in terms):
        return terms, "max"
    if all(t in LOSS_METRICS for t in terms):
        return terms, "min"
    raise UserError(f"train.monitor '{monitor}': use metrics from {RANKING_METRICS} (maximised) or "
                    f"{LOSS_METRICS} (minimised), joined by '+', not mixed")


@dataclass
class DistillConfig:
    """Knowledge distillation from a teacher (train/distill.py)."""
    teacher: str = ""  # "": off; a model name: online; a run directory: offline (frozen)
    # online: the teacher's model settings, key=value, e.g. distill.teacher_overrides="num_layers=4 num_heads=4"
    teacher_overrides: list[str] = field(default_factory=list)
    weight: float = 1.0
    loss: Literal["bce", "mse"] = "bce"
    temperature: float = 1.0

    def validate(self):
        if self.weight < 0 or self.temperature <= 0:
            raise UserError("distill.weight must be >= 0 and distill.temperature > 0")
        if self.teacher_overrides and not self.teacher:
            raise UserError("distill.teacher_overrides needs distill.teacher")


@dataclass
class RunConfig:
    model_name: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    data: LoaderConfig = field(default_factory=LoaderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        import dataclasses

        return {"model_name": self.model_name, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train), "data": dataclasses.asdict(self.data),
                "distill": dataclasses.asdict(self.distill)}


def build_run_config(model_name: str | None, config_file=None, overrides: list[str] = (),
                     base: dict | None = None, dataset_defaults: dict | None = None) -> RunConfig:
    """Model defaults <- the dataset's protocol defaults (dotted keys recorded by `prepare`) <- `base` (a saved
    run's config) <- YAML file <- key=value overrides, validated."""
    values: dict = dict(dataset_defaults or {})
    file_data = load_yaml(config_file) if config_file else {}
    named = file_data.get("model_name")
    if model_name and named and named != model_name:
        raise UserError(f"{config_file}: model_name '{named}' conflicts with --model {model_name}")
    for source in (base or {}), file_data:
        source = dict(source)
        name = source.pop("model_name", None)
        model_name = model_name or name
        values.update(flatten(source))
    if not model_name:
        raise UserError("no model given: pass --model NAME (or model_name in the config file)")
    cls = model_class(model_name)
    run = RunConfig(model_name=model_name, model=cls.config_class())
    values.update(dict(parse_override(o, "override") for o in overrides))
    set_values(run, {k: v for k, v in values.items() if k != "model_name"}, where="config")
    return run


def load_run_config(run_dir, what: str = "not a run directory") -> tuple[RunConfig, str | None]:
    """A run directory's saved config, and the prepared dataset it was trained on (None if not recorded)."""
    from pathlib import Path

    import yaml

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir}: {what} (no config.yaml)")
    base = yaml.safe_load(saved.read_text())
    data_dir = base.pop("data_dir", None)
    for key, value in RETIRED_SETTINGS.items():  # a run saved before the setting went keeps loading
        section, name = key.split(".")
        if base.get(section, {}).get(name, value) != value:
            raise UserError(f"{saved}: {key}={base[section][name]} is no longer supported (only {value}, the "
                            "behaviour of every run now)")
        base.get(section, {}).pop(name, None)
    return build_run_config(None, base=base), data_dir


# settings that were removed, with the one value whose behaviour the code has kept
RETIRED_SETTINGS = {"model.pack_tokens": True, "model.reference_attention": False}
