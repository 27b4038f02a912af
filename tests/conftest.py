"""Shared fixtures: tiny prepared datasets built by the tests themselves (never copied from ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine extra threads oversubscribe.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_SYNTHETIC = ["users=150", "items=300", "categories=10", "cluster_size=5", "min_events=4", "max_events=10"]


def shared_data(*parts) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (the tests read ../shared/data when it exists)")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared copy of the built-in synthetic dataset, small enough for a model to train in seconds."""
    from loopctr.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    prepare_dataset("synthetic", out, synthetic_overrides=TINY_SYNTHETIC, log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tiny_data):
    from loopctr.data.dataset import PreparedDataset

    return PreparedDataset(tiny_data)


@pytest.fixture()
def tiny_batch(tiny_dataset):
    """One training batch of 64 rows as the loader produces it."""
    from loopctr.data.loader import BatchLoader

    loader = BatchLoader(tiny_dataset.split("train"), 64, shuffle=True, seed=0)
    return next(iter(loader.batches()))
