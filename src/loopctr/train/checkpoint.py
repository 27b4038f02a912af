"""Checkpoints hold everything needed to resume bit-for-bit: model, optimizer, trainer state, RNG states,
config and the data fingerprint. Every file is written to a temporary name and renamed into place."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from loopctr.atomic import atomic_write_bytes
from loopctr.errors import UserError

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def save(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, lambda fh: torch.save(obj, fh))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: Path, expected_fingerprint: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable loopctr checkpoint ({type(exc).__name__}: {exc})") from None
    if expected_fingerprint is not None and ckpt.get("data_fingerprint") != expected_fingerprint:
        raise UserError(
            f"{path}: was trained on a dataset with another schema or vocabulary "
            f"(fingerprint {ckpt.get('data_fingerprint')}, this dataset has {expected_fingerprint}); "
            "use the prepared dataset the run was trained on"
        )
    return ckpt


def load_best_model(run_dir, run, schema, vocab_sizes: dict, fingerprint: str,
                    pretrained_dims: dict[str, int] | None = None):
    """The model of a run config with the run's best weights, in eval mode; and the best.pt state.
    `pretrained_dims`: the sizes of the dataset's pretrained vectors (their values are in the checkpoint)."""
    from loopctr.models import build_model

    state = load(Path(run_dir) / BEST, fingerprint)
    model = build_model(run.model_name, schema, vocab_sizes, run.model, pretrained_dims)
    model.load_state_dict(state["model"])
    return model.eval(), state
