"""DDP detected from the environment (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from loopctr.errors import UserError


_ran_process_group = False  # set by init(); read by exit_process()


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={preference} but CUDA is not available; use device=cpu")
    if preference == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(preference)


def is_main_process() -> bool:
    """Rank 0, or a process not launched by torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def init(device_preference: str = "auto") -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        global _ran_process_group
        _ran_process_group = True
    return DistEnv(rank, world, local, device)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a process that ran a process group now, skipping interpreter finalization (returns otherwise).

    Once DDP has wrapped a model, `destroy_process_group` no longer frees gloo's process group (torch 2.13), so its
    worker threads live into interpreter finalization; one still releasing the tensors of a finished collective
    then takes the GIL while Python is being torn down, and the process aborts ("terminate called without an
    active exception"; pytorch/pytorch#190489). It happened in about 1 of 20 two-process runs on a loaded CPU.
    Everything the run writes is closed by then, so the CLI flushes its streams and leaves with os._exit."""
    if not _ran_process_group:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def gather_arrays(env: DistEnv, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Concatenate every rank's arrays in rank order on rank 0 (None elsewhere)."""
    if not env.enabled:
        return arrays
    parts = [None] * env.world_size if env.is_main else None
    dist.gather_object(arrays, parts, dst=0)
    if not env.is_main:
        return None
    return {k: np.concatenate([p[k] for p in parts], axis=-1) for k in arrays}


def broadcast(env: DistEnv, value):
    """Rank 0's value on every rank."""
    if not env.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
