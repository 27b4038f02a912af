"""Checkpoints hold everything needed to resume bit-for-bit: model, optimizer, trainer state, RNG states,
config and the data fingerprint. Every file is written to a temporary name and renamed into place.

They hold tensors and plain data only and are read with `torch.load(weights_only=True)`: run directories are
shared and downloaded, and a pickle that asks for anything more (a crafted `best.pt` that would run a command)
is refused, never executed."""

from __future__ import annotations

import io
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from loopctr.atomic import atomic_write_bytes
from loopctr.errors import UserError

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
# checkpoints written before the RNG state became plain data hold numpy's RNG keys as an ndarray (and numpy
# scalars): the globals that arrays and scalars of plain dtypes need, nothing that can run code
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
LEGACY_NUMPY = [_multiarray._reconstruct, (_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                _multiarray.scalar, (_multiarray.scalar, "numpy.core.multiarray.scalar"), np.ndarray, np.dtype,
                *{type(np.dtype(t)) for t in (np.uint32, np.int64, np.float32, np.float64)}]


def save(path: Path, obj: dict) -> None:
    buffer = io.BytesIO()  # serialised first: a full disk then fails in a plain write, as an OSError (ENOSPC)
    torch.save(obj, buffer)
    atomic_write_bytes(path, lambda fh: fh.write(buffer.getbuffer()))


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}  # plain data, no ndarray
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unpickler_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file asked for."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Can only build" in line or "Unsupported" in line]
    return (named or lines or ["unknown"])[0][:300]


def load(path: Path, expected_fingerprint: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        # a foreign pickle protocol draws a warning before the refusal below: the refusal says it all
        with torch.serialization.safe_globals(LEGACY_NUMPY), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: refused: the file holds Python objects beyond tensors and plain data, and loading "
                        f"it could run code ({unpickler_reason(exc)})") from None
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
