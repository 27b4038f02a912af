"""`loopctr export`: a self-contained artifact of a run's best weights, with the schema and vocabularies.

TorchScript (traced) or ONNX (optional extra: `pip install -e .[onnx]`). The exported program takes the
padded batch layout (field -> int32 ids / int32 sequences padded on their schema side / float32 numerics)
and returns click probabilities; for a LoopCTR model it is traced at one loop depth (`--depth`). Traced
mixture-of-experts layers run every expert on every token with the same sparse gates (identical results;
sparse dispatch has data-dependent shapes that a trace cannot keep).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from loopctr.data.batch import Batch
from loopctr.errors import UserError
from loopctr.serve.predictor import Predictor, program_inputs


class Scorer(nn.Module):
    """The model as a function of the padded inputs (`predictor.program_inputs`) -> probabilities, at a fixed
    depth; the jagged batch is built inside, so the program's inputs are plain tensors."""

    def __init__(self, model: nn.Module, depth: int | None):
        super().__init__()
        self.model = model
        self.depth = depth

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = Batch.from_padded(inputs, self.model.schema)
        out = self.model(batch) if self.depth is None else self.model(batch, depths=[self.depth])
        return torch.sigmoid(out["logits"])


def example_batch(predictor: Predictor, rows: int = 8) -> dict[str, torch.Tensor]:
    """Program inputs of rows from the vocabularies (ids 2.., sequences of varied lengths) for tracing and
    parity."""
    rng = np.random.default_rng(0)
    columns = {}
    for f in predictor.schema.fields:
        if f.type == "numeric":
            columns[f.name] = rng.normal(size=rows).tolist()
            continue
        tokens = list(predictor.vocabs[f.vocab].ids) or ["<none>"]
        pick = lambda: tokens[int(rng.integers(len(tokens)))]  # noqa: E731
        if f.type == "categorical":
            columns[f.name] = [pick() for _ in range(rows)]
        else:
            columns[f.name] = [[pick() for _ in range(1 + i % f.max_len)] for i in range(rows)]
    return program_inputs(predictor.encode(columns), predictor.schema)


def export(run_dir, fmt: str = "torchscript", depth: int | None = None, out=None) -> Path:
    predictor = Predictor(run_dir)
    if predictor.model is None:
        raise UserError(f"{run_dir}: an export already; export from the run directory")
    if depth is not None and predictor.max_depth is None:
        raise UserError(f"--depth: model '{predictor.run.model_name}' has no loop depth")
    if depth is not None and not 1 <= depth <= predictor.max_depth:
        raise UserError(f"--depth must be in 1..{predictor.max_depth}")
    default_name = f"export-{fmt}" + ("" if depth is None else f"-depth{depth}")
    out = Path(out) if out else Path(run_dir) / default_name
    if out.exists():
        raise UserError(f"{out}: already exists; remove it or pass another --out")
    sized = {}
    for name, table in predictor.model.embedding.amtl_tables().items():  # store only the kept dimensions
        full = table.table_bytes()
        table.truncate()
        sized[name] = {"full_bytes": full, "stored_bytes": table.table_bytes(),
                       "mean_size": float(table.offsets[-1] - table.offsets[2]) / max(table.num_embeddings - 2, 1)}
    scorer = Scorer(predictor.model, depth).eval()
    batch = example_batch(predictor)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(scorer, (batch,), strict=False, check_trace=False)
            traced.save(str(tmp / "model.pt"))
        elif fmt == "onnx":
            _export_onnx(scorer, batch, tmp / "model.onnx")
        else:
            raise UserError(f"--format must be torchscript or onnx, not '{fmt}'")
        for name in ("schema.json", "config.yaml"):
            shutil.copyfile(Path(run_dir) / name, tmp / name)
        shutil.copytree(Path(run_dir) / "vocab", tmp / "vocab")
        inputs = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": ["batch"] + (["length"] if v.dim() == 2 else [])}
                  for k, v in batch.items()}
        (tmp / "export.json").write_text(json.dumps({"format": fmt, "model": predictor.run.model_name,
                                                     "depth": depth, "inputs": inputs,
                                                     **({"amtl": sized} if sized else {})}, indent=2))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _export_onnx(scorer: Scorer, batch: dict, path: Path):
    try:
        import onnx  # noqa: F401  (only checks that the exporter can run)
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install -e .[onnx]") from None
    names = list(batch)
    axes = {n: ({0: "batch", 1: "length"} if batch[n].dim() == 2 else {0: "batch"}) for n in names}

    class Positional(nn.Module):  # ONNX inputs are positional
        def __init__(self):
            super().__init__()
            self.scorer = scorer

        def forward(self, *tensors):
            return self.scorer(dict(zip(names, tensors)))

    with torch.no_grad():
        torch.onnx.export(Positional(), tuple(batch[n] for n in names), str(path), input_names=names,
                          output_names=["probability"], dynamic_axes={**axes, "probability": {0: "batch"}},
                          dynamo=False)
