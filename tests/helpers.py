"""Tiny fixture writers shared by the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


X1_HEADER = "label,user_id,item_id,cate_id,item_history,cate_history"

X1_TRAIN = [
    "1,u1,i2,c1,i1,c1",
    "0,u1,i9,c3,i1,c1",
    "1,u1,i3,c1,i1^i2,c1^c1",
    "0,u1,i8,c2,i1^i2,c1^c1",
    "1,u2,i5,c2,i4,c2",
    "0,u2,i7,c3,i4,c2",
    "1,u2,i6,c2,i4^i5,c2^c2",
    "0,u2,i1,c1,i4^i5,c2^c2",
]
X1_VALID = ["1,u1,i4,c2,i1^i2^i3,c1^c1^c1", "0,u1,i7,c3,i1^i2^i3,c1^c1^c1"]
X1_TEST = ["1,u1,i99,c1,i1^i2^i3^i4,c1^c1^c1^c2", "0,u2,i2,c1,i4^i5^i6,c2^c2^c2"]


def write_x1(directory: Path, train=X1_TRAIN, valid=X1_VALID, test=X1_TEST, header=X1_HEADER) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (directory / f"{name}.csv").write_text("\n".join([header, *rows]) + "\n" if header is not None else "\n".join(rows) + "\n")
    return directory


def raw_rows(tiny_data, split="test", n=40):
    """Rows of a prepared split turned back into raw source values (ids -> tokens)."""
    from loopctr.data.dataset import PreparedDataset

    return PreparedDataset(tiny_data).raw_rows(split, n)


def field_moves_scores(run, data, field: str, n: int = 40) -> bool:
    """Whether the served scores of a run change when every row's `field` takes another row's value (a field the
    model ignores would not move them)."""
    import numpy as np

    from loopctr.serve.predictor import Predictor

    rows = raw_rows(data, n=n)
    predictor = Predictor(run)
    shifted = [{**row, field: rows[(i + 1) % len(rows)][field]} for i, row in enumerate(rows)]
    return not np.allclose(predictor.predict(rows), predictor.predict(shifted), rtol=0, atol=1e-7)


def load_script(name: str):
    """A script of benchmarks/ imported as a module (they are scripts, not part of the package)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:  # as `python benchmarks/NAME.py` runs it: its siblings importable
        sys.path.append(str(folder))
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
