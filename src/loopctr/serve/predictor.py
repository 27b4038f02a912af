"""Score raw rows (the values of the source files) with a trained run or an export of one.

Rows are validated field by field, then encoded by the very functions `loopctr prepare` uses (same
vocabularies, OOV index, truncation, numeric normalisation) and batched by the loader's own assembly, so a
served prediction equals `loopctr evaluate`'s prediction for the same row. A run directory serves its best
weights with the loop depth as a per-request knob; an export directory (`loopctr export`) serves its
TorchScript or ONNX program at the one depth it was exported with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from loopctr.data.batch import Batch, gather_jagged, length_groups
from loopctr.data.dataset import ArraySplit, pretrained_dims
from loopctr.data.loader import BatchLoader, sequence_limit
from loopctr.data.prepare import LABEL, HashedTokens, TokenIndex, encode_features, normalize_numeric
from loopctr.data.schema import schema_from_dict
from loopctr.errors import UserError
from loopctr.models.adaptive_depth import threshold_for_budget
from loopctr.train import checkpoint as ckpt
from loopctr.train.evaluate import load_exit_head
from loopctr.train.config import load_run_config


class BadRequest(ValueError):
    """A request the client must fix (answered with HTTP 400)."""


class TooLarge(BadRequest):
    """A request over the size limits (answered with HTTP 413)."""


def event_count(history, separator: str) -> int:
    """Events in a raw history (a separator-joined string or a list), without splitting it."""
    if isinstance(history, str):
        return history.count(separator) + 1 if history else 0
    return len(history) if isinstance(history, list) else 0


def brief(value, limit: int = 80) -> str:
    """repr of a value for an error message, cut to `limit` characters (requests may carry megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def read_schema_and_vocabs(directory: Path) -> tuple[dict, dict[str, list[str]]]:
    """The schema metadata and the vocabularies that a run or an export directory carries."""
    meta = json.loads((directory / "schema.json").read_text())
    hashed = schema_from_dict(meta["schema"]).hashed_vocabularies  # no token list: every token hashes to its id
    vocabs = {name: json.loads((directory / "vocab" / f"{name}.json").read_text()) for name in meta["vocab_sizes"]
              if name not in hashed}
    return meta, vocabs


def load_run(run_dir):
    """(run config, schema metadata, vocabularies, model with the best weights) of a run directory."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "schema.json", "vocab", ckpt.BEST):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir}: not a finished run directory (no {name})")
    run, _ = load_run_config(run_dir)
    meta, vocabs = read_schema_and_vocabs(run_dir)
    model, _ = ckpt.load_best_model(run_dir, run, schema_from_dict(meta["schema"]), meta["vocab_sizes"],
                                    meta["fingerprint"], pretrained_dims(meta))
    return run, meta, vocabs, model


def model_depths(model) -> int | None:
    """How many loop passes a request may ask for (the trained depths), or None if the model has no depths."""
    return model.trained_depths()


class ExportedProgram:
    """An export directory's program as a function batch -> probabilities (torch tensor)."""

    def __init__(self, export_dir: Path, info: dict):
        self.format, self.depth = info["format"], info.get("depth")
        if self.format == "torchscript":
            self.program = torch.jit.load(str(export_dir / "model.pt"))
        elif self.format == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise UserError("serving an ONNX export needs onnxruntime: pip install -e .[onnx]") from None
            self.program = onnxruntime.InferenceSession(str(export_dir / "model.onnx"),
                                                        providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.program.get_inputs()]
        else:
            raise UserError(f"{export_dir}/export.json: unknown format '{self.format}'")

    def __call__(self, batch: Batch, schema) -> torch.Tensor:
        padded = program_inputs(batch, schema)  # the programs' wire format: the padded dict layout
        if self.format == "torchscript":
            return self.program(padded)
        (probs,) = self.program.run(None, {name: padded[name].numpy() for name in self.inputs})
        return torch.from_numpy(probs)


def program_inputs(batch: Batch, schema) -> dict[str, torch.Tensor]:
    """An exported program's inputs: the batch's features, sequences padded on their schema side."""
    return {k: v for k, v in batch.to_padded(schema).items() if not k.startswith("_")}


def load_export(export_dir):
    """(run config, schema metadata, vocabularies, program) of an export directory."""
    export_dir = Path(export_dir)
    info = json.loads((export_dir / "export.json").read_text())
    run, _ = load_run_config(export_dir, "not an export directory")
    meta, vocabs = read_schema_and_vocabs(export_dir)
    return run, meta, vocabs, ExportedProgram(export_dir, info)


class RequestValidator:
    """Checks a request against a schema, field by field, without the model: plain data, so that a worker
    process can validate large requests off the serving event loop (`serve/server.py`)."""

    def __init__(self, schema, max_rows: int, sequence_limit: int):
        self.schema, self.max_rows, self.sequence_limit = schema, max_rows, sequence_limit

    def parse(self, raw: bytes) -> tuple[dict[str, list], int, object, object]:
        """A POST /predict body -> (validated columns, rows, the raw 'depth' and 'budget' or None)."""
        try:
            body = json.loads(raw)
        except RecursionError:
            raise BadRequest("malformed JSON: nested too deeply") from None
        except ValueError as exc:  # not JSON, not UTF-8, or an integer beyond Python's digit limit
            raise BadRequest(f"malformed JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with 'rows'")
        unknown = set(body) - {"rows", "depth", "budget"}
        if unknown:
            raise BadRequest(f"unknown key(s) {sorted(unknown)}; expected 'rows' and optional 'depth', 'budget'")
        if "rows" not in body:
            raise BadRequest("missing 'rows'")
        return self.validate(body["rows"]), len(body["rows"]), body.get("depth"), body.get("budget")

    def validate(self, rows) -> dict[str, list]:
        """Raw rows (list of {field: value}) -> columns of strings / floats / token lists; BadRequest if wrong."""
        if not isinstance(rows, list) or not rows:
            raise BadRequest("'rows' must be a non-empty list of objects")
        if len(rows) > self.max_rows:
            raise TooLarge(f"{len(rows)} rows in one request; the limit is {self.max_rows}")
        fields = {f.name: f for f in self.schema.fields}
        columns: dict[str, list] = {name: [] for name in fields}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest(f"rows[{i}] is not an object")
            missing = [name for name in fields if name not in row]
            extra = [name for name in row if name not in fields and name not in self._ignored]
            if missing:
                raise BadRequest(f"rows[{i}] is missing field(s) {missing}")
            if extra:
                raise BadRequest(f"rows[{i}] has unknown field(s) {extra}; expected {sorted(fields)}")
            for name, spec in fields.items():
                columns[name].append(self._value(spec, row[name], i))
            for group in self.schema.same_event_groups():
                lengths = [event_count(row[name], fields[name].separator) for name in group]
                if len(set(lengths)) > 1:
                    raise BadRequest(f"rows[{i}]: {dict(zip(group, lengths))} events; the fields of one history "
                                     "describe the same events")
        return columns

    @property
    def _ignored(self) -> set[str]:
        """Columns of the source files that are not features (label, group) may be sent and are ignored."""
        return {self.schema.label} | ({self.schema.group} if self.schema.group else set())

    def _value(self, spec, value, i):
        where = f"rows[{i}].{spec.name}"
        if spec.type == "numeric":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadRequest(f"{where} must be a finite number, got {brief(value)}")
            return float(value)
        if spec.type == "categorical":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise BadRequest(f"{where} must be a string or an integer id, got {brief(value)}")
            return str(value)
        # only the newest events the model reads are split and checked: a history of millions of events costs
        # what one of `keep` events does (the JSON parse aside)
        keep = min(spec.max_len, self.sequence_limit)
        if isinstance(value, str):
            tokens = value.rsplit(spec.separator, keep)[-keep:] if value and keep else []
        elif isinstance(value, list):
            tokens = value[-keep:] if keep else []
        else:
            raise BadRequest(f"{where} must be a '{spec.separator}'-joined string or a list, got {brief(value)}")
        if any(isinstance(t, bool) or not isinstance(t, (str, int)) or t == "" for t in tokens):
            raise BadRequest(f"{where} has an empty or non-id token: {brief(tokens)}")
        return [str(t) for t in tokens]


class Predictor:
    """Validates, encodes and scores raw rows. Requests of more than `chunk_rows` rows are scored in chunks of
    rows of similar sequence length (`data.batch.length_groups`): models that pad a batch's histories to its
    longest row, above all in attention, which pays for padding quadratically, do less work on padding
    (BENCHMARKS.md, "Serving"). The predictions are the same; 0 scores every request in one batch."""

    CHUNK_ROWS = 128  # rows per chunk by default (ServeConfig and `loopctr serve --chunk-rows` take it too)

    def __init__(self, run_dir, max_rows: int = 4096, chunk_rows: int = CHUNK_ROWS):
        if chunk_rows < 0:
            raise UserError("chunk_rows must be >= 0")
        self.chunk_rows = chunk_rows
        self.run_dir = Path(run_dir)
        self.model = self.program = None
        if (self.run_dir / "export.json").is_file():
            self.run, self.meta, vocabs, self.program = load_export(run_dir)
            self.max_depth = None  # the program runs the one depth it was exported with
        else:
            self.run, self.meta, vocabs, self.model = load_run(run_dir)
            self.max_depth = model_depths(self.model)
        self.exit_head, self.exit_record = load_exit_head(run_dir) if self.model is not None else (None, None)
        self.schema = schema_from_dict(self.meta["schema"])
        self.vocabs = {name: TokenIndex(vocabs[name]) if name in vocabs else HashedTokens()
                       for name in self.schema.vocabularies}
        self.sequence_limit = sequence_limit(self.schema, self.run.data)
        self.max_rows = max_rows
        self.validator = RequestValidator(self.schema, max_rows, self.sequence_limit)

    def resolve_depth(self, depth, budget=None):
        """A request's depth (None when absent; an int; or "adaptive", with an optional `budget` of mean
        passes) as the depth key of `predict_columns`: None, an int, or ("adaptive", exit threshold).
        BadRequest unless this predictor can run it."""
        if budget is not None and depth != "adaptive":
            raise BadRequest("'budget' goes with \"depth\": \"adaptive\"")
        if depth is None:
            return None
        if self.program is not None:
            fixed = f"exported at depth {self.program.depth}" if self.program.depth else "exported without a depth"
            raise BadRequest(f"this is an export of '{self.run.model_name}' ({fixed}); omit 'depth' or serve the run")
        if self.max_depth is None:
            raise BadRequest(f"model '{self.run.model_name}' has no loop depth; omit 'depth'")
        if depth == "adaptive":
            if self.exit_head is None:
                raise BadRequest("this run has no exit head: `loopctr evaluate --run RUN --depths adaptive` fits one")
            if budget is None:
                return "adaptive", self.exit_record["threshold"]
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 1 <= budget <= self.max_depth:
                raise BadRequest(f"'budget' must be a number of mean passes in 1..{self.max_depth}, "
                                 f"got {brief(budget)}")
            return "adaptive", threshold_for_budget(self.exit_record["calibration"], float(budget))["threshold"]
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= self.max_depth:
            raise BadRequest(f"'depth' must be an integer in 1..{self.max_depth} or \"adaptive\", got {brief(depth)}")
        return depth

    def validate(self, rows) -> dict[str, list]:
        """Raw rows (list of {field: value}) -> columns of strings / floats / token lists; BadRequest if wrong."""
        return self.validator.validate(rows)

    # -- scoring ------------------------------------------------------------------------------------------
    def loader(self, columns: dict[str, list]) -> BatchLoader:
        """The validated columns encoded as `loopctr prepare` encodes a split, in a loader that assembles them."""
        n = len(next(iter(columns.values())))
        arrays = {}
        for f in self.schema.fields:
            if f.type == "numeric":
                arrays[f.name] = pa.array(columns[f.name], type=pa.float64())
            elif f.type == "sequence":
                arrays[f.name] = pa.array(columns[f.name], type=pa.list_(pa.string()))
            else:
                arrays[f.name] = pa.array(columns[f.name], type=pa.string())
        encoded = encode_features(pa.table(arrays), self.schema, self.vocabs, self.meta.get("numeric_stats", {}),
                                  source_name="<request>")
        encoded[LABEL] = np.zeros(n, dtype=np.float32)  # the loader's batches carry a label; requests have none
        return BatchLoader(ArraySplit(encoded, self.schema), n, self.run.data)

    def encode(self, columns: dict[str, list]) -> Batch:
        """The columns as one model batch."""
        loader = self.loader(columns)
        return loader.gather(np.arange(loader.split.rows))

    SMALL_ROWS = 8  # requests of at most this many rows are encoded by `encode_small`

    def encode_small(self, columns: dict[str, list]) -> Batch:
        """What `encode` returns, built in plain Python for a few rows: pyarrow's per-call costs are most of the
        encoding time of a small request (0.2 ms for one row). The same vocabularies (unseen ids -> OOV), newest
        events kept and numeric normalisation, and the loader's own assembly of the sequence groups; a test
        holds the two paths equal."""
        n = len(next(iter(columns.values())))
        features = {}
        limit = self.sequence_limit
        events = {}
        for f in self.schema.fields:
            values = columns[f.name]
            if f.type == "numeric":
                x = normalize_numeric(np.array(values, dtype=np.float64), f.normalize,
                                      self.meta.get("numeric_stats", {}).get(f.name))
                features[f.name] = torch.from_numpy(x.astype(np.float32))
                continue
            code = self.vocabs[f.vocab].code
            if f.type == "categorical":
                features[f.name] = torch.tensor([code(v) for v in values], dtype=torch.int32)
            else:
                keep = min(f.max_len, limit)
                events[f.name] = [[code(t) for t in tokens[max(len(tokens) - keep, 0):]] for tokens in values]
        sequences = []
        for names in self.schema.sequence_groups():
            counts = {name: np.array([len(row) for row in events[name]], dtype=np.int64) for name in names}
            flat = {name: np.array([i for row in events[name] for i in row], dtype=np.int32) for name in names}
            starts = {name: np.cumsum(counts[name]) - counts[name] for name in names}
            sequences.append(gather_jagged(flat, starts, counts))
        return Batch(torch.zeros(n), features, sequences)

    def _score(self, batch: Batch, depth) -> np.ndarray:
        if self.program is not None:
            return self.program(batch, self.schema).float().numpy()
        if isinstance(depth, tuple):  # ("adaptive", threshold): rows leave the batch as they stop
            logits, _ = self.model.forward_adaptive(batch, self.exit_head.decider(depth[1]), self.max_depth)
        else:
            logits = (self.model(batch) if depth is None else self.model(batch, depths=[depth]))["logits"]
        return torch.sigmoid(logits.float()).numpy()

    @torch.inference_mode()  # cheaper per operator than no_grad: no version counters or view tracking
    def predict_columns(self, columns: dict[str, list], depth=None) -> np.ndarray:
        """Probabilities of the validated columns at a depth key of `resolve_depth`."""
        n = len(next(iter(columns.values())))
        batch = self.encode_small(columns) if n <= self.SMALL_ROWS else self.encode(columns)
        if not self.chunk_rows or n <= self.chunk_rows or not batch.sequences:
            return self._score(batch, depth)
        lengths = torch.stack([jag.lengths for jag in batch.sequences]).max(0).values
        out = np.empty(n, dtype=np.float32)
        for rows in length_groups(lengths, -(-n // self.chunk_rows)):
            out[rows.numpy()] = self._score(batch.select(rows), depth)
        return out

    def predict(self, rows, depth=None, budget=None) -> list[float]:
        return self.predict_columns(self.validate(rows), self.resolve_depth(depth, budget)).tolist()

    def predict_table(self, table, depth=None, budget=None) -> np.ndarray:
        """Probabilities of every row of a pandas DataFrame or pyarrow Table with the schema's columns (histories
        as separator-joined strings or lists of tokens), checked as requests are, `max_rows` at a time."""
        import pyarrow as pa

        rows = (table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)).to_pylist()
        key = self.resolve_depth(depth, budget)
        parts = [self.predict_columns(self.validate(rows[i:i + self.max_rows]), key)
                 for i in range(0, len(rows), self.max_rows)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def metadata(self) -> dict:
        from loopctr import __version__

        return {"model": self.run.model_name, "version": __version__, "schema": self.meta["schema"],
                "depths": list(range(1, self.max_depth + 1)) if self.max_depth else None,
                "adaptive": None if self.exit_head is None else {"threshold": self.exit_record["threshold"],
                                                                 "budget": self.exit_record["budget"]},
                "export": {"format": self.program.format, "depth": self.program.depth} if self.program else None,
                "max_rows": self.max_rows, "fingerprint": self.meta["fingerprint"]}
